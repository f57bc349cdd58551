"""Where a cohort's pairs run: an embedded Dask LocalCluster (default), an existing scheduler, or a
batch-queue cluster through dask-jobqueue (SLURM, PBS, SGE). Each Dask worker runs one pair at a time
on ``threads`` torch threads, so that workers x threads never exceeds the cores it was given."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ..errors import InputError

# a batch job's worker has `cores` Dask threads; this resource lets it run one pair at a time on all of them
PAIR_RESOURCE = "impactreg_pair"
JOBQUEUE = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster"}


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_layout(workers: int | None, threads: int | None) -> tuple[int, int]:
    """(workers, threads per worker) that fill the machine's cores without oversubscribing them."""
    for flag, value in (("--workers", workers), ("--threads-per-worker", threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputError(f"{flag} {value}: give a whole number of at least 1")
    cores = available_cores()
    if threads is None:
        threads = 1 if workers is None else max(1, cores // workers)
    if workers is None:
        workers = max(1, cores // threads)
    return workers, threads


@dataclass
class JobQueueSettings:
    """One batch job per Dask worker: its cores (= threads per worker), memory, walltime, queue, account
    and extra scheduler directives (e.g. "--gres=gpu:1")."""

    kind: str
    jobs: int = 1
    cores: int = 1
    memory: str = "8GB"
    walltime: str = "01:00:00"
    queue: str | None = None
    account: str | None = None
    directives: list[str] = field(default_factory=list)
    python: str | None = None

    def __post_init__(self):
        for name in ("jobs", "cores"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                flag = "--jobs" if name == "jobs" else "--threads-per-worker"
                raise InputError(f"{flag} {value}: give a whole number of at least 1")


def _require_dask(what: str):
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise InputError(f"{what} needs Dask: pip install 'impactreg[cohort]'") from None


def jobqueue_cluster(settings: JobQueueSettings):
    """A dask-jobqueue cluster of ``settings.jobs`` single-worker jobs (not yet submitted: ``scale``
    submits them)."""
    if settings.kind not in JOBQUEUE:
        raise InputError(f"--cluster {settings.kind}: use one of {', '.join(JOBQUEUE)}")
    try:
        import dask_jobqueue
    except ImportError:
        raise InputError("--cluster needs dask-jobqueue: pip install 'impactreg[cohort]'") from None
    cls = getattr(dask_jobqueue, JOBQUEUE[settings.kind])
    options = dict(cores=settings.cores, processes=1, memory=settings.memory, walltime=settings.walltime,
                   job_extra_directives=list(settings.directives), silence_logs="error",
                   job_script_prologue=[f"export OMP_NUM_THREADS={settings.cores}"],
                   worker_extra_args=["--resources", f"{PAIR_RESOURCE}=1"])
    if settings.queue:
        options["queue"] = settings.queue
    if settings.account:
        options["account" if settings.kind == "slurm" else "project"] = settings.account
    if settings.python:
        options["python"] = settings.python
    return cls(**options)


def job_script(settings: JobQueueSettings) -> str:
    """The batch script one worker job would be submitted with (nothing is submitted)."""
    cluster = jobqueue_cluster(settings)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def start_client(workers: int, threads: int, scheduler: str | None = None,
                 jobqueue: JobQueueSettings | None = None):
    """A connected ``distributed.Client``, the cluster it owns (None for an external scheduler) and the
    resources each pair's task must hold."""
    _require_dask("impactreg batch")
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None, None
        except OSError as exc:
            raise InputError(f"--scheduler {scheduler}: cannot connect ({exc}); check the address and that the "
                             f"scheduler runs") from None
    if jobqueue is not None:
        cluster = jobqueue_cluster(jobqueue)
        cluster.scale(jobs=jobqueue.jobs)
        return Client(cluster), cluster, {PAIR_RESOURCE: 1}
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR, memory_limit="auto")
    return Client(cluster), cluster, None

"""``impactreg batch``: every pair of a cohort as a Dask task, finished pairs skipped on a rerun,
failures isolated, the report rewritten as pairs finish."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .cluster import JobQueueSettings, default_layout, start_client
from .pair import PairJob, finish_ensemble, finished_record, run_pair
from .report import measure_values, write_summary
from .table import read_cohort

log = logging.getLogger("impactreg")


@dataclass
class CohortResult:
    records: list[dict]
    summary: list[Path]

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if r.get("status") != "ok"]


def _map_texts(maps, preset, strict: bool) -> tuple[str, ...]:
    from ..parameters import load_parameter_maps
    from ..presets import preset_maps

    if bool(maps) == bool(preset):
        raise InputError("give parameter maps with -p MAP (repeatable) or a --preset NAME, not both or neither")
    loaded = preset_maps(preset) if preset else load_parameter_maps(maps, strict)
    for pm in loaded if strict else ():
        pm.warn_ignored(strict)  # refused once, before any pair starts
    return tuple(pm.to_text() for pm in loaded)


def _lost_worker(job: PairJob, exc: BaseException) -> dict:
    return {"id": job.pair.id, "status": "failed", "folder": str(job.folder), "worker": "",
            "error": f"the worker running this pair stopped ({type(exc).__name__}: {exc}); if it ran out of memory, "
                     f"give fewer --workers or set --memory-limit"}


def _postfix(records: list[dict]) -> dict:
    post = {"failed": sum(r.get("status") == "failed" for r in records)}
    for name, label in (("tre_mean", "TRE"), ("dice_mean", "Dice")):
        values = measure_values(records, name)
        if values:
            post[label] = f"{sum(values) / len(values):.3g}"
    return post


def run_cohort(cohort: str | Path, out_dir: str | Path, maps=None, preset: str | None = None, *,
               workers: int | None = None, threads_per_worker: int | None = None, scheduler: str | None = None,
               jobqueue: JobQueueSettings | None = None, device: str | None = None, seed: int | None = None,
               memory_limit: str | None = None, qc: bool = True, ensemble: int = 1,
               progress: bool = False, strict: bool = False) -> CohortResult:
    """Register every pair of the cohort CSV into ``out_dir/<id>/``; returns every pair's record."""
    pairs = read_cohort(cohort)
    texts = _map_texts(maps, preset, strict)
    if ensemble != 1:
        from ..engine.registration import resolve_seed
        from ..ensemble import member_seeds
        from ..parameters import ParameterMap

        seed = member_seeds(resolve_seed([ParameterMap.from_text(t) for t in texts], seed), ensemble)[0]
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder; give an output folder")
    workers, threads = default_layout(workers, threads_per_worker)
    if jobqueue is not None:
        jobqueue.cores = threads
    out.mkdir(parents=True, exist_ok=True)
    jobs = [PairJob(p, out, texts, seed, device, threads, memory_limit, qc, ensemble, strict=strict) for p in pairs]
    records: dict[str, dict] = {}
    pending = []
    for job in jobs:
        done = finished_record(job)
        if done is not None:
            records[job.pair.id] = dict(done, status="ok")
        else:
            records[job.pair.id] = {"id": job.pair.id, "status": "pending", "folder": str(job.folder)}
            pending.append(job)
    ordered = lambda: [records[p.id] for p in pairs]  # noqa: E731
    summary = write_summary(out, ordered())
    if pending:
        log.info("%d of %d pairs to run (%d finished before) on %s", len(pending), len(jobs), len(jobs) - len(pending),
                 scheduler or (jobqueue.kind if jobqueue else f"{workers} local worker(s) x {threads} thread(s)"))
        summary = _run(pending, records, ordered, out, workers, threads, scheduler, jobqueue, progress, len(jobs))
    return CohortResult(ordered(), summary)


def _submit(client, job: PairJob, resources):
    """The pair's task; for an ensemble, its members' tasks (those not finished before) and the task that
    combines them."""
    if job.ensemble == 1:
        return client.submit(run_pair, job, key=f"impactreg-pair-{job.pair.id}", pure=False, resources=resources)
    members = [finished_record(m) or client.submit(run_pair, m, key=f"impactreg-pair-{job.pair.id}-member{m.member}",
                                                   pure=False, resources=resources) for m in job.members()]
    return client.submit(finish_ensemble, job, members, key=f"impactreg-pair-{job.pair.id}", pure=False,
                         resources=resources)


def _run(pending, records, ordered, out, workers, threads, scheduler, jobqueue, progress, total) -> list[Path]:
    from distributed import as_completed
    from tqdm import tqdm

    client, cluster, resources = start_client(workers, threads, scheduler, jobqueue)
    bar = tqdm(total=total, initial=total - len(pending), unit="pair", disable=not progress, desc="cohort")
    futures = {}
    try:
        for job in pending:
            futures[_submit(client, job, resources)] = job
        for future in as_completed(futures):
            job = futures[future]
            try:
                records[job.pair.id] = future.result()
            except Exception as exc:  # the worker process died (memory, signal): the pair failed, the others go on
                records[job.pair.id] = _lost_worker(job, exc)
            summary = write_summary(out, ordered())
            bar.update(1)
            bar.set_postfix(_postfix(list(records.values())), refresh=False)
        return summary
    finally:
        for future in futures:
            future.cancel()
        bar.close()
        for job in pending:  # pairs whose results arrived on disk but not yet here (an interruption)
            if records[job.pair.id]["status"] == "pending" and (done := finished_record(job)) is not None:
                records[job.pair.id] = done
        write_summary(out, ordered())
        client.close()
        if cluster is not None:
            cluster.close()


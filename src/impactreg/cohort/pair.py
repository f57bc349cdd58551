"""One pair of a cohort, as a task a Dask worker runs: register into ``<out>/<id>/`` exactly as
``impactreg register`` does, evaluate when landmarks or labels are given, draw the QC picture, and
write ``pair.json`` last. ``pair.json`` marks a finished pair: a rerun skips a pair whose record says
``ok`` for the same inputs and settings (its signature), and redoes any other.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..compute.process import peak_resident_bytes, reuse_freed_memory
from ..ensemble import ensemble_fields, member_folder, write_ensemble
from ..errors import ImpactRegError
from ..files import atomic_write_text
from .table import CohortPair

RECORD = "pair.json"
MEASURES = ("tre_mean", "tre_p90", "dice_mean", "hd95_mean", "folded_percent", "seconds")


@dataclass(frozen=True)
class PairJob:
    """Everything a worker needs for one pair (picklable): the row, the stage maps as elastix text
    (overrides not yet applied), and the run's settings."""

    pair: CohortPair
    out_dir: Path
    map_texts: tuple[str, ...]
    seed: int | None = None
    device: str | None = None
    threads: int | None = None
    memory_limit: str | None = None
    qc: bool = True
    ensemble: int = 1           # members of the pair's ensemble (1: a plain registration)
    member: int | None = None   # this job registers member ``member`` of the ensemble (seed + member)
    strict: bool = False        # refuse keys elastix would ignore (--strict)

    @property
    def folder(self) -> Path:
        pair_folder = self.out_dir / self.pair.id
        return pair_folder if self.member is None else member_folder(pair_folder, self.member)

    def members(self) -> list["PairJob"]:
        return [replace(self, member=i, qc=False) for i in range(self.ensemble)]


def stage_maps(job: PairJob) -> list:
    """The job's parameter maps with the row's overrides applied to every stage."""
    from ..parameters import ParameterMap

    maps = [ParameterMap.from_text(text, f"stage {i}") for i, text in enumerate(job.map_texts)]
    for key, values in job.pair.overrides:
        for pm in maps:
            pm.set(key, list(values))
    return maps


def _file_identity(path: Path | None) -> list | None:
    if path is None:
        return None
    try:
        st = path.stat()
        return [str(path), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(path), None, None]


def signature(job: PairJob) -> str:
    """A digest of what determines the pair's result: its files (path, size, time), maps, overrides, seed."""
    content = {"files": [(name, _file_identity(p)) for name, p in job.pair.files], "maps": list(job.map_texts),
               "overrides": [list(o) for o in job.pair.overrides], "seed": job.seed, "ensemble": job.ensemble,
               "member": job.member}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=list).encode()).hexdigest()[:16]


def read_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None


def finished_record(job: PairJob) -> dict | None:
    """The pair's record when it already finished with these inputs and settings, else None."""
    record = read_record(job.folder)
    if record and record.get("status") == "ok" and record.get("signature") == signature(job):
        return record
    return None


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def _clear_partial_outputs(folder: Path) -> None:
    """Staging folders that an interrupted run left behind (hidden, impactreg's own)."""
    if folder.is_dir():
        for stale in folder.glob(".impactreg.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
    for stale in folder.parent.glob(f".{folder.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _measures(summary: dict) -> dict:
    out = {"folded_percent": 100.0 * summary["jacobian"]["folded_fraction"]}
    if "tre" in summary:
        out.update(tre_mean=summary["tre"]["mean"], tre_p90=summary["tre"]["p90"])
    if "dice" in summary:
        out.update(dice_mean=summary["dice"]["mean"], hd95_mean=summary["hd95_mm"]["mean"])
    return out


def _refuse_foreign_results(job: PairJob) -> None:
    record = read_record(job.folder)
    if record and record.get("status") == "ok" and record.get("signature") != signature(job):
        raise ImpactRegError(f"{job.folder} holds results of other inputs or settings; remove that folder or give "
                             f"another -out")


def run_pair(job: PairJob) -> dict:
    """Register, evaluate and draw one pair (or register one ensemble member); never raises for the
    pair's own problems: the record's ``status`` is "ok" or "failed" with the one-line ``error``."""
    return _recorded(job, _register_and_measure)


def finish_ensemble(job: PairJob, member_records: list[dict]) -> dict:
    """The ensemble of a pair from its members' registrations: mean field, uncertainty, evaluation, QC."""
    failed = next((r for r in member_records if r.get("status") != "ok"), None)
    if failed is not None:
        return {"id": job.pair.id, "status": "failed", "folder": str(job.folder), "worker": failed.get("worker", ""),
                "error": f"ensemble member {Path(failed['folder']).name}: {failed.get('error', 'failed')}"}
    record = _recorded(job, lambda j: _combine_and_measure(j, member_records))
    record["seconds"] += sum(r.get("seconds", 0.0) for r in member_records)
    return record


def _recorded(job: PairJob, work) -> dict:
    reuse_freed_memory()
    start, cpu_start = time.perf_counter(), time.process_time()
    record = {"id": job.pair.id, "status": "failed", "error": "", "worker": _worker_name(),
              "folder": str(job.folder), "signature": signature(job)}
    try:
        _refuse_foreign_results(job)
        _clear_partial_outputs(job.folder)
        record.update(work(job))
        record["status"] = "ok"
    except ImpactRegError as exc:
        record["error"] = str(exc)
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        record["error"] = f"{where}{exc.strerror or exc}"
    except Exception as exc:  # a bug must not stop the other pairs; its record names it
        record["error"] = f"internal error {type(exc).__name__}: {exc} (please report it)"
    record["seconds"] = time.perf_counter() - start
    record["cpu_seconds"] = time.process_time() - cpu_start  # the worker runs one pair at a time
    record["worker_peak_mb"] = peak_resident_bytes() / 2 ** 20
    if job.folder.is_dir():
        atomic_write_text(job.folder / RECORD, json.dumps(record, indent=2) + "\n")
    return record


def _register_and_measure(job: PairJob) -> dict:
    from ..engine.registration import register

    pair = job.pair
    seed = job.seed if job.member is None else job.seed + job.member
    result = register(pair.file("fixed"), pair.file("moving"), stage_maps(job), fixed_mask=pair.file("fixed_mask"),
                      moving_mask=pair.file("moving_mask"), initial_transform=pair.file("initial_transform"),
                      out_dir=job.folder, device=job.device, seed=seed, threads=job.threads,
                      memory_limit=job.memory_limit, strict=job.strict)
    last = job.folder / f"TransformParameters.{len(result.stages) - 1}.txt"
    measures = {"registration_seconds": result.seconds, "transform_file": str(last)}
    if job.member is None:
        measures.update(_measure(job, last, result.transform, result.seconds))
    return measures


def _combine_and_measure(job: PairJob, member_records: list[dict]) -> dict:
    from ..image import read_image
    from ..transforms.elastix_files import read_transform_file

    fixed = read_image(job.pair.file("fixed"))
    transforms = [read_transform_file(r["transform_file"]).transform for r in member_records]
    fields = ensemble_fields(transforms, fixed.grid, job.device)
    inputs = {f"member {i} transform": r["transform_file"] for i, r in enumerate(member_records)}
    inputs.update((name, path) for name, path in job.pair.files if path is not None)
    outputs = write_ensemble(job.folder, fields, read_image(job.pair.file("moving")).channel(0), inputs)
    seconds = sum(r.get("registration_seconds", 0.0) for r in member_records)
    measures = {"registration_seconds": seconds, "transform_file": str(outputs["TransformParameters.0.txt"]),
                "uncertainty_mean": float(fields.uncertainty.data.mean())}
    measures.update(_measure(job, outputs["TransformParameters.0.txt"], fields.transform, seconds))
    return measures


def _measure(job: PairJob, transform_file: Path, transform, seconds: float) -> dict:
    """evaluation.json (TRE, Dice, HD95, folding) and the QC picture of the pair's final transform."""
    from ..evaluation import evaluate

    pair = job.pair
    summary = evaluate(transform_file, pair.file("fixed_points"), pair.file("moving_points"), pair.file("fixed_labels"),
                       pair.file("moving_labels"), moving_image=pair.file("moving") if pair.file("moving_points") else None,
                       out_json=job.folder / "evaluation.json")
    if job.qc:
        from ..image import read_image
        from ..qc import write_qc

        fixed, moving = read_image(pair.file("fixed")), read_image(pair.file("moving"))
        write_qc(fixed.channel(0), moving.channel(0), transform, job.folder, {"registration time (s)": seconds},
                 inputs={"fixed image": pair.file("fixed"), "moving image": pair.file("moving")})
    return _measures(summary)

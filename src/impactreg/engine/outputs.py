"""The outputs of a registration: a staging folder moved into the output folder only when the whole
registration succeeded, the log, and each stage's TransformParameters, result image and
IterationInfo files."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..files import atomic_write_text
from ..image import Image
from ..transforms import CombinationTransform
from ..transforms.elastix_files import write_transform_file

log = logging.getLogger("impactreg")

# keys a TransformParameters file carries for transformix's result image
_RESAMPLE_KEYS = ("ResampleInterpolator", "FinalBSplineInterpolationOrder", "DefaultPixelValue", "ResultImageFormat",
                  "ResultImagePixelType", "CompressResultImage")


@dataclass
class IterationInfo:
    stage: int
    level: int
    iteration: int
    value: float
    metric_values: list[float]
    gain: float
    gradient_norm: float
    valid_samples: int
    seconds: float


class OutputFolder:
    """Outputs are written into a hidden staging folder beside ``out_dir`` and moved into it on ``commit``;
    leaving the context without a commit removes the staging folder."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out = Path(out_dir).resolve()
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"{out_dir}: exists and is not a folder; give an output folder")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.partial-"))
        self.files: dict[str, Path] = {}
        self._handler = logging.FileHandler(self.staging / "impactreg.log")
        self._handler.setLevel(logging.INFO)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))

    def __enter__(self) -> "OutputFolder":
        log.addHandler(self._handler)
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)
        return self

    def _close_log(self) -> None:
        if self._handler is not None:
            log.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def commit(self) -> dict[str, Path]:
        """Move every staged file into the output folder; the paths of the outputs there."""
        self._close_log()
        self.out.mkdir(parents=True, exist_ok=True)
        for item in sorted(self.staging.iterdir()):
            os.replace(item, self.out / item.name)
        outputs = {name: self.out / path.name for name, path in self.files.items()}
        outputs["log"] = self.out / "impactreg.log"
        return outputs

    def __exit__(self, *exc) -> None:
        self._close_log()
        shutil.rmtree(self.staging, ignore_errors=True)

    def write_stage(self, stage, components, fixed: Image, moving: Image, previous_file: Path | None,
                    rows: list[IterationInfo]) -> Path:
        """TransformParameters.<i>.txt, result.<i>.<ext> and IterationInfo files of one stage; returns the
        final path of its transform file (the next stage's initial transform)."""
        pm, i = stage.parameter_map, stage.index
        transform = stage.transform
        current = transform.current if isinstance(transform, CombinationTransform) else transform
        resample_keys = {k: pm.raw[k] for k in _RESAMPLE_KEYS if k in pm}
        name = f"TransformParameters.{i}.txt"
        write_transform_file(self.staging / name, current, fixed.grid, previous_file, pm.get("HowToCombineTransforms"),
                             resample_keys)
        self.files[name] = self.staging / name
        order = components.resample_interpolator.order(pm)
        result = components.resampler.write(pm, moving, transform, fixed, order, self.staging, i)
        if result is not None:
            self.files[result.name] = result
        if pm.get("WriteIterationInfo"):
            self._write_iteration_info(i, rows)
        for lv in stage.levels:
            log.info("stage %d level %d: %d iterations in %.2f s, final metric %.6g, %s", i, lv.level, lv.iterations,
                     lv.seconds, lv.values[-1] if lv.values else float("nan"),
                     ", ".join(f"{k} {v:.6g}" for k, v in lv.settings.items()))
        return self.out / name

    def _write_iteration_info(self, stage: int, rows: list[IterationInfo]) -> None:
        for level in {r.level for r in rows}:
            level_rows = [r for r in rows if r.level == level]
            n_metrics = len(level_rows[0].metric_values) if level_rows else 0
            header = "\t".join(["1:ItNr", "2:Metric"] + [f"2:Metric{m}" for m in range(n_metrics)] +
                               ["3:StepSize", "4:||Gradient||", "5:ValidSamples", "Time[ms]"])
            lines = [header] + ["\t".join([str(r.iteration), f"{r.value:.6g}"] + [f"{v:.6g}" for v in r.metric_values] +
                                          [f"{r.gain:.6g}", f"{r.gradient_norm:.6g}", str(r.valid_samples),
                                           f"{r.seconds * 1000:.1f}"]) for r in level_rows]
            info = f"IterationInfo.{stage}.R{level}.txt"
            atomic_write_text(self.staging / info, "\n".join(lines) + "\n")
            self.files[info] = self.staging / info

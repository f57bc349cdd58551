"""Outputs, staged: files are written into a hidden staging folder and moved into the output folder
together, only when the whole command succeeded; an output never replaces an input. The registration's
outputs are the log and each stage's TransformParameters, result image and IterationInfo files."""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImpactRegError, InputError, OutputError
from ..files import atomic_write_text, new_folder
from ..geometry import Grid
from ..image import Image
from ..signals import signals_deferred
from ..transforms import CombinationTransform
from ..transforms.elastix_files import field_file_name, read_transform_file, write_transform_file
from .itk_files import itk_output_names, write_itk_transform_files

log = logging.getLogger("impactreg")

# keys a TransformParameters file carries for transformix's result image
_RESAMPLE_KEYS = ("ResampleInterpolator", "FinalBSplineInterpolationOrder", "DefaultPixelValue", "ResultImageFormat",
                  "ResultImagePixelType", "CompressResultImage")
LOG_NAME = "impactreg.log"


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


def input_files(inputs: dict[str, object]) -> list[tuple[str, Path]]:
    """(what, path) of every input given as a path; a list value gives one pair per path in it.
    Inputs given as objects (images, dicts, transforms, map texts) are not files and are skipped."""
    found = []
    for what, value in inputs.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, os.PathLike) or (isinstance(item, str) and "\n" not in item):
                found.append((what, Path(item)))
    return found


def transform_file_chain(value) -> list[Path]:
    """A transform file given as a path and the files of its chain of initial transforms."""
    if not isinstance(value, (str, os.PathLike)):
        return []
    try:
        return read_transform_file(value).chain
    except ImpactRegError:
        return [Path(value)]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # also symbolic and hard links
    except OSError:  # one of them does not exist
        return os.path.realpath(a) == os.path.realpath(b)


def refuse_replacing_inputs(out_dir: str | os.PathLike, names: Iterable[str], inputs: list[tuple[str, Path]]) -> None:
    """Raise OutputError when writing any of ``names`` into ``out_dir`` would replace one of ``inputs``."""
    for name in names:
        target = Path(out_dir) / name
        for what, path in inputs:
            if _same_file(target, path):
                raise OutputError(f"the output {target} would replace the {what} {path}; "
                                  f"choose another output folder (-out)")


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the folders created, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
    return missing


class StagedFolder:
    """Outputs for ``out_dir`` are written into a hidden staging folder (inside ``out_dir`` when it exists,
    else beside it) and moved there together on ``commit``; leaving the context without a commit removes
    the staging folder, so ``out_dir`` stays exactly as it was. ``names`` are the outputs planned, checked
    against ``inputs`` ({what: path or list of paths}) before any work; ``commit`` checks what was written."""

    def __init__(self, out_dir: str | os.PathLike, names: Iterable[str], inputs: dict[str, object]):
        self.out = Path(out_dir).resolve()
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"{out_dir}: exists and is not a folder; give an output folder")
        self.inputs = input_files(inputs)
        refuse_replacing_inputs(out_dir, names, self.inputs)
        self._created = _make_folders(self.out.parent)
        if self.out.is_dir():
            self.staging = new_folder(self.out, ".impactreg.partial-")
        else:
            self.staging = new_folder(self.out.parent, f".{self.out.name}.partial-")
        self._committed = False

    def path(self, name: str) -> Path:
        """Where to write the output ``name`` until the commit."""
        return self.staging / name

    def __enter__(self):
        return self

    def commit(self) -> dict[str, Path]:
        """Move every staged file into the output folder; {name: its path there}."""
        staged = sorted(self.staging.iterdir())
        refuse_replacing_inputs(self.out, [p.name for p in staged], self.inputs)
        with signals_deferred():
            if self.staging.parent == self.out:
                for item in staged:
                    os.replace(item, self.out / item.name)
                self.staging.rmdir()
            else:
                self._move_folder_into_place(staged)
            self._committed = True
        return {p.name: self.out / p.name for p in staged}

    def _move_folder_into_place(self, staged: list[Path]) -> None:
        try:
            os.rename(self.staging, self.out)
        except OSError:  # the output folder appeared meanwhile
            self.out.mkdir(exist_ok=True)
            for item in staged:
                os.replace(item, self.out / item.name)
            self.staging.rmdir()

    def __exit__(self, *exc) -> None:
        if self._committed:
            return
        shutil.rmtree(self.staging, ignore_errors=True)
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:
                break


def registration_output_names(maps) -> list[str]:
    """Every file a registration with these parameter maps may write."""
    names = [LOG_NAME]
    for i, pm in enumerate(maps):
        names.append(f"TransformParameters.{i}.txt")
        if pm.get("Transform") == "DeformationFieldTransform":
            names.append(field_file_name(names[-1], pm.get("ResultImageFormat")))
        names += itk_output_names(pm, i)
        if pm.get("WriteResultImage"):
            names.append(f"result.{i}.{pm.get('ResultImageFormat')}")
        if pm.get("WriteIterationInfo"):
            names += [f"IterationInfo.{i}.R{level}.txt" for level in range(int(pm.get("NumberOfResolutions")))]
    return names


class OutputFolder(StagedFolder):
    """A registration's outputs, staged; the log is written into the staging folder while it runs."""

    def __init__(self, out_dir: str | os.PathLike, maps, inputs: dict[str, object]):
        super().__init__(out_dir, registration_output_names(maps), inputs)
        self.files: dict[str, Path] = {}
        self._handler = logging.FileHandler(self.path(LOG_NAME))
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
        super().commit()
        outputs = {name: self.out / path.name for name, path in self.files.items()}
        outputs["log"] = self.out / LOG_NAME
        return outputs

    def __exit__(self, *exc) -> None:
        self._close_log()
        super().__exit__(*exc)

    def write_stage(self, stage, components, fixed: Image, moving: Image, previous_file: Path | None,
                    rows: list[IterationInfo], original_direction=None) -> Path:
        """TransformParameters.<i>.txt, result.<i>.<ext> and IterationInfo files of one stage; returns the
        final path of its transform file (the next stage's initial transform). ``fixed`` and ``moving`` are
        the images the stage registered; ``original_direction``, given for a UseDirectionCosines "false"
        stage, is the fixed image's own direction, written as elastix writes it."""
        pm, i = stage.parameter_map, stage.index
        transform = stage.transform
        current = transform.current if isinstance(transform, CombinationTransform) else transform
        resample_keys = {k: pm.raw[k] for k in _RESAMPLE_KEYS if k in pm}
        grid = fixed.grid
        if original_direction is not None:
            resample_keys["UseDirectionCosines"] = ["false"]
            grid = Grid(grid.size, grid.spacing, grid.origin, original_direction)
        name = f"TransformParameters.{i}.txt"
        write_transform_file(self.path(name), current, grid, previous_file, pm.get("HowToCombineTransforms"),
                             resample_keys, final_path=self.out / name)
        self.files[name] = self.path(name)
        if pm.get("Transform") == "DeformationFieldTransform":
            field_name = field_file_name(name, pm.get("ResultImageFormat"))
            self.files[field_name] = self.path(field_name)
        for itk_name, itk_path in write_itk_transform_files(self.staging, i, transform, pm).items():
            self.files[itk_name] = itk_path
        order = components.resample_interpolator.order(pm)
        result = components.resampler.write(pm, moving, transform, fixed, order, self.staging, i, original_direction)
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
            atomic_write_text(self.path(info), "\n".join(lines) + "\n")
            self.files[info] = self.path(info)

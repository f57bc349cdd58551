"""The drop-in compatibility corpus (../shared/elastix-maps): every published map run unchanged but for
its iterations (cut short) and its model paths (pointed at local weights), on small synthetic images of
the map's dimension, and the outcome classified.

Outcomes: ``runs``; ``component`` (refused with one line naming a component impactreg does not have and
the file); ``not a map`` (a TransformParameters file, refused as such); ``model`` (an IMPACT map whose
weights are not on this machine, the message naming them); ``device`` (a map asking for a GPU this
machine lacks); ``diverged`` (the map ran, then its fixed gains moved the samples out of these small
images); ``other`` (any other refusal, or a traceback). The images are fitted to each map (``fitted_grid``),
but for the maps written for elastix's test lung CT, which get it (``MEANT_FOR_LUNG_CT``).
Shared by tests/test_compat_maps.py and benchmarks/compat.py.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import impactreg
from impactreg.errors import ImpactRegError
from impactreg.geometry import Grid
from impactreg.image import Image
from impactreg.parameters import ParameterMap, parse_parameter_text

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "elastix-maps"
MODELS = REPO.parent / "shared" / "data" / "models"
_MISSING_COMPONENT = re.compile(r"impactreg has no (\w+) component '([^']+)'")
_MODEL_KEY = re.compile(r"(?:Impact)?(?:Fixed|Moving)?ModelsPath\d*$")


@dataclass
class Outcome:
    path: Path
    status: str  # runs, component, model, device, other
    detail: str = ""  # the component name, or the message

    @property
    def name(self) -> str:
        return str(self.path.relative_to(CORPUS)) if self.path.is_relative_to(CORPUS) else str(self.path)


def corpus_maps(root: Path = CORPUS) -> list[Path]:
    """Every parameter map of the corpus (its README and SOURCES are not maps)."""
    return sorted(p for p in root.rglob("*.txt") if p.name not in ("README.md", "SOURCES.md"))


def map_dimension(path: Path) -> int:
    """FixedImageDimension when the map gives it, else 2 for a name with '2D', else 3."""
    try:
        values = parse_parameter_text(path.read_text(errors="replace"), str(path)).get("FixedImageDimension")
    except ImpactRegError:
        values = None
    if values:
        try:
            return int(float(values[0]))
        except ValueError:
            pass
    return 2 if "2D" in path.name else 3


def _numbers(pm: ParameterMap, pattern: str) -> list[float]:
    """Every number in the values of the keys matching ``pattern`` ('5*5*5' counts as 5, 5, 5)."""
    found = []
    for name in pm.keys():
        if re.fullmatch(pattern, name):
            for value in pm.raw[name]:
                found += [float(v) for v in re.split(r"[*\s]+", value) if re.fullmatch(r"[-+]?[\d.]+(e[-+]?\d+)?", v)]
    return found


def fitted_grid(pm: ParameterMap, dim: int) -> Grid:
    """A small grid the map can work on: 24-ish voxels per axis (more when a shrinking pyramid divides by a
    large factor), 3.5 mm voxels, finer when the B-spline grid is finer, wider when a random sample region
    needs room. (IMPACT maps keep this size: an image as wide as their coarsest patch needs is too large for
    a quick test.)"""
    levels = int(pm.get("NumberOfResolutions"))
    factors = _numbers(pm, r"(Fixed|Moving)?ImagePyramid(Rescale)?Schedule") or [2.0 ** (levels - 1)]
    shrinking = any("Smoothing" not in (pm.get(f"{r}ImagePyramid") or "") for r in ("Fixed", "Moving"))
    n = max(24, int(3 * max(factors))) if shrinking else 24
    spacing = 3.5
    bspline = _numbers(pm, "FinalGridSpacingInPhysicalUnits") if "BSpline" in (pm.get("Transform") or "") else []
    if bspline:
        spacing = min(spacing, min(bspline))
    region = _numbers(pm, "SampleRegionSize")
    if region and pm.get("UseRandomSampleRegion"):
        spacing = max(spacing, 1.3 * max(region) / (n - 1))
    size = tuple(n - 2 * d for d in range(dim))
    return Grid(size, np.full(dim, spacing), np.zeros(dim), np.eye(dim))


def synthetic_pair(grid: Grid) -> tuple[Image, Image]:
    """A smooth fixed image with some structure on ``grid`` and a moving copy shifted and turned a little."""
    dim, size = grid.dim, np.asarray(grid.size)
    index = grid.voxel_indices().numpy() / size * 24.0  # the same picture whatever the number of voxels
    centre = np.full(dim, 12.0)

    def image(offset: np.ndarray, angle: float) -> Image:
        rel = index - centre - offset
        c, s = np.cos(angle), np.sin(angle)
        x, y = c * rel[:, 0] - s * rel[:, 1], s * rel[:, 0] + c * rel[:, 1]
        rest = (rel[:, 2:] ** 2).sum(1) if dim == 3 else 0.0
        body = np.exp(-(x ** 2 / 40.0 + y ** 2 / 25.0 + rest / 30.0))
        spot = np.exp(-((x - 4) ** 2 + (y + 3) ** 2 + rest) / 6.0)
        values = 100.0 * body + 60.0 * spot + 5.0 * np.sin(x / 2.0) ** 2 + 10.0
        return Image(torch.from_numpy(values.reshape(grid.shape)).float()[None], grid)

    return image(np.zeros(dim), 0.0), image(np.r_[1.0, -0.5, np.zeros(dim - 2)], 0.05)


# Maps written for one image pair, whose fixed gains (SP_a) suit that pair only: elastix's own tests run these on
# its 3DCT lung pair (Testing/CMakeLists.txt, elx_add_run_test(3DCT_lung.NC.bspline.ASGD.001c/001d ...)). On the
# small synthetic images, SP_a 500000 moves most samples out of the moving image after the first iteration, in
# elastix (itk-elastix 5.3.1: "Too many samples map outside moving image buffer: 96 / 500") as in impactreg, so
# the runner gives them the lung CT they were written for.
LUNG_CT = REPO.parent / "shared" / "data" / "lung_ct" / "3DCT_lung_baseline_small.mha"
MEANT_FOR_LUNG_CT = ("elastix-testing/parameters.3D.NC.bspline.ASGD.001c.txt",
                     "elastix-testing/parameters.3D.NC.bspline.ASGD.001d.txt")


def lung_pair() -> tuple[Image, Image]:
    """elastix's test lung CT (downsampled) and a copy shifted by (2, -1.5, 1) mm: a CT pair of the kind
    elastix's own test maps were tuned on."""
    from impactreg.image import read_image
    from impactreg.transforms.matrix import TranslationTransform
    from impactreg.warp import resample

    fixed = read_image(LUNG_CT)
    shift = TranslationTransform(3, torch.tensor([-2.0, 1.5, -1.0], dtype=torch.float64))  # moving(x) = fixed(x - s)
    moving = resample(fixed, shift, fixed.grid, 3, float(fixed.data.min()))
    return fixed, moving


def images_for(path: Path, pm: ParameterMap) -> tuple[Image, Image]:
    """The pair the map runs on: the lung CT for the maps written for it (when it is here), else the synthetic
    pair fitted to the map."""
    name = str(path.relative_to(CORPUS)) if path.is_relative_to(CORPUS) else path.name
    if name in MEANT_FOR_LUNG_CT and LUNG_CT.is_file():
        return lung_pair()
    return synthetic_pair(fitted_grid(pm, map_dimension(path)))


def _local_model(value: str) -> str:
    """A model path as a file here: the same name in ../shared/data/models when the map's path is absent."""
    path = Path(value)
    if path.is_file() or value.startswith("MIND/"):
        return value
    local = MODELS / path.name
    return str(local) if local.is_file() else value


QUICK_CAPS = {"NumberOfSpatialSamples": 500, "NumberOfSamplesForExactGradient": 1000, "NumberOfJacobianMeasurements": 200}


def prepare(path: Path, iterations: int = 2, quick: bool = True) -> tuple[ParameterMap, list[str]]:
    """The map as a user would hand it over, iterations cut to ``iterations`` and model paths pointed at
    local weights where the same file name exists; also the model values it names (for the model outcome).
    ``quick``: sample counts capped (QUICK_CAPS), which changes how well, not whether, the map runs."""
    pm = ParameterMap.from_file(path)
    pm.set("MaximumNumberOfIterations", [iterations])
    if quick:
        for name, cap in QUICK_CAPS.items():
            pm.set(name, [min(int(v), cap) for v in (pm.values(name) or [cap])])
    models = []
    for name in list(pm.keys()):
        if _MODEL_KEY.match(name):
            values = [" ".join(_local_model(v) for v in value.split()) for value in pm.raw[name]]
            models += [v for value in values for v in value.split()]
            pm.set(name, values)
    return pm, models


def classify(path: Path, exc: Exception, models: list[str], iterations_done: int = 0) -> Outcome:
    message = str(exc)
    if isinstance(exc, ImpactRegError) and "\n" not in message:
        found = _MISSING_COMPONENT.search(message)
        if found and str(path) in message:
            return Outcome(path, "component", found.group(2))
        if "is a TransformParameters file" in message and str(path) in message:
            return Outcome(path, "not a map", message)
        if models and any(Path(m).name in message or m in message for m in models):
            return Outcome(path, "model", message)
        if re.search(r"\b(CUDA|GPU)\b", message):
            return Outcome(path, "device", message)
        if iterations_done and "map outside the moving image" in message:
            return Outcome(path, "diverged", message)  # the map ran; its fixed gains do not suit these images
    return Outcome(path, "other", f"{type(exc).__name__}: {message}"[:400])


@contextlib.contextmanager
def _working_folder(folder: Path):
    """Run in ``folder`` (a map's relative output paths, e.g. ImpactWriteFeatureMaps "./Features/", land there)."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def inputs_the_map_needs(pm, fixed: Image) -> dict:
    """What a user of the map gives besides the images: a fixed mask for RandomSparseMask (the whole
    image: the maps' coarsest levels leave a few voxels, which ErodeMask would empty), corresponding landmarks for CorrespondingPointsEuclideanDistanceMetric
    (points around the centre, shifted as the moving copy is)."""
    extra = {}
    if "RandomSparseMask" in (pm.values("ImageSampler") or []):
        extra["fixed_mask"] = fixed.with_data(torch.ones_like(fixed.data))
    if "CorrespondingPointsEuclideanDistanceMetric" in (pm.values("Metric") or []):
        grid = fixed.grid
        centre = np.asarray(grid.size, dtype=float) / 2.0
        offsets = np.array([[0, 0], [4, 0], [0, 4], [-4, 0], [0, -4], [3, 3]], dtype=float)
        index = np.zeros((len(offsets), grid.dim)) + centre
        index[:, :2] += offsets
        points = grid.index_to_world(index)
        shift = np.r_[1.0, -0.5, np.zeros(grid.dim - 2)] * np.asarray(grid.spacing) * grid.size / 24.0
        extra.update(fixed_points=points, moving_points=points + shift)
    return extra


def run_map(path: Path, iterations: int = 2, out_dir: Path | None = None, quick: bool = True) -> Outcome:
    """Register the synthetic pair of the map's dimension with the map; the outcome."""
    models: list[str] = []
    done = []
    logger = logging.getLogger("impactreg")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the ignored-keys warnings of 213 maps are not the point here
    try:
        pm, models = prepare(path, iterations, quick)
        fixed, moving = images_for(path, pm)
        with tempfile.TemporaryDirectory() as tmp, _working_folder(Path(tmp)):  # maps write relative paths too
            impactreg.register(fixed, moving, [pm], out_dir=out_dir or Path(tmp) / "out", seed=1, threads=1,
                               callbacks=[done.append], **inputs_the_map_needs(pm, fixed))
        return Outcome(path, "runs")
    except Exception as exc:  # noqa: BLE001 - every failure is an outcome to classify
        return classify(path, exc, models, len(done))
    finally:
        logger.setLevel(level)


ACCEPTED = ("runs", "component", "not a map", "model", "device", "diverged")

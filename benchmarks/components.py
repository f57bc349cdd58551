"""impactreg's elastix components of issue 10 (TransformRigidityPenalty, QuasiNewtonLBFGS,
DisplacementMagnitudePenalty, CorrespondingPointsEuclideanDistanceMetric, RandomSparseMask) side by
side with elastix (itk-elastix) on a small real image pair.

The pair: a 40x40x32 crop of the lung CT of ../shared/data (2.73 x 2.73 x 5 mm) and the same crop
moved by (2, 1, -1.5) mm through its origin, so the true transform is that translation. Printed:

1. the rigidity conditions evaluated by impactreg on the B-spline parameters elastix wrote after each
   iteration, against the values elastix reports for them (IterationInfo Metric-LC/OC/PC);
2. QuasiNewtonLBFGS (Full sampler, one level) on a translation, an affine and a B-spline;
3. elastix's Model Zoo Par0029 (DisplacementMagnitudePenalty) inverting a B-spline given as -t0;
4. real maps that use the components, unchanged: distance of each result to the true transform and
   between the two engines (mean over every 5th voxel), and the times.

    PYTHONPATH=src python benchmarks/components.py [--maps MAP ...]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import impactreg  # noqa: F401  (first: the OpenMP wait policy)
import itk
import numpy as np
import torch

from impactreg import register
from impactreg.geometry import Grid
from impactreg.image import Image, read_image, write_image
from impactreg.metrics.rigidity import rigidity_conditions
from impactreg.parameters import parse_parameter_text
from impactreg.points import write_points
from impactreg.transforms.elastix_files import read_transform_file

from cases import DATA

MAPS = Path(__file__).resolve().parents[2] / "shared" / "elastix-maps"
SHIFT = np.array([2.0, 1.0, -1.5])
DEFAULT_MAPS = ["elastix-testing/parameters.3D.NC.bspline.QN.001.txt", "elastix-testing/parameters.3D.NC.bspline.ASGD.004.txt",
                "elastix-testing/parameters.3D.NC.bspline.ASGD.002.txt", "elastix-testing/parameters.3D.MI.bspline.SGD.004.txt",
                "modelzoo/Par0014/Parameters.NCC_EDM.txt"]


def make_pair(folder: Path) -> dict[str, Path]:
    ct = read_image(DATA / "lung_ct" / "3DCT_lung_baseline_small.mha")
    data = ct.data[:, 8:40, 15:55, 10:50].clone()
    origin = ct.grid.index_to_world(np.array([[10.0, 15.0, 8.0]]))[0]
    grid = Grid((40, 40, 32), ct.grid.spacing, origin, ct.grid.direction)
    files = {name: folder / f"{name}.mha" for name in ("fixed", "moving", "mask")}
    write_image(Image(data, grid), files["fixed"])
    write_image(Image(data, Grid(grid.size, grid.spacing, grid.origin + SHIFT, grid.direction)), files["moving"])
    mask = torch.zeros_like(data)
    mask[:, 6:26, 8:32, 8:32] = 1
    write_image(Image(mask, grid, "uint8"), files["mask"], "uint8")
    landmarks = grid.index_to_world(np.array([[10, 10, 8], [30, 12, 10], [20, 30, 20], [12, 28, 24], [28, 28, 16.0]]))
    files["fp"], files["mp"] = folder / "fp.txt", folder / "mp.txt"
    write_points(files["fp"], landmarks)
    write_points(files["mp"], landmarks + SHIFT)
    return files


def elastix(files, entries: dict, out: Path, initial: Path | None = None, points=False, mask=False):
    """Run elastix on the pair with exactly ``entries`` (elastix's defaults for the rest); its transform and seconds."""
    out.mkdir(parents=True, exist_ok=True)
    parameters = itk.ParameterObject.New()
    pm = parameters.GetDefaultParameterMap("translation", 1)
    for key in list(pm.keys()):
        del pm[key]
    for key, value in entries.items():
        pm[key] = [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    parameters.AddParameterMap(pm)
    fixed, moving = itk.imread(str(files["fixed"]), itk.F), itk.imread(str(files["moving"]), itk.F)
    method = itk.ElastixRegistrationMethod[type(fixed), type(moving)].New(FixedImage=fixed, MovingImage=moving,
                                                                           ParameterObject=parameters)
    if points:
        method.SetFixedPointSetFileName(str(files["fp"]))
        method.SetMovingPointSetFileName(str(files["mp"]))
    if mask:
        method.SetFixedMask(itk.imread(str(files["mask"]), itk.UC))
    if initial is not None:
        method.SetInitialTransformParameterFileName(str(initial))
    method.SetOutputDirectory(str(out))
    method.SetLogToConsole(False)
    start = time.perf_counter()
    method.Update()
    return read_transform_file(out / "TransformParameters.0.txt").transform, time.perf_counter() - start


def distances(files, ours, theirs, truth=None):
    points = read_image(files["fixed"]).grid.voxel_points()[::5]
    truth_points = points + torch.from_numpy(SHIFT) if truth is None else truth(points)
    with torch.no_grad():
        a, b = ours.map(points), theirs.map(points)
        return (float((a - truth_points).norm(dim=1).mean()), float((b - truth_points).norm(dim=1).mean()),
                float((a - b).norm(dim=1).mean()))


def rigidity_parity(files, work: Path) -> None:
    entries = {"Registration": "MultiMetricMultiResolutionRegistration", "Metric": ["AdvancedMeanSquares", "TransformRigidityPenalty"],
               "Metric1Weight": 0.0, "Transform": "BSplineTransform", "FinalGridSpacingInPhysicalUnits": 12,
               "Optimizer": "AdaptiveStochasticGradientDescent", "AutomaticParameterEstimation": "false", "SP_a": 20,
               "MaximumNumberOfIterations": 5, "ImageSampler": "Full", "NumberOfResolutions": 1,
               "ImagePyramidSchedule": [1, 1, 1], "WriteIterationInfo": "true", "WriteTransformParametersEachIteration": "true",
               "Interpolator": "LinearInterpolator", "WriteResultImage": "false"}
    out = work / "rigidity"
    elastix(files, entries, out)
    rows = [line.split("\t") for line in (out / "IterationInfo.0.R0.txt").read_text().splitlines()]
    column = {name: i for i, name in enumerate(rows[0])}
    worst = 0.0
    print("1. rigidity conditions on elastix's iterates (impactreg / elastix IterationInfo)")
    for k in range(4):
        spline = read_transform_file(out / f"TransformParameters.0.R0.It{k:07d}.txt").transform
        weights = torch.ones(spline.grid.shape, dtype=torch.float64)
        ours = rigidity_conditions(spline.coefficients(), spline.grid.spacing, weights)
        line = []
        for c in ("LC", "OC", "PC"):
            mine, theirs = float(ours[c]) / float(weights.sum()), float(rows[k + 2][column[f"Metric-{c}"]])
            worst = max(worst, abs(mine - theirs) / max(abs(theirs), 1e-12))
            line.append(f"{c} {mine:.10f} / {theirs:.10f}")
        print(f"   iteration {k + 1}: " + "; ".join(line))
    print(f"   largest relative difference {worst:.2e} (elastix prints 10 decimals)")


def lbfgs(files, work: Path) -> None:
    common = {"Registration": "MultiResolutionRegistration", "Optimizer": "QuasiNewtonLBFGS", "ImageSampler": "Full",
              "NumberOfResolutions": 1, "MaximumNumberOfIterations": 30, "Interpolator": "LinearInterpolator",
              "FixedImagePyramid": "FixedSmoothingImagePyramid", "MovingImagePyramid": "MovingSmoothingImagePyramid",
              "ImagePyramidSchedule": [1, 1, 1], "GradientMagnitudeTolerance": 1e-8, "HowToCombineTransforms": "Compose",
              "WriteResultImage": "false", "ResampleInterpolator": "FinalBSplineInterpolator", "Resampler": "DefaultResampler"}
    cases = {"translation, mean squares": {"Transform": "TranslationTransform", "Metric": "AdvancedMeanSquares"},
             "affine, normalized correlation": {"Transform": "AffineTransform", "Metric": "AdvancedNormalizedCorrelation",
                                                "AutomaticScalesEstimation": "true"},
             "B-spline 16 mm, normalized correlation": {"Transform": "BSplineTransform",
                                                        "Metric": "AdvancedNormalizedCorrelation",
                                                        "FinalGridSpacingInPhysicalUnits": 16}}
    print("2. QuasiNewtonLBFGS, Full sampler, one level (mean distance to the true transform; between the engines)")
    for name, entries in cases.items():
        entries = dict(common, **entries)
        theirs, elastix_seconds = elastix(files, entries, work / name.split(",")[0])
        start = time.perf_counter()
        result = register(files["fixed"], files["moving"], {k: v for k, v in entries.items()})
        ours_seconds = time.perf_counter() - start
        a, b, between = distances(files, result.transform, theirs)
        print(f"   {name}: impactreg {a:.4f} mm ({result.stages[0].levels[0].iterations} directions, {ours_seconds:.1f} s), "
              f"elastix {b:.4f} mm ({elastix_seconds:.1f} s); between {between:.4f} mm")


def inversion(files, work: Path) -> None:
    entries = {"Registration": "MultiResolutionRegistration", "Transform": "BSplineTransform",
               "Metric": "AdvancedNormalizedCorrelation", "Optimizer": "QuasiNewtonLBFGS", "ImageSampler": "Full",
               "NumberOfResolutions": 1, "MaximumNumberOfIterations": 30, "FinalGridSpacingInPhysicalUnits": 16,
               "Interpolator": "LinearInterpolator", "FixedImagePyramid": "FixedSmoothingImagePyramid",
               "MovingImagePyramid": "MovingSmoothingImagePyramid", "ImagePyramidSchedule": [1, 1, 1],
               "WriteResultImage": "false", "ResampleInterpolator": "FinalBSplineInterpolator", "Resampler": "DefaultResampler"}
    elastix(files, entries, work / "to-invert")
    initial = work / "to-invert" / "TransformParameters.0.txt"
    raw = parse_parameter_text((MAPS / "modelzoo/Par0029/Par0029-step1-bspline-inversion.txt").read_text())
    raw.update({"MaximumNumberOfIterations": ["300"], "WriteResultImage": ["false"], "FinalGridSpacingInPhysicalUnits": ["16"]})
    same = dict(files, moving=files["fixed"])
    theirs, elastix_seconds = elastix(same, raw, work / "inverse", initial=initial)
    start = time.perf_counter()
    result = register(files["fixed"], files["fixed"], raw, initial_transform=initial, seed=1)
    ours_seconds = time.perf_counter() - start
    a, b, between = distances(files, result.transform, theirs, truth=lambda p: p)
    print("3. Par0029 step 1 (DisplacementMagnitudePenalty, 300 iterations) inverting a B-spline given as -t0: "
          f"mean |T(x) - x| impactreg {a:.4f} mm ({ours_seconds:.1f} s), elastix {b:.4f} mm ({elastix_seconds:.1f} s); "
          f"between {between:.4f} mm")


def real_maps(files, work: Path, names: list[str]) -> None:
    print("4. real maps, unchanged (landmarks -fp/-mp and the fixed mask given to both engines)")
    for name in names:
        raw = parse_parameter_text((MAPS / name).read_text())
        raw["WriteResultImage"] = ["false"]
        theirs, elastix_seconds = elastix(files, raw, work / Path(name).stem, points=True, mask=True)
        start = time.perf_counter()
        result = register(files["fixed"], files["moving"], str(MAPS / name), fixed_mask=files["mask"],
                          fixed_points=files["fp"], moving_points=files["mp"], seed=1)
        ours_seconds = time.perf_counter() - start
        a, b, between = distances(files, result.transform, theirs)
        print(f"   {name}: to the truth impactreg {a:.3f} mm ({ours_seconds:.1f} s), elastix {b:.3f} mm "
              f"({elastix_seconds:.1f} s); between {between:.3f} mm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", nargs="*", default=DEFAULT_MAPS, help="maps under ../shared/elastix-maps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = make_pair(work)
        rigidity_parity(files, work)
        lbfgs(files, work)
        inversion(files, work)
        real_maps(files, work, args.maps)


if __name__ == "__main__":
    main()

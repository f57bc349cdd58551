"""Engine parity on elastix's own rigid/affine maps: a real 3D image moved by a KNOWN rigid transform,
registered by elastix (itk-elastix) and by impactreg with the same parameter map; prints the mean and
max distance of each result to the known transform (mm) over points of the head.

    PYTHONPATH=src python benchmarks/parity_rigid.py [--iterations 30 100] [--maps NAME ...] [--seeds 1 2]

The image is the MNI152 T1 shrunk to 2 mm (99 x 117 x 95); the moving image is it resampled (cubic)
through the inverse of a rotation of (3, -2.5, 3.5) degrees about its centre and a shift of (4, -3, 5) mm,
its intensities scaled (0.8 x + 20) with Gaussian noise of --noise x its range (default 0.05).
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
from pathlib import Path

import impactreg  # noqa: F401  (sets the OpenMP wait policy before torch loads)
import numpy as np
import SimpleITK as sitk
import torch

from impactreg import register
from impactreg.transforms.elastix_files import read_transform_file

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
MAPS = REPO.parent / "shared" / "elastix-maps" / "elastix-testing"
DEFAULT_MAPS = ["parameters.3D.NC.euler.ASGD.001.txt", "parameters.3D.NC.affine.ASGD.001.txt"]


def make_case(folder: Path, noise: float = 0.0, crop: int = 0, oblique: float = 0.0, image: str = "mni"):
    """(fixed path, moving path, head points (N, 3), the known transform as a SimpleITK Euler3DTransform)."""
    if image == "lung":  # 57 x 78 x 64 at 2.73 x 2.73 x 5 mm
        fixed = sitk.ReadImage(str(DATA / "lung_ct" / "3DCT_lung_baseline_small.mha"), sitk.sitkFloat32)
    else:
        t1 = sitk.ReadImage(str(DATA / "mni152" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"), sitk.sitkFloat32)
        fixed = sitk.Shrink(sitk.SmoothingRecursiveGaussian(t1, 1.0), [2, 2, 2])
    centre = fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()])
    known = sitk.Euler3DTransform(centre, math.radians(3), math.radians(-2.5), math.radians(3.5), (4.0, -3.0, 5.0))
    moving = sitk.Resample(fixed, known.GetInverse(), sitk.sitkBSpline, float(sitk.GetArrayViewFromImage(fixed).min()))  # moving(T(x)) = fixed(x)
    if noise > 0:  # a second acquisition: 0.8 x intensity + 20, plus noise of ``noise`` x the range
        array = sitk.GetArrayFromImage(moving)
        rng = np.random.default_rng(1)
        noisy = 0.8 * array + 20 + rng.normal(0, noise * float(array.max() - array.min()), array.shape)
        image = sitk.GetImageFromArray(noisy.astype(np.float32))
        image.CopyInformation(moving)
        moving = image
    if oblique:  # the moving image stored on an oblique grid (direction cosines turned by ``oblique`` degrees)
        turn = sitk.Euler3DTransform(centre, math.radians(oblique), math.radians(oblique / 2), 0.0)
        reference = sitk.Image(moving.GetSize(), sitk.sitkFloat32)
        reference.SetSpacing(moving.GetSpacing())
        reference.SetDirection(turn.GetMatrix())
        half = np.array(moving.GetSpacing()) * (np.array(moving.GetSize()) - 1) / 2
        reference.SetOrigin(tuple(np.array(centre) - np.array(turn.GetMatrix()).reshape(3, 3) @ half))
        moving = sitk.Resample(moving, reference, sitk.Transform(), sitk.sitkBSpline, 0.0)
    if crop:  # the moving image on its own, smaller grid (another field of view and origin)
        moving = moving[crop:-crop, crop // 2:-crop, crop:-crop // 2]
    fixed_path, moving_path = folder / "fixed.mha", folder / "moving.mha"
    sitk.WriteImage(fixed, str(fixed_path))
    sitk.WriteImage(moving, str(moving_path))
    array = sitk.GetArrayFromImage(fixed)
    zyx = np.argwhere(array > array.min() + 0.3 * (array.max() - array.min()))
    rng = np.random.default_rng(0)
    zyx = zyx[rng.choice(len(zyx), size=min(5000, len(zyx)), replace=False)]
    points = np.array([fixed.TransformIndexToPhysicalPoint([int(i) for i in p[::-1]]) for p in zyx])
    return fixed_path, moving_path, points, known


def with_iterations(text: str, iterations: int, seed: int, metric: str | None = None, single: bool = False) -> str:
    if single:  # no pyramid: one resolution at full size
        text = re.sub(r"\(NumberOfResolutions [^)]*\)", "(NumberOfResolutions 1)", text)
        text = re.sub(r"\(ImagePyramidSchedule [^)]*\)", "(ImagePyramidSchedule 1 1 1)", text)
    if metric:
        text = re.sub(r'\(Metric "[^"]*"\)', f'(Metric "{metric}")', text)
    text = re.sub(r"\(MaximumNumberOfIterations [^)]*\)", f"(MaximumNumberOfIterations {iterations})", text)
    text = re.sub(r"\(RandomSeed [^)]*\)", "", text)
    return text + f"\n(RandomSeed {seed})\n"


def distances(tp_file: Path, points: np.ndarray, known) -> np.ndarray:
    mapped = read_transform_file(tp_file).transform.map(torch.from_numpy(points)).numpy()
    truth = np.array([known.TransformPoint(p) for p in points])
    return np.linalg.norm(mapped - truth, axis=1)


def run_elastix(fixed: Path, moving: Path, map_file: Path, out: Path) -> Path:
    import itk
    out.mkdir(parents=True, exist_ok=True)
    params = itk.ParameterObject.New()
    params.ReadParameterFile(str(map_file))
    itk.elastix_registration_method(itk.imread(str(fixed), itk.F), itk.imread(str(moving), itk.F),
                                    parameter_object=params, log_to_console=False, output_directory=str(out),
                                    number_of_threads=1)
    return out / "TransformParameters.0.txt"


def run_impactreg(fixed: Path, moving: Path, map_file: Path, out: Path) -> Path:
    register(str(fixed), str(moving), [str(map_file)], out_dir=str(out), threads=1)
    return out / "TransformParameters.0.txt"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, nargs="+", default=[30, 100])
    parser.add_argument("--maps", nargs="+", default=DEFAULT_MAPS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--engines", nargs="+", default=["elastix", "impactreg"])
    parser.add_argument("--noise", type=float, default=0.05, help="moving-image noise, fraction of its range")
    parser.add_argument("--metric", default=None, help="replace the maps' Metric (e.g. AdvancedMeanSquares)")
    parser.add_argument("--oblique", type=float, default=0.0, help="degrees the moving grid's axes are turned")
    parser.add_argument("--no-pyramid", action="store_true", help="one resolution at full size")
    parser.add_argument("--image", choices=["mni", "lung"], default="mni")
    parser.add_argument("--crop", type=int, default=0, help="voxels cropped from the moving image's sides")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fixed, moving, points, known = make_case(work, args.noise, args.crop, args.oblique, args.image)
        print(f"{len(points)} head points; mean distance before registration "
              f"{np.linalg.norm(np.array([known.TransformPoint(p) for p in points]) - points, axis=1).mean():.2f} mm")
        print("| map | iterations | seed | engine | mean (mm) | max (mm) |\n|---|---|---|---|---|---|")
        for name in args.maps:
            for iterations in args.iterations:
                for seed in args.seeds:
                    map_file = work / f"{name}.{iterations}.{seed}.txt"
                    map_file.write_text(with_iterations((MAPS / name).read_text(), iterations, seed, args.metric,
                                                   args.no_pyramid))
                    for engine in args.engines:
                        out = work / f"{engine}-{name}-{iterations}-{seed}"
                        runner = run_elastix if engine == "elastix" else run_impactreg
                        d = distances(runner(fixed, moving, map_file, out), points, known)
                        print(f"| {name} | {iterations} | {seed} | {engine} | {d.mean():.3f} | {d.max():.3f} |",
                              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

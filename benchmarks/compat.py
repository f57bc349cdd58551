"""Drop-in compatibility with the maps elastix and IMPACT users published (../shared/elastix-maps).

    python benchmarks/compat.py tally [--jobs 2]     # every map: runs / refused for a missing component / other
    python benchmarks/compat.py keys                 # keys the corpus uses that impactreg's schema lacks
    python benchmarks/compat.py compare [--iterations 30] [--maps M ...]
        # rigid/affine/B-spline maps run unchanged (iterations set) by impactreg and by elastix (itk-elastix) on
        # a lung CT moved by a known affine transform: mean distance between the two transforms, of each to the
        # known transform, and both times (timings are only meaningful on a quiet machine)

``tally`` runs each map with 2 iterations on small synthetic images fitted to it (compat_corpus.py, the
same runner as tests/test_compat_maps.py).
"""
from __future__ import annotations

import argparse
import collections
import logging
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import compat_corpus  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

COMPARE_MAPS = [
    "elastix-testing/parameters.3D.NC.euler.ASGD.001.txt",
    "elastix-testing/parameters.3D.NC.affine.ASGD.001.txt",
    "elastix-testing/parameters.3D.NC.affine.SGD.001.txt",
    "modelzoo/Par0001/Par0001rigid.txt",
    "modelzoo/Par0001/Par0001affine.txt",
    "modelzoo/Par0020/Par0020rigid.txt",
    "modelzoo/Par0020/Par0020affine.txt",
    "modelzoo/Par0035/Par0035.SPREAD.MSD.af.0.txt",
    "modelzoo/Par0035/Par0035.RIRE.MI.ri.ASGD.txt",
    "elastix-testing/parameters.3D.MI.bspline.ASGD.001.txt",
    "elastix-testing/parameters.3D.SSD.bspline.ASGD.001.txt",
    "modelzoo/Par0001/Par0001bspline16.txt",
    "modelzoo/Par0020/Par0020bspline1.txt",
]


# tally -----------------------------------------------------------------------------------------------------

def _add_path(path: str) -> None:
    sys.path.insert(0, path)


def tally(jobs: int) -> list[compat_corpus.Outcome]:
    maps = compat_corpus.corpus_maps()
    start = time.perf_counter()
    if jobs > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_add_path, initargs=(str(HERE),)) as pool:
            outcomes = list(pool.map(compat_corpus.run_map, maps, chunksize=4))
    else:
        outcomes = [compat_corpus.run_map(p) for p in maps]
    seconds = time.perf_counter() - start
    counts = collections.Counter(o.status for o in outcomes)
    print(f"{len(maps)} maps of {compat_corpus.CORPUS} (2 iterations, small synthetic images), {seconds:.0f} s:")
    for status in ("runs", "diverged", "component", "not a map", "model", "device", "other"):
        print(f"  {status:<10} {counts.get(status, 0)}")
    by_component = collections.Counter(o.detail for o in outcomes if o.status == "component")
    print("refused for a missing component, by component:")
    for name, n in by_component.most_common():
        print(f"  {n:4d}  {name}")
    for status in ("other", "model", "device", "diverged", "not a map"):
        for o in outcomes:
            if o.status == status:
                print(f"{status}: {o.name}: {o.detail[:300]}")
    return outcomes


# keys ------------------------------------------------------------------------------------------------------

def keys_missing() -> None:
    """How many maps use each key the schema does not know (they are ignored with a warning)."""
    from impactreg.parameters import parse_parameter_text
    from impactreg.parameters.schema import lookup

    counts: collections.Counter = collections.Counter()
    maps = compat_corpus.corpus_maps()
    for path in maps:
        for name in parse_parameter_text(path.read_text(errors="replace"), str(path)):
            if lookup(name) is None:
                counts[name] += 1
    print(f"keys of the {len(maps)} maps that impactreg's schema lacks ({len(counts)}), by number of maps:")
    for name, n in counts.most_common():
        print(f"  {n:4d}  {name}")


# compare ---------------------------------------------------------------------------------------------------

KNOWN = np.array([[0.99, -0.07, 0.02], [0.06, 1.02, 0.03], [-0.02, -0.03, 0.98]])  # x, y, z
KNOWN_SHIFT = np.array([4.0, -3.0, 2.5])  # mm


def known_case(folder: Path):
    """Fixed: the lung CT of ../shared/data; moving: the same CT under a known affine transform T (fixed -> moving
    points, about the image centre), so that fixed(x) = moving(T(x)). Returns the file paths and T."""
    from impactreg.image import read_image, write_image
    from impactreg.transforms.matrix import AffineTransform
    from impactreg.warp import resample

    fixed = read_image(compat_corpus.REPO.parent / "shared" / "data" / "lung_ct" / "3DCT_lung_baseline_small.mha")
    centre = fixed.grid.centre
    params = torch.tensor(np.r_[KNOWN.ravel(), KNOWN_SHIFT], dtype=torch.float64)
    truth = AffineTransform(3, params, centre)
    inverse = AffineTransform(3, torch.tensor(np.r_[np.linalg.inv(KNOWN).ravel(), -np.linalg.inv(KNOWN) @ KNOWN_SHIFT],
                                              dtype=torch.float64), centre + KNOWN_SHIFT)
    moving = resample(fixed, inverse, fixed.grid, 3, float(fixed.data.min()))
    write_image(fixed, folder / "fixed.mha")
    write_image(moving, folder / "moving.mha")
    return folder / "fixed.mha", folder / "moving.mha", truth, fixed


def elastix_threads(map_path: Path) -> int:
    """Threads for elastix on this map: 2, but 1 for a multi-metric registration, which itk-elastix 5.3.1 ends with
    a segmentation fault with more threads (ITKElastix issue #160; Par0020bspline1 at ASGD's 'Sampling
    gradients'), taking this process and the rest of the table with it."""
    from impactreg.parameters import parse_parameter_text

    registration = parse_parameter_text(map_path.read_text(errors="replace"), str(map_path)).get("Registration") or [""]
    return 1 if "MultiMetric" in registration[0] else 2


def _elastix_transform(fixed_path: Path, moving_path: Path, map_path: Path, iterations: int, out: Path):
    import itk

    params = itk.ParameterObject.New()
    params.ReadParameterFile(str(map_path))
    pm = params.GetParameterMap(0)
    pm["MaximumNumberOfIterations"] = [str(iterations)]
    pm["WriteResultImage"] = ["false"]
    params.SetParameterMap(0, pm)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    itk.elastix_registration_method(itk.imread(str(fixed_path), itk.F), itk.imread(str(moving_path), itk.F),
                                    parameter_object=params, log_to_console=False, output_directory=str(out),
                                    number_of_threads=elastix_threads(map_path))
    return out / "TransformParameters.0.txt", time.perf_counter() - start


def compare(names: list[str], iterations: int) -> None:
    import impactreg
    from impactreg.transforms.elastix_files import read_transform_file

    logging.getLogger("impactreg").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fixed_path, moving_path, truth, fixed = known_case(work)
        inside = fixed.data[0] > float(fixed.data.min()) + 200  # body voxels
        points = fixed.grid.voxel_points()[inside.reshape(-1)][::7]
        with torch.no_grad():
            true_points = truth.map(points)
        print(f"lung CT {fixed.grid.size} moved by a known affine transform; {len(points)} body points; "
              f"{iterations} iterations per level (times from a shared machine are indicative only)")
        print(f"{'map':<52} {'ours-elastix':>12} {'ours-known':>10} {'elastix-known':>13} {'ours s':>7} "
              f"{'elastix s':>9} {'ratio':>6}")
        for name in names:
            path = compat_corpus.CORPUS / name
            row = f"{name:<52}"
            try:
                pm = impactreg.parameters.ParameterMap.from_file(path)
                pm.set("MaximumNumberOfIterations", [iterations])
                pm.set("WriteResultImage", ["false"])
                start = time.perf_counter()
                ours = impactreg.register(str(fixed_path), str(moving_path), [pm], seed=1, threads=2).transform
                ours_s = time.perf_counter() - start
                tp, theirs_s = _elastix_transform(fixed_path, moving_path, path, iterations, work / name.replace("/", "_"))
                theirs = read_transform_file(tp).transform
                with torch.no_grad():
                    a, b = ours.map(points), theirs.map(points)
                d = lambda p, q: float((p - q).norm(dim=1).mean())  # noqa: E731
                row += f" {d(a, b):12.3f} {d(a, true_points):10.3f} {d(b, true_points):13.3f} {ours_s:7.2f} {theirs_s:9.2f} {ours_s / theirs_s:6.2f}"
                if elastix_threads(path) == 1:
                    row += " (elastix on 1 thread: a multi-metric map)"
            except Exception as exc:  # noqa: BLE001 - one failing map is one row
                row += f" failed: {type(exc).__name__}: {str(exc)[:120]}"
            print(row, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tally")
    t.add_argument("--jobs", type=int, default=1)
    sub.add_parser("keys")
    c = sub.add_parser("compare")
    c.add_argument("--iterations", type=int, default=30)
    c.add_argument("--maps", nargs="*", default=COMPARE_MAPS)
    args = parser.parse_args()
    if args.command == "tally":
        tally(args.jobs)
    elif args.command == "keys":
        keys_missing()
    else:
        compare(args.maps, args.iterations)


if __name__ == "__main__":
    main()

"""The Docker entry point, following the IMPACT Docker guide's folder contract.

/Data: Fixed_image.(mha|nii.gz) (or FixedImage.mha), Moving_image.(mha|nii.gz) (or MovingImage.mha),
ParameterMap.txt (several stages: ParameterMap.txt plus ParameterMap.1.txt, ...), optional
Fixed_mask.* / Moving_mask.*, optional Fixed_landmarks.txt + Moving_landmarks.txt (corresponding
points: TRE is reported), models under /Data/Models (also the cache for hub names).
/Out: the registration outputs, and evaluation.json when landmarks were given.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import ImpactRegError, InputError
from .files import atomic_write_text
from .image import IMAGE_SUFFIXES
from .signals import Terminated, terminate_raises

SUMMARY_NAME = "evaluation.json"


def _find(folder: Path, stems: tuple[str, ...], required: bool, what: str) -> Path | None:
    for stem in stems:
        for suffix in IMAGE_SUFFIXES + (".txt",):
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                return path
    if required:
        raise InputError(f"{folder}: no {what} ({' or '.join(s + '.mha/.nii.gz' for s in stems)}); "
                         f"put it in the folder mounted at /Data")
    return None


def _landmarks(data: Path) -> tuple[Path, Path] | None:
    fixed, moving = data / "Fixed_landmarks.txt", data / "Moving_landmarks.txt"
    if fixed.is_file() != moving.is_file():
        given, missing = (fixed, moving) if fixed.is_file() else (moving, fixed)
        raise InputError(f"{given} has no partner {missing.name}; give both landmark files for TRE, or neither")
    return (fixed, moving) if fixed.is_file() else None


def _landmark_points(paths: tuple[Path, Path], fixed_grid, moving_grid):
    """The fixed and moving landmarks as corresponding world points, checked against the images."""
    from .points import read_points

    world = []
    for path, grid, what in ((paths[0], fixed_grid, "fixed"), (paths[1], moving_grid, "moving")):
        points = read_points(path)
        if points.dim != grid.dim:
            raise InputError(f"{path}: the landmarks are {points.dim}D but the {what} image is {grid.dim}D; "
                             f"give {grid.dim}D points")
        world.append(points.world(grid))
    if len(world[0]) != len(world[1]):
        raise InputError(f"{paths[0]} lists {len(world[0])} landmarks and {paths[1]} {len(world[1])}; "
                         f"give corresponding landmarks, one per line in the same order")
    return world


def run(data: Path, out: Path, device: str | None = None) -> dict:
    """Every input is read and checked first; then the registration runs and writes its outputs."""
    from .engine.outputs import input_files, refuse_replacing_inputs, registration_output_names
    from .engine.registration import register
    from .evaluation import target_registration_errors
    from .image import read_image
    from .parameters import load_parameter_maps

    fixed = _find(data, ("Fixed_image", "FixedImage"), True, "fixed image")
    moving = _find(data, ("Moving_image", "MovingImage"), True, "moving image")
    maps = [data / "ParameterMap.txt"] if (data / "ParameterMap.txt").is_file() else []
    if not maps:
        raise InputError(f"{data}: no ParameterMap.txt; put your elastix/IMPACT parameter map there")
    maps += sorted(data.glob("ParameterMap.[0-9]*.txt"), key=lambda p: int(p.name.split(".")[1]))
    fixed_mask = _find(data, ("Fixed_mask", "FixedMask"), False, "fixed mask")
    moving_mask = _find(data, ("Moving_mask", "MovingMask"), False, "moving mask")
    landmarks = _landmarks(data)
    inputs = {"fixed image": fixed, "moving image": moving, "parameter map": maps, "fixed mask": fixed_mask,
              "moving mask": moving_mask, "landmark file": list(landmarks or ())}
    names = registration_output_names(load_parameter_maps(maps)) + [SUMMARY_NAME]
    refuse_replacing_inputs(out, names, input_files(inputs))
    points = None
    if landmarks is not None:
        points = _landmark_points(landmarks, read_image(fixed).grid, read_image(moving).grid)
    if (data / "Models").is_dir():
        os.environ.setdefault("IMPACTREG_MODELS", str(data / "Models"))
    result = register(fixed, moving, maps, fixed_mask=fixed_mask, moving_mask=moving_mask, out_dir=out, device=device)
    summary = {"stages": len(result.stages), "seconds": result.seconds,
               "outputs": [str(p) for p in result.outputs.values()]}
    if points is not None:
        errors = target_registration_errors(result.transform, *points)
        summary["tre_mm"] = {"mean": float(errors.mean()), "max": float(errors.max()), "count": int(len(errors))}
    atomic_write_text(out / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="impactreg-docker", description="Register /Data into /Out (Docker contract).")
    parser.add_argument("--data", default=os.environ.get("IMPACTREG_DATA_DIR", "/Data"))
    parser.add_argument("--out", default=os.environ.get("IMPACTREG_OUT_DIR", "/Out"))
    parser.add_argument("--device", default=None, help="cpu or cuda:N (default: cpu)")
    args = parser.parse_args(argv)
    try:
        with terminate_raises():
            summary = run(Path(args.data), Path(args.out), args.device)
    except ImpactRegError as exc:
        print(f"impactreg docker: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("impactreg docker: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("impactreg docker: terminated", file=sys.stderr)
        return Terminated.exit_code
    print(f"registered in {summary['seconds']:.1f} s; outputs in {args.out}")
    if "tre_mm" in summary:
        t = summary["tre_mm"]
        print(f"TRE on {t['count']} landmarks: mean {t['mean']:.2f} mm, max {t['max']:.2f} mm")
    return 0


if __name__ == "__main__":
    sys.exit(main())

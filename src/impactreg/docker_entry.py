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


def run(data: Path, out: Path, device: str | None = None) -> dict:
    from .evaluation import target_registration_errors
    from .points import read_points
    from .engine.registration import register

    fixed = _find(data, ("Fixed_image", "FixedImage"), True, "fixed image")
    moving = _find(data, ("Moving_image", "MovingImage"), True, "moving image")
    maps = [data / "ParameterMap.txt"] if (data / "ParameterMap.txt").is_file() else []
    if not maps:
        raise InputError(f"{data}: no ParameterMap.txt; put your elastix/IMPACT parameter map there")
    maps += sorted(data.glob("ParameterMap.[0-9]*.txt"), key=lambda p: int(p.name.split(".")[1]))
    fixed_mask = _find(data, ("Fixed_mask", "FixedMask"), False, "fixed mask")
    moving_mask = _find(data, ("Moving_mask", "MovingMask"), False, "moving mask")
    if (data / "Models").is_dir():
        os.environ.setdefault("IMPACTREG_MODELS", str(data / "Models"))
    result = register(fixed, moving, maps, fixed_mask=fixed_mask, moving_mask=moving_mask, out_dir=out, device=device)
    summary = {"stages": len(result.stages), "seconds": result.seconds,
               "outputs": [str(p) for p in result.outputs.values()]}
    fixed_points, moving_points = data / "Fixed_landmarks.txt", data / "Moving_landmarks.txt"
    if fixed_points.is_file() and moving_points.is_file():
        from .image import read_image

        fp, mp = read_points(fixed_points), read_points(moving_points)
        f = fp.world(result.fixed_grid)
        m = mp.world(read_image(moving).grid)
        errors = target_registration_errors(result.transform, f, m)
        summary["tre_mm"] = {"mean": float(errors.mean()), "max": float(errors.max()), "count": int(len(errors))}
    atomic_write_text(out / "evaluation.json", json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="impactreg-docker", description="Register /Data into /Out (Docker contract).")
    parser.add_argument("--data", default=os.environ.get("IMPACTREG_DATA_DIR", "/Data"))
    parser.add_argument("--out", default=os.environ.get("IMPACTREG_OUT_DIR", "/Out"))
    parser.add_argument("--device", default=None, help="cpu or cuda:N (default: cpu)")
    args = parser.parse_args(argv)
    try:
        summary = run(Path(args.data), Path(args.out), args.device)
    except ImpactRegError as exc:
        print(f"impactreg docker: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"registered in {summary['seconds']:.1f} s; outputs in {args.out}")
    if "tre_mm" in summary:
        t = summary["tre_mm"]
        print(f"TRE on {t['count']} landmarks: mean {t['mean']:.2f} mm, max {t['max']:.2f} mm")
    return 0


if __name__ == "__main__":
    sys.exit(main())

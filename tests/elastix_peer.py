"""Run elastix's own transformix and elastix (itk-elastix) on files, for interoperability tests."""
from __future__ import annotations

from pathlib import Path

import itk
import numpy as np

from impactreg.points import read_output_points


def transformix_points(tp_path: Path, points: np.ndarray, moving_path: Path, work: Path) -> np.ndarray:
    """Map world points through a TransformParameters file with elastix's transformix."""
    work.mkdir(parents=True, exist_ok=True)
    point_file = work / "input_points.txt"
    rows = "\n".join(" ".join(f"{v:.10f}" for v in p) for p in points)
    point_file.write_text(f"point\n{len(points)}\n{rows}\n")
    params = itk.ParameterObject.New()
    params.ReadParameterFile(str(tp_path))
    moving = itk.imread(str(moving_path), itk.F)
    filt = itk.TransformixFilter.New(Input=moving, TransformParameterObject=params)
    filt.SetFixedPointSetFileName(str(point_file))
    filt.SetOutputDirectory(str(work))
    filt.SetLogToConsole(False)
    filt.Update()
    inputs, outputs = read_output_points(work / "outputpoints.txt")
    np.testing.assert_allclose(inputs, points, atol=1e-5)
    return outputs


def transformix_image(tp_path: Path, moving_path: Path) -> np.ndarray:
    """The moving image resampled by elastix's transformix, as a (Z, Y, X) array."""
    params = itk.ParameterObject.New()
    params.ReadParameterFile(str(tp_path))
    moving = itk.imread(str(moving_path), itk.F)
    return np.asarray(itk.array_from_image(itk.transformix_filter(moving, params, log_to_console=False)))


def elastix_register(fixed_path: Path, moving_path: Path, maps: list[dict], out_dir: Path) -> list[Path]:
    """Register with elastix; returns the TransformParameters files it wrote."""
    out_dir.mkdir(parents=True, exist_ok=True)
    params = itk.ParameterObject.New()
    for m in maps:
        pm = params.GetDefaultParameterMap(m.pop("_default"), m.pop("_levels", 2))
        for key, value in m.items():
            pm[key] = [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        params.AddParameterMap(pm)
    fixed = itk.imread(str(fixed_path), itk.F)
    moving = itk.imread(str(moving_path), itk.F)
    itk.elastix_registration_method(fixed, moving, parameter_object=params, log_to_console=False,
                                    output_directory=str(out_dir))
    return sorted(out_dir.glob("TransformParameters.*.txt"), key=lambda p: int(p.name.split(".")[1]))

import subprocess
import sys

import pytest
import torch

from impactreg.metrics.impact import impact_level
from impactreg.presets import DEFAULT, PRESETS, preset_maps


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_loads_and_validates(name):
    maps = preset_maps(name)
    assert len(maps) == len(PRESETS[name][1])
    for pm in maps:
        levels = pm.get("NumberOfResolutions")
        pm.check_levels(levels)
        assert pm.get("Transform") in ("EulerTransform", "AffineTransform", "BSplineTransform", "DeformationFieldTransform")
        if "Impact" in pm.get("Metric"):
            for level in range(levels):
                config = impact_level(pm, level, 3, torch.device("cpu"))
                assert config.fixed and config.mode in ("Static", "Jacobian")
    assert DEFAULT in PRESETS


def test_register_with_a_preset(tmp_path, data_dir):
    d = data_dir / "brainweb2d"
    out = tmp_path / "out"
    args = ["register", "-f", d / "BrainT1SliceBorder20DirectionPlus30.mhd", "-m",
            d / "BrainProtonDensitySliceBorder20DirectionPlus30.mhd", "--preset", "rigid", "-out", out, "--seed", "0", "--qc"]
    r = subprocess.run([sys.executable, "-m", "impactreg", *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "TransformParameters.0.txt").is_file() and (out / "result.0.nii.gz").is_file()
    assert (out / "qc.png").stat().st_size > 1000 and "data:image/png;base64," in (out / "qc.html").read_text()
    r = subprocess.run([sys.executable, "-m", "impactreg", "qc", "-tp", str(out / "TransformParameters.0.txt"),
                        "-f", str(d / "BrainT1SliceBorder20DirectionPlus30.mhd"),
                        "-m", str(d / "BrainProtonDensitySliceBorder20DirectionPlus30.mhd"), "-out", str(tmp_path / "qc")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "qc" / "qc.png").stat().st_size > 1000
    r = subprocess.run([sys.executable, "-m", "impactreg", *map(str, args[:5]), "-out", str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "-p MAP" in r.stderr

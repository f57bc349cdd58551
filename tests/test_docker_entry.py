"""The Docker entry script on a temporary folder laid out like /Data (no Docker engine here)."""
import json
import subprocess
import sys

import numpy as np
import torch

from impactreg.geometry import Grid
from impactreg.image import Image, read_image, write_image
from impactreg.points import write_points


def test_entry_script_registers_and_reports_tre(tmp_path, data_dir):
    data, out = tmp_path / "Data", tmp_path / "Out"
    data.mkdir()
    pd = read_image(data_dir / "brainweb2d" / "BrainProtonDensitySliceBorder20.png").channel(0)
    t1 = read_image(data_dir / "brainweb2d" / "BrainT1SliceBorder20.png").channel(0)
    shift = np.array([3.0, -2.0])
    write_image(t1, data / "Fixed_image.mha")
    write_image(Image(pd.data, Grid(pd.grid.size, pd.grid.spacing, pd.grid.origin + shift, pd.grid.direction)),
                data / "Moving_image.nii.gz")
    (data / "ParameterMap.txt").write_text(
        '(Transform "TranslationTransform")\n(Metric "AdvancedMattesMutualInformation")\n(NumberOfResolutions 2)\n'
        '(MaximumNumberOfIterations 100)\n(NumberOfSpatialSamples 1000)\n(NewSamplesEveryIteration "true")\n')
    points = np.array([[80.0, 90.0], [120.0, 140.0], [100.0, 60.0]])
    write_points(data / "Fixed_landmarks.txt", points)
    write_points(data / "Moving_landmarks.txt", points + shift)
    (data / "Models").mkdir()
    before = {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()}
    r = subprocess.run([sys.executable, "-m", "impactreg.docker_entry", "--data", str(data), "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "TransformParameters.0.txt").is_file() and (out / "impactreg.log").is_file()
    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["tre_mm"]["count"] == 3 and summary["tre_mm"]["mean"] < 0.5
    assert "TRE on 3 landmarks" in r.stdout
    assert {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()} == before  # inputs untouched


def test_entry_script_explains_a_missing_parameter_map(tmp_path):
    data = tmp_path / "Data"
    data.mkdir()
    image = Image(torch.rand(1, 8, 8), Grid((8, 8), (1.0, 1.0), (0.0, 0.0), np.eye(2)))
    write_image(image, data / "FixedImage.mha")
    write_image(image, data / "MovingImage.mha")
    r = subprocess.run([sys.executable, "-m", "impactreg.docker_entry", "--data", str(data), "--out", str(tmp_path / "Out")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "ParameterMap.txt" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_entry_script_checks_the_landmarks_before_registering(tmp_path):
    data, out = tmp_path / "Data", tmp_path / "Out"
    data.mkdir()
    image = Image(torch.rand(1, 16, 16), Grid((16, 16), (1.0, 1.0), (0.0, 0.0), np.eye(2)))
    write_image(image, data / "FixedImage.mha")
    write_image(image, data / "MovingImage.mha")
    (data / "ParameterMap.txt").write_text('(Transform "TranslationTransform")\n(Metric "AdvancedMeanSquares")\n'
                                           '(NumberOfResolutions 1)\n(MaximumNumberOfIterations 5)\n')
    fixed_points, moving_points = data / "Fixed_landmarks.txt", data / "Moving_landmarks.txt"
    cases = [
        (np.array([[3.0, 4.0]]), None, "has no partner Moving_landmarks.txt"),
        (np.array([[3.0, 4.0]]), np.array([[3.0, 4.0, 5.0]]), "the landmarks are 3D but the moving image is 2D"),
        (np.array([[3.0, 4.0], [5.0, 6.0]]), np.array([[3.0, 4.0]]), "lists 2 landmarks and"),
    ]
    for fixed_rows, moving_rows, message in cases:
        write_points(fixed_points, fixed_rows)
        moving_points.unlink(missing_ok=True)
        if moving_rows is not None:
            write_points(moving_points, moving_rows)
        r = subprocess.run([sys.executable, "-m", "impactreg.docker_entry", "--data", str(data), "--out", str(out)],
                           capture_output=True, text=True)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr
        assert not out.exists()  # nothing was registered or written

"""Evaluation measures against values worked out by hand on tiny images."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from impactreg.evaluation import (dice, evaluate, hausdorff95, jacobian_statistics, mean_absolute_error,
                                  target_registration_errors)
from impactreg.geometry import Grid
from impactreg.image import Image, write_image
from impactreg.points import write_points
from impactreg.transforms import AffineTransform, TranslationTransform
from impactreg.transforms.elastix_files import write_transform_file

GRID = Grid((6, 5), (2.0, 1.0), (0.0, 0.0), np.eye(2))  # anisotropic: 2 mm along x, 1 mm along y


def labels(*voxels, value=1):
    data = torch.zeros(1, 5, 6)
    for y, x in voxels:
        data[0, y, x] = value
    return Image(data, GRID, "uint8")


def test_tre():
    t = TranslationTransform(2, [1.0, 0.0])
    errors = target_registration_errors(t, np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[1.0, 0.0], [2.0, 3.0]]))
    np.testing.assert_allclose(errors, [0.0, 2.0])


def test_dice():
    a = labels((0, 0), (0, 1), (1, 0), (1, 1))
    b = labels((0, 0), (0, 1), (3, 3), (3, 4))
    assert dice(a, b) == {1: pytest.approx(0.5)}


def test_hd95_uses_physical_spacing():
    a = np.zeros((5, 6), dtype=bool)
    b = np.zeros((5, 6), dtype=bool)
    a[2, 0] = True
    b[2, 2] = True  # two voxels along x = 4 mm
    assert hausdorff95(a, b, GRID.spacing) == pytest.approx(4.0)
    c = np.zeros((5, 6), dtype=bool)
    c[4, 0] = True  # two voxels along y = 2 mm
    assert hausdorff95(a, c, GRID.spacing) == pytest.approx(2.0)
    assert np.isnan(hausdorff95(a, np.zeros_like(a), GRID.spacing))


def test_jacobian_statistics():
    stretch = AffineTransform(2, [2.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    stats = jacobian_statistics(stretch, GRID)
    assert stats["folded_fraction"] == 0 and stats["jacobian_min"] == pytest.approx(2.0)
    assert stats["log_jacobian_std"] == pytest.approx(0.0, abs=1e-7)
    mirror = AffineTransform(2, [-1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    assert jacobian_statistics(mirror, GRID)["folded_fraction"] == 1.0


def test_mae_inside_mask():
    ones = Image(torch.ones(1, 5, 6), GRID)
    zeros = Image(torch.zeros(1, 5, 6), GRID)
    mask = torch.zeros(5, 6, dtype=torch.bool)
    mask[:, :3] = True
    assert mean_absolute_error(ones, zeros, mask) == 1.0


def test_evaluate_files_and_cli(tmp_path):
    tp = write_transform_file(tmp_path / "TransformParameters.0.txt", TranslationTransform(2, [2.0, 0.0]), GRID)
    fixed_labels = write_image(labels((1, 1), (1, 2)), tmp_path / "fl.mha")
    moving_labels = write_image(labels((1, 2), (1, 3)), tmp_path / "ml.mha")  # moved one voxel = 2 mm along x
    write_points(tmp_path / "fp.txt", np.array([[2.0, 1.0]]))
    write_points(tmp_path / "mp.txt", np.array([[4.0, 1.5]]))
    summary = evaluate(tp, tmp_path / "fp.txt", tmp_path / "mp.txt", fixed_labels, moving_labels)
    assert summary["tre"]["mean"] == pytest.approx(0.5)
    assert summary["dice"]["mean"] == pytest.approx(1.0)
    assert summary["hd95_mm"]["mean"] == pytest.approx(0.0)
    r = subprocess.run([sys.executable, "-m", "impactreg", "evaluate", "-tp", str(tp), "--fixed-labels", str(fixed_labels),
                        "--moving-labels", str(moving_labels), "-out", str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "evaluation.json").read_text())["dice"]["mean"] == pytest.approx(1.0)
    r = subprocess.run([sys.executable, "-m", "impactreg", "evaluate", "-tp", str(tp), "--fixed-points", str(tmp_path / "fp.txt")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--moving-points" in r.stderr

"""`impactreg transform` end to end on the real images, and its one-line errors."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from impactreg.image import read_image
from impactreg.points import read_output_points
from impactreg.warp import resample
from impactreg.transforms import BSplineTransform, CombinationTransform, EulerTransform
from impactreg.transforms.elastix_files import write_transform_chain


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "impactreg", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def brain_transform(grid):
    """A rotation of 10 degrees about the image centre plus a shift, then a smooth B-spline."""
    centre = grid.index_to_world((np.array(grid.size) - 1) / 2.0)
    rigid = EulerTransform(2, [np.deg2rad(10.0), 13.0, 17.0], centre)
    spline = BSplineTransform.over_image(grid, 40.0, 3, initial=rigid)
    rng = np.random.default_rng(0)
    spline = spline.with_parameters(torch.from_numpy(rng.normal(size=spline.number_of_parameters) * 2.0))
    return CombinationTransform(rigid, spline)


def test_transform_brainweb_oblique(tmp_path, data_dir):
    image_path = data_dir / "brainweb2d" / "BrainT1SliceBorder20DirectionPlus30.mhd"
    image = read_image(image_path)
    transform = brain_transform(image.grid)
    files = write_transform_chain(transform, image.grid, tmp_path / "tp")
    (tmp_path / "pts.txt").write_text("index\n3\n100 120\n60 80\n150 200\n")
    out = tmp_path / "out"
    result = run_cli("transform", "-tp", files[-1], "-out", out, "-in", image_path, "-def", tmp_path / "pts.txt", "-jac", "all")
    assert result.returncode == 0, result.stderr
    warped = read_image(out / "result.mha")
    assert warped.grid.same_as(image.grid)
    expected = resample(image, transform, image.grid, order=3)
    np.testing.assert_allclose(warped.data.numpy(), expected.data.numpy(), atol=1e-3)
    assert (warped.data != image.data).float().mean() > 0.3
    inputs, outputs = read_output_points(out / "outputpoints.txt")
    np.testing.assert_allclose(inputs, image.grid.index_to_world(np.array([[100, 120], [60, 80], [150, 200]])), atol=1e-5)
    np.testing.assert_allclose(outputs, transform.map(torch.from_numpy(inputs)).numpy(), atol=1e-5)
    jac = read_image(out / "spatialJacobian.mha")
    assert jac.grid.same_as(image.grid) and 0.5 < float(jac.data.mean()) < 1.5


def test_transform_lung_ct_labels_field_and_csv(tmp_path, data_dir):
    ct_path = data_dir / "lung_ct" / "3DCT_lung_baseline_small.mha"
    mask_path = data_dir / "lung_ct" / "3DCT_lung_baseline_mask.mha"
    ct = read_image(ct_path)
    centre = ct.grid.index_to_world((np.array(ct.grid.size) - 1) / 2.0)
    transform = EulerTransform(3, [0.02, -0.03, 0.05, 3.0, -4.0, 5.0], centre)
    files = write_transform_chain(transform, ct.grid, tmp_path / "tp")
    (tmp_path / "p.csv").write_text("x,y,z\n0,0,-1300\n10,-20,-1250\n")
    out = tmp_path / "out"
    r = run_cli("transform", "-tp", files[-1], "-out", out, "-in", mask_path, "--labels", "-def", "all")
    assert r.returncode == 0, r.stderr
    mask = read_image(out / "result.mha")
    assert mask.pixel_type == "uint8" and set(np.unique(mask.numpy())) <= {0.0, 1.0}
    assert mask.grid.same_as(ct.grid)
    field = read_image(out / "deformationField.mha")
    assert field.channels == 3
    pts = ct.grid.voxel_points()[:5]
    np.testing.assert_allclose(field.data.reshape(3, -1)[:, :5].T.numpy(), (transform.map(pts) - pts).numpy(), atol=1e-4)
    r = run_cli("transform", "-tp", files[-1], "-out", out, "-def", tmp_path / "p.csv")
    assert r.returncode == 0, r.stderr
    _, outputs = read_output_points(out / "outputpoints.txt")
    np.testing.assert_allclose(outputs, transform.map(torch.tensor([[0.0, 0, -1300], [10, -20, -1250]], dtype=torch.float64)).numpy(), atol=1e-5)


def test_cli_errors_are_one_line_and_write_nothing(tmp_path, data_dir):
    image_path = data_dir / "brainweb2d" / "BrainT1SliceBorder20DirectionPlus30.mhd"
    ct_path = data_dir / "lung_ct" / "3DCT_lung_baseline_small.mha"
    grid = read_image(image_path).grid
    files = write_transform_chain(brain_transform(grid), grid, tmp_path / "tp")
    out = tmp_path / "out"
    (tmp_path / "bad.txt").write_text("(Transform \"EulerTransform\"\n")
    (tmp_path / "pts3d.txt").write_text("point\n1\n1 2 3\n")
    cases = [
        ("transform", "-tp", tmp_path / "missing.txt", "-out", out, "-jac", "all"),
        ("transform", "-tp", tmp_path / "bad.txt", "-out", out, "-jac", "all"),
        ("transform", "-tp", files[-1], "-out", out, "-in", tmp_path / "nope.mha"),
        ("transform", "-tp", files[-1], "-out", out, "-in", ct_path),
        ("transform", "-tp", files[-1], "-out", out, "-in", image_path, "-def", tmp_path / "pts3d.txt"),
        ("transform", "-tp", files[-1], "-out", out, "-jac", "some"),
        ("transform", "-tp", files[-1], "-out", out),
    ]
    for args in cases:
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        assert not out.exists(), args
    r = run_cli("transform", "-tp", tmp_path / "missing.txt", "-out", out, "-jac", "all", "--debug")
    assert "Traceback" in r.stderr

"""Interoperability of TransformParameters files with elastix's own transformix and elastix."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from elastix_peer import elastix_register, transformix_image, transformix_points
from impactreg.errors import TransformFileError
from impactreg.geometry import Grid
from impactreg.image import Image, read_image, write_image
from impactreg.warp import map_points, resample
from impactreg.transforms import (AffineTransform, BSplineTransform, CombinationTransform, EulerTransform,
                                  SimilarityTransform, TranslationTransform)
from impactreg.transforms.elastix_files import read_transform_file, write_transform_chain, write_transform_file


def blob_image(dim, seed=0):
    """A smooth synthetic image on an oblique, anisotropic grid."""
    rng = np.random.default_rng(seed)
    size = (40, 36, 30)[:dim]
    angle = 0.4
    if dim == 2:
        direction = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    else:
        q, _ = np.linalg.qr(np.eye(3) + 0.3 * rng.normal(size=(3, 3)))
        direction = q * np.sign(np.linalg.det(q))
    grid = Grid(size, (1.3, 0.9, 2.1)[:dim], (-20.0, 13.5, -105.0)[:dim], direction)
    idx = grid.voxel_indices().numpy()
    value = np.zeros(len(idx))
    for _ in range(6):
        centre = rng.uniform(0, 1, dim) * np.array(size)
        width = rng.uniform(3, 8)
        value += rng.uniform(50, 200) * np.exp(-((idx - centre) ** 2).sum(1) / (2 * width ** 2))
    return Image(torch.from_numpy(value.reshape(1, *grid.shape)).float(), grid, "float32")


def random_points(grid: Grid, n=1000, seed=1):
    idx = np.random.default_rng(seed).uniform(0, 1, size=(n, grid.dim)) * (np.array(grid.size) - 1)
    return grid.index_to_world(idx)


def our_transforms(grid: Grid):
    dim = grid.dim
    centre = grid.index_to_world((np.array(grid.size) - 1) / 2.0)
    rng = np.random.default_rng(5)
    euler = EulerTransform(dim, [0.08, 1.5, -2.0] if dim == 2 else [0.05, -0.04, 0.07, 1.5, -2.0, 0.8], centre)
    affine = AffineTransform(dim, np.concatenate([(np.eye(dim) + 0.05 * rng.normal(size=(dim, dim))).ravel(),
                                                 rng.normal(size=dim)]), centre)
    spline = BSplineTransform.over_image(grid, 15.0, 3)
    spline = spline.with_parameters(torch.from_numpy(rng.normal(size=spline.number_of_parameters) * 2.0))
    chained_spline = BSplineTransform.over_image(grid, 15.0, 3, initial=affine)
    chained_spline = chained_spline.with_parameters(torch.from_numpy(rng.normal(size=chained_spline.number_of_parameters) * 2.0))
    out = {
        "translation": TranslationTransform(dim, rng.normal(size=dim) * 3),
        "euler": euler,
        "similarity": SimilarityTransform(dim, [1.05, 0.1, 1.0, 2.0] if dim == 2 else [0.03, 0.02, -0.05, 1.0, 2.0, -1.0, 0.95], centre),
        "affine": affine,
        "bspline": spline,
        "affine_bspline": CombinationTransform(affine, chained_spline, "Compose"),
    }
    for order in (1, 2):
        s = BSplineTransform.over_image(grid, 15.0, order)
        out[f"bspline{order}"] = s.with_parameters(torch.from_numpy(rng.normal(size=s.number_of_parameters) * 2.0))
    if dim == 3:
        out["euler_zyx"] = EulerTransform(3, [0.05, -0.04, 0.07, 1.5, -2.0, 0.8], centre, compute_zyx=True)
    return out


@pytest.mark.parametrize("dim", [2, 3])
def test_files_written_by_impactreg_work_in_transformix(tmp_path, dim):
    moving = blob_image(dim, seed=1)
    fixed_grid = blob_image(dim, seed=2).grid
    moving_path = write_image(moving, tmp_path / "moving.mha")
    points = random_points(fixed_grid)
    for name, transform in our_transforms(fixed_grid).items():
        files = write_transform_chain(transform, fixed_grid, tmp_path / name)
        ours = map_points(read_transform_file(files[-1]).transform, points)
        np.testing.assert_allclose(ours, map_points(transform, points), atol=1e-9, err_msg=name)
        theirs = transformix_points(files[-1], points, moving_path, tmp_path / name / "tx")
        assert np.abs(ours - theirs).max() < 1e-3, name
        warped = resample(moving, transform, fixed_grid, order=3).data[0].numpy()
        reference = transformix_image(files[-1], moving_path)
        diff = np.abs(warped - reference)
        assert np.quantile(diff, 0.999) < 1e-3 * moving.data.max().item(), name
        assert diff.max() < 0.05 * moving.data.max().item(), name  # only a rounding-borderline voxel may differ


@pytest.fixture(scope="module")
def elastix_outputs(tmp_path_factory, data_dir):
    """elastix registrations of the lung CT against a shifted copy: Euler, affine, B-spline, affine -> B-spline."""
    work = tmp_path_factory.mktemp("elastix")
    fixed = read_image(data_dir / "lung_ct" / "3DCT_lung_baseline_small.mha")
    shifted = Image(fixed.data, Grid(fixed.grid.size, fixed.grid.spacing, fixed.grid.origin + [4.0, -3.0, 2.0],
                                     fixed.grid.direction), fixed.pixel_type)
    fixed_path = write_image(fixed, work / "fixed.mha")
    moving_path = write_image(shifted, work / "moving.mha")
    quick = {"MaximumNumberOfIterations": 40, "NumberOfSpatialSamples": 1000}
    runs = {
        "euler": [dict(_default="rigid", **quick)],
        "affine": [dict(_default="affine", **quick)],
        "bspline": [dict(_default="bspline", FinalGridSpacingInPhysicalUnits=30, **quick)],
        "affine_bspline": [dict(_default="affine", **quick),
                           dict(_default="bspline", FinalGridSpacingInPhysicalUnits=30, **quick)],
    }
    files = {name: elastix_register(fixed_path, moving_path, maps, work / name) for name, maps in runs.items()}
    return fixed, fixed_path, moving_path, files, work


def test_files_written_by_elastix_map_points_as_transformix(elastix_outputs):
    fixed, _, moving_path, files, work = elastix_outputs
    points = random_points(fixed.grid)
    for name, paths in files.items():
        tf = read_transform_file(paths[-1])
        assert tf.grid.same_as(fixed.grid, tol=1e-9)
        if name == "affine_bspline":
            assert isinstance(tf.transform, CombinationTransform)
            assert isinstance(tf.transform.initial, AffineTransform)
            # the control grid elastix laid out over the affinely mapped image, reproduced here
            grid = BSplineTransform.over_image(fixed.grid, 30.0, 3, initial=tf.transform.initial).grid
            assert grid.same_as(tf.transform.current.grid, tol=1e-6)
        ours = map_points(tf.transform, points)
        theirs = transformix_points(paths[-1], points, moving_path, work / name / "tx")
        assert np.abs(ours - theirs).max() < 1e-3, name
        assert np.abs(ours - points).max() > 0.5, name  # the registration did move points


def test_elastix_files_resample_as_transformix(elastix_outputs):
    fixed, _, moving_path, files, _ = elastix_outputs
    moving = read_image(moving_path)
    paths = files["affine_bspline"]
    tf = read_transform_file(paths[-1])
    warped = resample(moving, tf.transform, tf.grid, tf.interpolation_order, tf.default_pixel_value).data[0].numpy()
    reference = transformix_image(paths[-1], moving_path)
    scale = np.abs(reference).max()
    assert np.quantile(np.abs(warped - reference), 0.999) < 1e-4 * scale


def test_written_file_has_every_elastix_key(tmp_path):
    grid = blob_image(3).grid
    t = our_transforms(grid)["affine_bspline"]
    first, last = write_transform_chain(t, grid, tmp_path)
    text = last.read_text()
    for key in ("Transform", "NumberOfParameters", "TransformParameters", "InitialTransformParameterFileName",
                "HowToCombineTransforms", "FixedImageDimension", "MovingImageDimension", "Size", "Index",
                "Spacing", "Origin", "Direction", "UseDirectionCosines", "GridSize", "GridIndex", "GridSpacing",
                "GridOrigin", "GridDirection", "BSplineTransformSplineOrder", "UseCyclicTransform",
                "ResampleInterpolator", "FinalBSplineInterpolationOrder", "Resampler", "DefaultPixelValue",
                "ResultImageFormat", "ResultImagePixelType", "CompressResultImage"):
        assert f"({key} " in text, key
    assert str(first) in text
    assert "(CenterOfRotationPoint " in first.read_text()


def test_index_keys_fold_into_origin(tmp_path):
    grid = blob_image(2).grid
    path = write_transform_file(tmp_path / "t.txt", TranslationTransform(2, [1.0, 2.0]), grid)
    text = path.read_text().replace("(Index 0 0)", "(Index 2 3)")
    path.write_text(text)
    tf = read_transform_file(path)
    np.testing.assert_allclose(tf.grid.origin, grid.index_to_world(np.array([2.0, 3.0])), atol=1e-12)


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace('(Transform "TranslationTransform")', '(Transform "SplineKernelTransform")'), "not supported"),
    (lambda t: t.replace("(NumberOfParameters 2)", "(NumberOfParameters 3)"), "NumberOfParameters"),
    (lambda t: t.replace("(Size 40 36)", "(Size 40 abc)"), "must hold numbers"),
    (lambda t: t.replace('"NoInitialTransform"', '"/no/such/TransformParameters.0.txt"'), "does not exist"),
    (lambda t: t.replace("(Spacing", "Spacing"), "expected an entry"),
    (lambda t: t.replace("(FixedImageDimension 2)", "(FixedImageDimension 4)"), "not supported"),
])
def test_malformed_files_give_one_line_errors(tmp_path, edit, message):
    grid = blob_image(2).grid
    path = write_transform_file(tmp_path / "t.txt", TranslationTransform(2, [1.0, 2.0]), grid)
    path.write_text(edit(path.read_text()))
    with pytest.raises(TransformFileError, match=message) as err:
        read_transform_file(path)
    assert "\n" not in str(err.value) and "t.txt" in str(err.value)

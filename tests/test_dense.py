"""The dense engine and elastix's DeformationFieldTransform: files transformix applies, the cost volume,
coupled-convex search, masks and fields of view, determinism and a known deformation on the lung CT."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import impactreg
import impactreg.evaluation
from impactreg.dense.costvolume import cost_volume, coupled_convex, voxel_distance, window
from impactreg.dense.features import DenseFeatures, FeaturePair
from impactreg.dense.adam import moving_samples
from impactreg.geometry import Grid
from impactreg.image import Image, read_image, write_image
from impactreg.parameters import ParameterMap
from impactreg.synthetic import random_deformation, warp_by_inverse
from impactreg.transforms import AffineTransform, CombinationTransform
from impactreg.transforms.deformation_field import DeformationFieldTransform
from impactreg.transforms.elastix_files import read_transform_file, write_transform_file
from impactreg.warp import resample


def _rotation(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def _smooth_field(grid: Grid) -> Image:
    p = grid.voxel_points()
    disp = torch.stack([3 * torch.sin(p[:, 1] / 15), 2 * torch.cos(p[:, 0] / 20), 1.5 * torch.sin(p[:, 2] / 10)])
    return Image(disp.reshape(3, *grid.shape).float(), grid)


@pytest.fixture()
def field_files(tmp_path):
    image_grid = Grid((24, 22, 16), [2.0, 2.2, 3.0], [-10.0, 5.0, 20.0], _rotation(10))
    moving = Image(torch.rand(1, *image_grid.shape, generator=torch.Generator().manual_seed(0)) * 100, image_grid)
    write_image(moving, tmp_path / "moving.mha")
    field_grid = Grid((12, 14, 10), [4.5, 4.0, 5.5], [-20.0, -5.0, 10.0], _rotation(-5))
    affine = AffineTransform(3, torch.tensor([1.02, 0.01, 0, -0.02, 0.99, 0.01, 0, 0, 1.01, 2.0, -1.5, 1.0],
                                             dtype=torch.float64), image_grid.centre)
    write_transform_file(tmp_path / "TransformParameters.0.txt", affine, image_grid)
    files = {}
    for order in (0, 1):
        files[order] = write_transform_file(tmp_path / f"TransformParameters.{order + 1}.txt",
                                            DeformationFieldTransform(_smooth_field(field_grid), order), image_grid,
                                            tmp_path / "TransformParameters.0.txt")
    return tmp_path, image_grid, affine, files


@pytest.mark.parametrize("order", [0, 1])
def test_field_file_applied_by_transformix(field_files, order):
    from elastix_peer import transformix_image, transformix_points

    folder, grid, affine, files = field_files
    tf = read_transform_file(files[order])
    assert isinstance(tf.transform, CombinationTransform) and tf.transform.how == "Compose"
    points = grid.voxel_points()[::29]
    ours = tf.transform.map(points).numpy()
    # elastix's Compose: the field is sampled at the initial transform's output
    expected = tf.transform.current.map(affine.map(points)).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-9)
    assert np.abs(ours - affine.map(points).numpy()).max() > 1.0  # the field moves points
    theirs = transformix_points(files[order], points.numpy(), folder / "moving.mha", folder / f"points{order}")
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
    warped = resample(read_image(folder / "moving.mha"), tf.transform, tf.grid, 3).data[0].numpy()
    np.testing.assert_allclose(warped, transformix_image(files[order], folder / "moving.mha"), atol=1e-3)


def test_field_file_keys_and_outputs(field_files, tmp_path):
    folder, grid, _, files = field_files
    text = files[1].read_text()
    for line in ('(Transform "DeformationFieldTransform")', f'(DeformationFieldFileName "{folder / "DeformationFieldImage.2.mha"}")',
                 "(DeformationFieldInterpolationOrder 1)", "(NumberOfParameters 0)"):
        assert line in text
    assert "TransformParameters " not in text.replace("InitialTransformParameterFileName", "")
    tf = read_transform_file(files[1])
    assert folder / "DeformationFieldImage.2.mha" in tf.chain
    out = impactreg.transform(files[1], tmp_path / "out", deformation=True, jacobian=True)
    field = read_image(out.outputs["deformationField.mha"])
    points = grid.voxel_points()
    np.testing.assert_allclose(field.data.reshape(3, -1).T.numpy(), (tf.transform.map(points) - points).numpy(),
                               atol=1e-4)
    jac = read_image(out.outputs["spatialJacobian.mha"]).data
    assert float(jac.min()) > 0.5 and abs(float(jac.mean()) - 1) < 0.2


def test_field_outside_is_identity_and_bad_order_refused(tmp_path):
    grid = Grid((5, 5, 5), [2.0] * 3, [0.0] * 3, np.eye(3))
    transform = DeformationFieldTransform(Image(torch.ones(3, 5, 5, 5), grid), 1)
    points = torch.tensor([[4.0, 4.0, 4.0], [8.9, 0.0, 0.0], [9.1, 0.0, 0.0], [-1.1, 0.0, 0.0]], dtype=torch.float64)
    np.testing.assert_allclose((transform.map(points) - points).numpy()[:, 0], [1, 1, 0, 0])  # [-0.5, n - 0.5) inside
    path = write_transform_file(tmp_path / "TransformParameters.0.txt", transform, grid)
    path.write_text(path.read_text().replace("(DeformationFieldInterpolationOrder 1)", "(DeformationFieldInterpolationOrder 3)"))
    with pytest.raises(impactreg.errors.TransformFileError, match="DeformationFieldInterpolationOrder 3"):
        read_transform_file(path)


def test_cost_volume_matches_direct_evaluation():
    g = torch.Generator().manual_seed(3)
    fixed, moving = torch.rand(2, 4, 5, 6, generator=g), torch.rand(2, 4, 5, 6, generator=g)
    valid = torch.rand(4, 5, 6, generator=g) > 0.2
    radius = 1
    cost = cost_volume([fixed, fixed], [moving, moving], valid, ["L1", "Cosine"], [1.0, 0.5], radius)
    offsets = window(radius, 3).long()
    for k, (dx, dy, dz) in enumerate(offsets.tolist()):
        for z, y, x in itertools.product(range(4), range(5), range(6)):
            zz, yy, xx = z + dz, y + dy, x + dx
            inside = 0 <= zz < 4 and 0 <= yy < 5 and 0 <= xx < 6 and bool(valid[zz, yy, xx])
            if inside:
                f, m = fixed[:, z, y, x], moving[:, zz, yy, xx]
                expected = float(voxel_distance("L1", f, m) + 0.5 * voxel_distance("Cosine", f, m))
                assert float(cost[k, z, y, x]) == pytest.approx(expected, abs=1e-6)
    # shifts leaving the array or the valid region cost the mean of the voxel's valid shifts
    k_out = next(k for k, o in enumerate(offsets.tolist()) if o == [-1, -1, -1])
    inside = [k for k, (dx, dy, dz) in enumerate(offsets.tolist()) if min(dx, dy, dz) >= 0 and bool(valid[dz, dy, dx])]
    assert float(cost[k_out, 0, 0, 0]) == pytest.approx(float(cost[inside, 0, 0, 0].mean()), abs=1e-6)


def test_coupled_convex_finds_a_shift():
    g = torch.Generator().manual_seed(4)
    fixed = torch.rand(3, 10, 12, 14, generator=g)
    moving = torch.roll(fixed, shifts=(1, -2, 2), dims=(1, 2, 3))  # moving(v + (2, -2, 1)) = fixed(v), x-y-z
    cost = cost_volume([fixed], [moving], torch.ones(10, 12, 14, dtype=torch.bool), ["L2"], [1.0], 3)
    field = coupled_convex(cost / cost.mean(), 3, [0.003, 0.01, 0.03, 0.1])
    centre = field[:, 3:-3, 3:-3, 3:-3].reshape(3, -1)
    np.testing.assert_allclose(centre.median(1).values.numpy(), [2, -2, 1], atol=1e-5)  # wrapped borders aside


def test_samples_outside_the_moving_view_or_mask_do_not_count():
    grid = Grid((6, 6, 6), [2.0] * 3, [0.0] * 3, np.eye(3))
    moving = Image(torch.rand(2, 6, 6, 6), grid)
    mask = Image((torch.arange(6)[None, None, :] < 3).expand(6, 6, 6).float(), grid)
    features = DenseFeatures(grid, [FeaturePair(torch.rand(2, 6, 6, 6), moving, "L2", 1.0)],
                             torch.ones(6, 6, 6, dtype=torch.bool), mask)
    points = torch.tensor([[2.0, 2, 2], [8.0, 2, 2], [2.0, 2, 10.5], [-0.5, 2, 2]])
    _, valid = moving_samples(features, points)
    assert valid.tolist() == [True, False, False, False]


def _dense_map(extra: str = "") -> ParameterMap:
    text = """(Registration "DenseRegistration")
(Transform "DeformationFieldTransform")
(Optimizer "ConvexAdam")
(Metric "Impact")
(ImpactModelsPath0 "MIND/R1D2")
(ImpactPatchSize0 0 0 0)
(ImpactVoxelSize0 4 4 4)
(ImpactMode "Static")
(ConvexGridSpacing 8)
(ConvexSearchRadius 3)
(AdamIterations 40)
(AdamLearningRate 0.5)
(NumberOfResolutions 1)
"""
    base = ParameterMap.from_text(text, "dense test map")
    for line in filter(None, extra.splitlines()):  # the extra entries replace the base map's
        key, *values = line.strip("()").split()
        base.set(key, [v.strip('"') for v in values])
    return base


@pytest.fixture(scope="module")
def lung_case(data_dir):
    ct = read_image(data_dir / "lung_ct" / "3DCT_lung_baseline_small.mha")
    truth = random_deformation(ct.grid, 5, rotation_degrees=1.0, translation_mm=3.0, bumps=6, bump_mm=5.0,
                               bump_width_mm=35.0)
    moving = warp_by_inverse(ct, truth, default=-1000.0)
    mask = read_image(data_dir / "lung_ct" / "3DCT_lung_baseline_mask.mha")
    inside = torch.nonzero(impactreg.filters.resample_to_grid(mask, ct.grid, order=0).data[0] > 0).numpy()
    pick = np.random.default_rng(0).choice(len(inside), 100, replace=False)
    points = torch.from_numpy(ct.grid.index_to_world(inside[pick][:, ::-1].astype(np.float64)))
    return ct, moving, truth, points, mask


def test_known_deformation_recovered_on_the_lung_ct(lung_case, tmp_path):
    fixed, moving, truth, points, _ = lung_case
    result = impactreg.register(fixed, moving, [_dense_map()], out_dir=tmp_path / "out", seed=1)
    before = (points - truth.map(points)).norm(dim=1).mean()
    after = (result.transform.map(points) - truth.map(points)).norm(dim=1).mean()
    assert after < 0.2 * before, (float(before), float(after))
    written = read_transform_file(tmp_path / "out" / "TransformParameters.0.txt")
    np.testing.assert_allclose(written.transform.map(points).numpy(), result.transform.map(points).numpy(), atol=1e-4)
    assert (tmp_path / "out" / "DeformationFieldImage.0.mha").is_file()
    jac = impactreg.warp.jacobian_determinant(result.transform, fixed.grid)
    assert float(jac.data.min()) > 0
    for name, values in (("fixed.csv", points), ("moving.csv", truth.map(points))):
        (tmp_path / name).write_text("x,y,z\n" + "\n".join(",".join(f"{v:.6f}" for v in p) for p in values.tolist()))
    summary = impactreg.evaluation.evaluate(tmp_path / "out" / "TransformParameters.0.txt", tmp_path / "fixed.csv",
                                 tmp_path / "moving.csv")
    assert summary["tre"]["mean"] == pytest.approx(float(after), abs=1e-3)
    assert summary["jacobian"]["folded_fraction"] == 0


def test_masks_and_field_of_view(lung_case):
    fixed, moving, truth, points, mask = lung_case
    # a moving image covering only part of the fixed one, and noise outside the fixed mask
    box = Grid(tuple(int(s * 0.7) for s in moving.grid.size), moving.grid.spacing,
               moving.grid.index_to_world(np.asarray(moving.grid.size) * 0.15), moving.grid.direction)
    smaller = impactreg.filters.resample_to_grid(moving, box)
    noisy = fixed.with_data(torch.where(impactreg.filters.resample_to_grid(mask, fixed.grid, order=0).data > 0,
                                        fixed.data, torch.rand_like(fixed.data) * 2000 - 1000))
    result = impactreg.register(noisy, smaller, [_dense_map("(AdamIterations 20)")], fixed_mask=mask, seed=1)
    in_view = points[impactreg.interpolation.Interpolator(smaller, 0).inside(truth.map(points).float())]
    before = (in_view - truth.map(in_view)).norm(dim=1).mean()
    after = (result.transform.map(in_view) - truth.map(in_view)).norm(dim=1).mean()
    assert len(in_view) > 20 and after < 0.4 * before, (len(in_view), float(before), float(after))


def test_same_seed_same_field(lung_case):
    fixed, moving, _, _, _ = lung_case
    maps = [_dense_map("(AdamIterations 5)\n(ImpactVoxelSize0 8 8 8)\n(ConvexGridSpacing 16)")]
    first = impactreg.register(fixed, moving, maps, seed=3).transform
    second = impactreg.register(fixed, moving, maps, seed=3).transform
    assert torch.equal(first.field.data, second.field.data)


def test_plain_intensities_in_2d_recover_a_translation():
    g = torch.Generator().manual_seed(7)
    grid = Grid((64, 56), [1.5, 1.5], [10.0, -20.0], np.eye(2))
    blobs = impactreg.filters.gaussian_smooth(Image(torch.rand(1, *grid.shape, generator=g) * 100, grid), 3.0)
    shift = torch.tensor([3.0, -2.0], dtype=torch.float64)
    moving = Image(impactreg.interpolation.sample(blobs, grid.voxel_points() - shift, order=3).values.T
                   .reshape(1, *grid.shape).float(), grid)  # moving(x + shift) = fixed(x)
    pm = ParameterMap.from_text("""(Registration "DenseRegistration")
(Transform "DeformationFieldTransform")
(Optimizer "ConvexAdam")
(Metric "AdvancedMeanSquares")
(ConvexGridSpacing 3)
(ConvexSearchRadius 3)
(AdamIterations 30)
(AdamLearningRate 0.2)
(NumberOfResolutions 1)
""", "2D intensities")
    result = impactreg.register(blobs, moving, [pm], seed=0)
    inner = grid.voxel_points().reshape(56, 64, 2)[12:-12, 12:-12].reshape(-1, 2)
    found = result.transform.map(inner) - inner
    np.testing.assert_allclose(found.mean(0).numpy(), shift.numpy(), atol=0.3)
    assert float((found - shift).norm(dim=1).max()) < 1.0


def test_scaling_and_squaring_and_regularisers():
    from impactreg.dense.adam import field_from_parameters, regularization
    from impactreg.dense.components import ConvexAdam

    grid = Grid((10, 9, 8), [2.0, 3.0, 4.0], [0.0] * 3, _rotation(20))
    pm = ParameterMap.from_text("(DenseDiffeomorphic \"true\")\n(AdamFieldSmoothing 0)\n(NumberOfResolutions 1)", "x")
    settings = ConvexAdam().settings(pm)
    constant = torch.tensor([1.5, -2.0, 0.5]).reshape(3, 1, 1, 1).expand(3, 8, 9, 10).contiguous()
    torch.testing.assert_close(field_from_parameters(constant, grid, settings), constant)  # exp(v) = v for constants
    # a small rotation-like velocity: exp(v) differs from v at second order
    p = grid.voxel_points().float()
    centre = p.mean(0)
    v = 0.05 * torch.stack([-(p[:, 1] - centre[1]), p[:, 0] - centre[0], torch.zeros(len(p))], 0).reshape(3, 8, 9, 10)
    u = field_from_parameters(v, grid, settings)
    assert 0 < float((u - v)[:, 2:-2, 2:-2, 2:-2].abs().max()) < 0.1
    index = grid.voxel_indices().float().T.reshape(3, 8, 9, 10)
    linear = index * torch.tensor([0.1, 0.2, 0.3]).reshape(3, 1, 1, 1)
    assert float(regularization(linear, grid, "Bending")) == pytest.approx(0.0, abs=1e-9)
    assert float(regularization(linear, grid, "Diffusion")) > 0

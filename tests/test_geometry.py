import numpy as np
import pytest
import SimpleITK as sitk
import torch

from impactreg.errors import ImageError
from impactreg.geometry import Grid


def oblique(dim, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q


@pytest.mark.parametrize("dim", [2, 3])
def test_index_world_round_trip_matches_sitk(dim):
    size = (7, 5, 4)[:dim]
    grid = Grid(size, (0.7, 1.3, 2.9)[:dim], (10.0, -20.5, 33.0)[:dim], oblique(dim))
    ref = sitk.Image(list(size), sitk.sitkFloat32)
    ref.SetSpacing(tuple(grid.spacing))
    ref.SetOrigin(tuple(grid.origin))
    ref.SetDirection(tuple(grid.direction.ravel()))
    idx = np.random.default_rng(1).uniform(-1, 8, size=(20, dim))
    world = grid.index_to_world(idx)
    expected = np.array([ref.TransformContinuousIndexToPhysicalPoint(tuple(i)) for i in idx])
    np.testing.assert_allclose(world, expected, atol=1e-10)
    np.testing.assert_allclose(grid.world_to_index(world), idx, atol=1e-10)
    world_t = grid.index_to_world(torch.tensor(idx))
    np.testing.assert_allclose(world_t.numpy(), expected, atol=1e-10)


def test_voxel_points_follow_torch_memory_order():
    grid = Grid((4, 3, 2), (1.0, 2.0, 3.0), (0.5, 0.0, -1.0), oblique(3, 2))
    pts = grid.voxel_points().numpy().reshape(*grid.shape, 3)
    # voxel [z, y, x] of a (Z, Y, X) array has index (x, y, z)
    np.testing.assert_allclose(pts[1, 2, 3], grid.index_to_world(np.array([3.0, 2.0, 1.0])))


def test_invalid_grids_are_rejected():
    with pytest.raises(ImageError):
        Grid((3, 3), (1.0, -1.0), (0, 0), np.eye(2))
    with pytest.raises(ImageError):
        Grid((3, 3), (1.0, 1.0), (0, 0), np.zeros((2, 2)))
    with pytest.raises(ImageError):
        Grid((3, 3, 3, 3), (1, 1, 1, 1), (0, 0, 0, 0), np.eye(4))


def test_grid_arithmetic_is_the_grids():
    grid = Grid((6, 5, 4), (0.5, 1.5, 2.0), (3.0, -1.0, 7.0), oblique(3, 5))
    np.testing.assert_allclose(grid.centre, grid.index_to_world(np.array([2.5, 2.0, 1.5])), atol=1e-12)
    assert grid.strides == (1, 6, 30)
    flat = torch.tensor([0, 1, 6, 31, 119])
    assert grid.unravel(flat).tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 1], [5, 4, 3]]
    t = grid.tensors(torch.float32)
    assert t is grid.tensors(torch.float32, "cpu") and t.world_to_index.dtype == torch.float32
    np.testing.assert_allclose(t.world_to_index.double().numpy() @ t.index_to_world.double().numpy(), np.eye(3), atol=1e-6)
    region = grid.region([1.0, 2.0, 0.5], (2, 2, 2))
    assert region.size == (2, 2, 2)
    np.testing.assert_allclose(region.origin, grid.index_to_world(np.array([1.0, 2.0, 0.5])), atol=1e-12)
    np.testing.assert_allclose(region.index_to_world(np.ones(3)), grid.index_to_world(np.array([2.0, 3.0, 1.5])))


def test_voxel_size_and_strided_grids_cover_the_same_box():
    grid = Grid((10, 8, 6), (1.0, 1.0, 2.0), (0.0, 5.0, -3.0), oblique(3, 6))
    coarse = grid.with_voxel_size(2.0)
    assert coarse.size == (5, 4, 6)
    np.testing.assert_allclose(coarse.extent_corners().min(0), grid.extent_corners().min(0), atol=1e-9)
    np.testing.assert_allclose(coarse.extent_corners().max(0), grid.extent_corners().max(0), atol=1e-9)
    layer = grid.shrunk([2, 2, 1], centred=False, size=(6, 4, 6))  # a network layer of stride 2 (ceil size)
    assert layer.size == (6, 4, 6)
    np.testing.assert_allclose(layer.origin, grid.index_to_world(np.array([0.5, 0.5, 0.0])), atol=1e-12)


def test_control_grid_with_an_initial_transform_covers_the_mapped_box():
    from impactreg.transforms import EulerTransform

    grid = Grid((30, 20), (1.0, 1.0), (0.0, 0.0), np.eye(2))
    shift = EulerTransform(2, np.array([0.0, 4.0, -2.0]), grid.centre)
    plain, moved = grid.control_grid(10.0), grid.control_grid(10.0, initial=shift)
    assert plain == grid.control_grid(10.0) and plain.size == moved.size == (6, 5)
    np.testing.assert_allclose(moved.origin - plain.origin, [4.0, -2.0], atol=1e-12)

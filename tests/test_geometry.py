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

import numpy as np
import pytest
import torch

from impactreg.errors import ImageError
from impactreg.geometry import Grid
from impactreg.sampling import ImageSampler
from test_geometry import oblique


def make_grid():
    return Grid((20, 16, 12), (1.5, 2.0, 3.0), (5.0, -7.0, 11.0), oblique(3, 4))


def test_random_samples_stay_in_the_mask():
    grid = make_grid()
    mask = torch.zeros(grid.shape, dtype=torch.bool)
    mask[3:6, 4:9, 10:15] = True
    gen = torch.Generator().manual_seed(1)
    for kind in ("Random", "RandomCoordinate"):
        pts = ImageSampler(kind, grid, mask, 500, generator=gen, dtype=torch.float64).sample()
        idx = grid.world_to_index(pts)
        voxel = torch.floor(idx + 0.5).long()
        assert bool(mask[voxel[:, 2], voxel[:, 1], voxel[:, 0]].all()), kind
        if kind == "RandomCoordinate":
            assert float((idx - idx.round()).abs().max()) > 0.3  # continuous positions


def test_full_and_grid_samplers():
    grid = make_grid()
    assert ImageSampler("Full", grid).sample().shape[0] == grid.num_voxels
    pts = ImageSampler("Grid", grid, grid_spacing=(2, 4, 3), dtype=torch.float64).sample()
    assert pts.shape[0] == 10 * 4 * 4
    idx = grid.world_to_index(pts)
    assert torch.all(idx[:, 1].round() % 4 == 0) and torch.allclose(idx, idx.round(), atol=1e-9)


def test_empty_mask_is_a_clear_error():
    grid = make_grid()
    with pytest.raises(ImageError, match="mask is empty"):
        ImageSampler("Random", grid, torch.zeros(grid.shape, dtype=torch.bool))


def test_same_seed_same_samples():
    grid = make_grid()
    a = ImageSampler("RandomCoordinate", grid, None, 100, generator=torch.Generator().manual_seed(5)).sample()
    b = ImageSampler("RandomCoordinate", grid, None, 100, generator=torch.Generator().manual_seed(5)).sample()
    c = ImageSampler("RandomCoordinate", grid, None, 100, generator=torch.Generator().manual_seed(6)).sample()
    assert torch.equal(a, b) and not torch.equal(a, c)

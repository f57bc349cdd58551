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
    # elastix's ImageGridSampler centres the grid: y has 16 voxels, 4 samples 4 apart span 13, start (16 - 13) // 2
    assert torch.all(idx[:, 1].round() % 4 == 1) and torch.allclose(idx, idx.round(), atol=1e-9)


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


def test_exact_gradient_sampler_is_elastix_grid_over_the_mask_box():
    from impactreg.sampling import exact_gradient_sampler

    grid = Grid((40, 30, 20), np.array([1.0, 2.0, 3.0]), np.zeros(3), np.eye(3))
    assert exact_gradient_sampler(grid, None, 100000).sample().shape[0] == 24000  # fewer voxels than asked: all
    mask = torch.zeros(20, 30, 40, dtype=torch.bool)
    mask[4:12, 5:25, 7:31] = True  # box 24 x 20 x 8 voxels = 3840
    points = exact_gradient_sampler(grid, mask, 480).sample()  # (3840 / 480)^(1/3) = 2
    index = grid.world_to_index(points.double()).round().long()
    assert points.shape[0] == 12 * 10 * 4
    assert index[:, 0].min() == 7 and index[:, 1].min() == 5 and index[:, 2].min() == 4
    assert bool((index[:, 0] - 7).remainder(2).eq(0).all())


def test_grid_sample_spacing_per_level_and_axis_as_elastix_reads_it():
    from impactreg.keys import LevelView
    from impactreg.parameters import ParameterMap
    from impactreg.sampling import GridSampler

    def spacing(values, level, dim):
        pm = ParameterMap({"ImageSampler": "Grid", "NumberOfResolutions": 2, "SampleGridSpacing": values})
        return GridSampler().grid_spacing(LevelView(pm, level), dim)

    assert spacing([4, 4, 8, 2, 2, 2], 0, 3) == [4, 4, 8]
    assert spacing([4, 4, 8, 3, 3, 3], 1, 3) == [3, 3, 3]
    # entry level x D + d, else 2: elastix's GridSampler::BeforeEachResolution
    assert spacing([4], 0, 3) == [4, 2, 2] and spacing([4], 1, 3) == [2, 2, 2]
    assert spacing([3, 5], 0, 2) == [3, 5] and spacing([3, 5], 1, 2) == [2, 2]
    assert spacing([3, 5], 0, 3) == [3, 5, 2]


def test_samplers_without_a_mask_keep_to_the_fixed_image_region():
    """elastix's fixed image region (start, size) bounds every sampler, with or without a voxel list."""
    from impactreg.sampling import ImageSampler

    grid = Grid((9, 8, 6), (1.0, 2.0, 3.0), (0.0, 0.0, 0.0), np.eye(3))
    region = (np.array([1, 0, 2]), np.array([7, 8, 3]))
    inside = lambda idx: ((idx >= region[0]) & (idx < region[0] + region[1])).all(axis=1)  # noqa: E731
    for kind in ("Random", "RandomCoordinate", "Full", "Grid"):
        sampler = ImageSampler(kind, grid, None, 3000, grid_spacing=(2,), generator=torch.Generator().manual_seed(1),
                               region=region)
        idx = grid.world_to_index(sampler.sample()).numpy()
        assert inside(np.round(idx)).all(), kind
        if kind == "Full":
            assert len(idx) == 7 * 8 * 3
        if kind == "Random":  # every voxel of the region is drawn
            assert len({tuple(v) for v in np.round(idx).astype(int)}) == 7 * 8 * 3

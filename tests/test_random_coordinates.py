"""RandomCoordinate draws continuous positions between the outermost voxel centres, as elastix's
ImageRandomCoordinateSampler does (uniform over [0, size - 1] per axis): a sample in the outer half
voxel would compare an extrapolated, flat fixed value and bias the optimum on coarse voxels."""
from __future__ import annotations

import torch

from impactreg.geometry import Grid
from impactreg.sampling import ImageSampler
from test_geometry import oblique

GRID = Grid((9, 7, 5), (1.5, 2.0, 5.0), (5.0, -7.0, 11.0), oblique(3, 4))


def indices(mask=None, n=40000):
    sampler = ImageSampler("RandomCoordinate", GRID, mask, n, generator=torch.Generator().manual_seed(3),
                           dtype=torch.float64)
    return GRID.world_to_index(sampler.sample())


def test_samples_cover_the_voxel_centre_box_uniformly():
    idx = indices()
    last = torch.tensor(GRID.size, dtype=torch.float64) - 1
    assert bool((idx >= -1e-9).all()) and bool((idx <= last + 1e-9).all())
    # uniform on [0, n - 1]: mean (n - 1) / 2, variance (n - 1)^2 / 12, and the outer quarter voxels are reached
    torch.testing.assert_close(idx.mean(0), last / 2, atol=0.05, rtol=0)
    torch.testing.assert_close(idx.var(0), last ** 2 / 12, atol=0.0, rtol=0.03)
    assert bool((idx.min(0).values < 0.01).all()) and bool((idx.max(0).values > last - 0.01).all())


def test_masked_samples_stay_near_mask_voxels_and_inside_the_centre_box():
    mask = torch.zeros(GRID.shape, dtype=torch.bool)
    mask[0:2, 3:5, 6:9] = True  # touches the first z slice and the last x column
    idx = indices(mask, 5000)
    last = torch.tensor(GRID.size, dtype=torch.float64) - 1
    assert bool((idx >= -1e-9).all()) and bool((idx <= last + 1e-9).all())
    voxel = torch.floor(idx + 0.5).long()
    assert bool(mask[voxel[:, 2], voxel[:, 1], voxel[:, 0]].all())
    assert float((idx - idx.round()).abs().max()) > 0.4  # still continuous inside the image

"""The RandomSparseMask sampler: random voxels of the fixed mask only, seeded, and a mask required as in elastix."""
import numpy as np
import pytest
import torch

from impactreg import ParameterError, register
from impactreg.image import Image
from impactreg.keys import LevelView
from impactreg.parameters import ParameterMap
from impactreg.sampling import RandomSparseMaskSampler
from test_sampling import make_grid


def draw(seed: int, mask, text="(NumberOfSpatialSamples 400)\n"):
    sampler = RandomSparseMaskSampler()
    sampler.begin_level(LevelView(ParameterMap.from_text(text), 0), make_grid(), mask, torch.Generator().manual_seed(seed),
                        "cpu", torch.float64)
    return sampler


def test_samples_are_mask_voxels_and_follow_the_seed():
    grid = make_grid()
    mask = torch.zeros(grid.shape, dtype=torch.bool)
    mask[2:5, 3:6, 4:12] = True
    mask[9, 12, 17] = True  # a lone voxel far away: drawn too
    points = torch.cat([draw(1, mask).sample() for _ in range(3)])
    index = grid.world_to_index(points)
    assert float((index - index.round()).abs().max()) < 1e-9  # voxel centres
    voxel = index.round().long()
    assert bool(mask[voxel[:, 2], voxel[:, 1], voxel[:, 0]].all())
    assert len({tuple(v) for v in voxel.tolist()}) > 60  # spread over the mask's 73 voxels
    assert torch.equal(draw(7, mask).sample(), draw(7, mask).sample())
    assert not torch.equal(draw(7, mask).sample(), draw(8, mask).sample())
    sampler = draw(7, mask, "(NumberOfSpatialSamples 400)\n(NewSamplesEveryIteration \"true\")\n")
    assert sampler.new_samples and not torch.equal(sampler.sample(), sampler.sample())


def test_a_mask_is_required_as_in_elastix():
    with pytest.raises(ParameterError, match="needs one: give -fMask"):
        draw(1, None)


def test_registration_with_the_sparse_mask_sampler():
    grid = make_grid()
    rng = np.random.default_rng(0)
    data = torch.from_numpy(rng.normal(size=(1,) + grid.shape).astype(np.float32))
    image = Image(data, grid)
    mask = torch.zeros((1,) + grid.shape)
    mask[0, 3:9, 4:12, 5:15] = 1
    parameter_map = {"Transform": "TranslationTransform", "Metric": "AdvancedMeanSquares", "ImageSampler": "RandomSparseMask",
                     "NumberOfResolutions": "1", "MaximumNumberOfIterations": "3", "NumberOfSpatialSamples": "200"}
    result = register(image, image, parameter_map, fixed_mask=Image(mask, grid))
    assert result.stages[0].levels[0].iterations == 3
    with pytest.raises(ParameterError, match="RandomSparseMask"):
        register(image, image, parameter_map)

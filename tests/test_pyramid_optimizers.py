import numpy as np
import pytest
import SimpleITK as sitk
import torch

from impactreg.filters import gaussian_smooth
from impactreg.geometry import Grid
from impactreg.image import Image
from impactreg.parameters import ParameterMap
from impactreg.engine.build import build_pyramid
from impactreg import register
from test_geometry import oblique


def image3d(seed=0):
    grid = Grid((21, 18, 15), (1.2, 0.8, 2.0), (3.0, -4.0, 10.0), oblique(3, seed))
    data = torch.from_numpy(np.random.default_rng(seed).normal(size=(1, *grid.shape))).float()
    return Image(data, grid)


def test_shrunk_grids_match_itk():
    image = image3d()
    sitk_image = image.to_sitk("float32")
    shrunk = sitk.Shrink(sitk_image, [2, 3, 2])
    grid = image.grid.shrunk([2, 3, 2], centred=True)
    assert grid.size == shrunk.GetSize()
    np.testing.assert_allclose(grid.origin, shrunk.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(grid.spacing, shrunk.GetSpacing(), atol=1e-12)
    generic = image.grid.shrunk([2, 2, 2], centred=False)  # first voxel covers the first block
    np.testing.assert_allclose(generic.origin, image.grid.index_to_world(np.array([0.5, 0.5, 0.5])), atol=1e-9)


def test_gaussian_smoothing_in_mm_matches_itk():
    image = image3d(1)
    sigma = np.array([1.5, 2.0, 3.0])
    ours = gaussian_smooth(image, sigma).data[0].numpy()
    theirs = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image.to_sitk("float32"), sigma.tolist(), False))
    inner = (slice(4, -4), slice(4, -4), slice(4, -4))
    assert np.abs(ours - theirs)[inner].max() < 0.02 * np.abs(theirs).max()


@pytest.mark.parametrize("kind", ["Smoothing", "Recursive", "Shrinking", "Generic"])
def test_pyramid_levels(kind):
    image = image3d(2)
    pm = ParameterMap({"NumberOfResolutions": 3, "FixedImagePyramid": f"Fixed{kind}ImagePyramid",
                       "FixedImagePyramidSchedule": [4, 4, 2, 2, 2, 1, 1, 1, 1]})
    pyramid = build_pyramid("Fixed", image, pm)
    levels = [pyramid.level(level) for level in range(3)]
    if kind == "Smoothing":
        assert all(lv.grid == image.grid for lv in levels)
        assert levels[0].data.std() < levels[2].data.std()
    else:
        np.testing.assert_allclose(levels[0].grid.spacing, image.grid.spacing * [4, 4, 2])
        assert levels[1].grid.size == (10, 9, 15)
        assert levels[2].grid.same_as(image.grid)


@pytest.mark.parametrize("optimizer,extra", [
    ("StandardGradientDescent", {"SP_a": 2000.0}),
    ("RegularStepGradientDescent", {"MaximumStepLength": 2.0}),
    ("Adam", {"LearningRate": 0.5}),
])
def test_other_optimizers_reduce_the_metric(optimizer, extra):
    grid = Grid((48, 40), (1.0, 1.0), (0.0, 0.0), np.eye(2))
    idx = grid.voxel_indices().numpy()
    blob = lambda c: np.exp(-((idx - c) ** 2).sum(1) / 40.0).reshape(grid.shape)  # noqa: E731
    fixed = Image(torch.from_numpy(blob(np.array([22.0, 20.0])))[None].float(), grid)
    moving = Image(torch.from_numpy(blob(np.array([25.0, 18.0])))[None].float(), grid)
    params = dict({"Transform": "TranslationTransform", "Metric": "AdvancedMeanSquares", "NumberOfResolutions": 1,
                   "MaximumNumberOfIterations": 200, "ImageSampler": "Full", "Optimizer": optimizer,
                   "AutomaticParameterEstimation": "false"}, **extra)
    result = register(fixed, moving, [params], seed=0)
    np.testing.assert_allclose(result.transform.parameters.numpy(), [3.0, -2.0], atol=0.3)


@pytest.mark.parametrize("dim, size", [(2, (37, 30)), (3, (21, 18, 15)), (3, (20, 19, 7))])
@pytest.mark.parametrize("ratio", [(2, 2, 2), (4, 2, 1), (1, 2, 4), (3, 3, 1)])
def test_smoothed_shrink_keeps_the_voxels_of_smoothing_then_shrinking(dim, size, ratio):
    """The recursive pyramid smooths only the voxels its shrink keeps: bit for bit the same image (compiled
    kernels; the torch twins to rounding)."""
    from impactreg.compute import dispatch
    from impactreg.pyramid import discrete_gaussian, itk_shrink, smoothed_shrink

    ratio = np.array(ratio[:dim])
    variance = np.where(ratio != 1, (0.5 * ratio) ** 2, 0.0)
    grid = Grid(size, np.array([1.1, 0.9, 2.0])[:dim], np.zeros(dim), np.eye(dim))
    image = Image(torch.rand(1, *reversed(size), generator=torch.Generator().manual_seed(0)), grid)
    fast = smoothed_shrink(image, variance, ratio)
    full = itk_shrink(discrete_gaussian(image, variance), ratio)
    assert fast.grid.size == full.grid.size and np.allclose(fast.grid.origin, full.grid.origin)
    if dispatch.ENABLED:
        assert torch.equal(fast.data, full.data)
    torch.testing.assert_close(fast.data, full.data, rtol=0, atol=1e-6)

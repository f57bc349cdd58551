"""Feature maps that carry their validity and are computed along shared axes (features/maps.py), as
IMPACT Static mode, its map updates and Jacobian mode's fixed patches use them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from impactreg.geometry import Grid
from impactreg.image import Image
from impactreg.parameters import ParameterMap
from impactreg.sampling import ImageSampler
from impactreg.transforms import TranslationTransform

from test_impact import Smooth2D, blobs, evaluate, impact_metric  # the same small images and helpers

MIND_REACH = 3  # MIND/R1D2: r + d voxels


def mind_map(mode="Static", **extra) -> ParameterMap:
    entries = {"ImpactModelsPath0": "MIND/R1D2", "ImpactDimension0": 2, "ImpactPatchSize0": [0, 0],
               "ImpactVoxelSize0": [1, 1], "ImpactDistance0": "L2", "ImpactMode": mode}
    entries.update(extra)
    return ParameterMap(entries)


def crop(image: Image, x0: int, x1: int, y0: int, y1: int) -> Image:
    """A part of ``image`` at the same world positions."""
    return Image(image.data[:, y0:y1, x0:x1].clone(), image.grid.region([x0, y0], (x1 - x0, y1 - y0)))


def grid_points(image: Image, step: float = 1.0) -> torch.Tensor:
    """Every ``step`` mm over the image's voxel-centre extent, between voxel centres."""
    axes = [torch.arange(0.25, n - 1, step, dtype=torch.float64) for n in image.grid.size]
    xy = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, image.dim)
    return image.grid.index_to_world(xy).to(torch.float32)


def well_inside(image: Image, points: torch.Tensor, reach: float) -> torch.Tensor:
    """Points whose continuous index lies within [reach, n - 1 - reach] on every axis."""
    u = image.grid.world_to_index(points.double())
    upper = torch.tensor(image.grid.size, dtype=torch.float64) - 1 - reach
    return ((u >= reach - 1e-6) & (u <= upper + 1e-6)).all(-1)


def test_voxel_size_grid_stays_inside_its_image():
    grid = Grid((11, 8), (1.0, 1.0), (2.0, -3.0), np.eye(2))
    coarse = grid.with_voxel_size(3.0)
    assert coarse.size == (3, 2)  # whole 3 mm voxels: rounding 11 / 3 up would reach 1 mm past the image
    low, high = grid.extent_corners().min(0), grid.extent_corners().max(0)
    assert np.all(coarse.extent_corners().min(0) >= low - 1e-9) and np.all(coarse.extent_corners().max(0) <= high + 1e-9)
    np.testing.assert_allclose(coarse.centre, grid.centre, atol=1e-9)  # centred in the box


def test_grid_along_flipped_axes_is_the_same_box_and_oblique_corners_are_invalid():
    from impactreg.features.maps import feature_grid, input_validity

    flipped = Grid((12, 10), (1.0, 2.0), (11.0, 0.0), np.diag([-1.0, 1.0]))
    along = feature_grid(flipped, np.eye(2), (1.0, 2.0))
    assert along.size == (12, 10)
    np.testing.assert_allclose(along.corners().min(0), flipped.corners().min(0), atol=1e-9)
    assert bool(input_validity(flipped, None, along).all())
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    oblique = Grid((20, 20), (1.0, 1.0), (0.0, 0.0), np.array([[c, -s], [s, c]]))
    valid = input_validity(oblique, None, feature_grid(oblique, np.eye(2), (1.0, 1.0)))
    assert not valid[0, 0] and not valid[-1, -1] and valid[valid.shape[0] // 2, valid.shape[1] // 2]


def test_layer_validity_erodes_by_the_receptive_field_and_pools_by_the_stride():
    from impactreg.features.maps import layer_validity

    valid = torch.ones(12, 10, dtype=torch.bool)
    valid[:, 8:] = False
    full = layer_validity(valid, (2, 2), (1, 1), (12, 10))
    assert full[2:10, 2:6].all() and not full[:2].any() and not full[:, 6:].any()
    strided = layer_validity(valid, (0, 0), (2, 2), (6, 5))
    assert strided[:, :4].all() and not strided[:, 4].any()


def test_receptive_fields_come_from_the_catalogue_or_are_measured(tmp_path):
    from impactreg.features import load_extractor
    from impactreg.features.maps import half_widths, shared_direction

    path = tmp_path / "smooth.pt"
    torch.jit.trace(Smooth2D(), torch.rand(1, 1, 5, 5), strict=False).save(str(path))
    assert half_widths(load_extractor(str(path), 2), [0, 1], 2, (0, 0), "cpu") == [1, 2]  # one, two 3x3 convs
    assert half_widths(load_extractor("MIND/R2D3", 3), [0], 1, (0, 0, 0), "cpu") == [5]
    fixed = Grid((8, 8, 8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.diag([1.0, -1.0, 1.0]))
    np.testing.assert_array_equal(shared_direction(fixed, "TS/M730_2_Layers.pt", 3), np.diag([-1.0, -1.0, 1.0]))  # RAS
    np.testing.assert_array_equal(shared_direction(fixed, "MIND/R1D2", 3), fixed.direction)


def test_a_copy_stored_with_x_flipped_matches_at_the_truth():
    image = blobs(7)
    n, spacing = image.grid.size[0], image.grid.spacing[0]
    origin = image.grid.origin + np.array([(n - 1) * spacing, 0.0])
    flipped = Image(image.data.flip(-1).clone(), Grid(image.grid.size, image.grid.spacing, origin, np.diag([-1.0, 1.0])))
    metric = impact_metric(mind_map(), 0, image, flipped, None, 3, torch.Generator().manual_seed(0))
    points = grid_points(image, 2.0)
    aligned, _, valid = evaluate(metric, TranslationTransform(2), points)
    shifted = evaluate(metric, TranslationTransform(2, [1.5, 0.0]), points)[0]
    assert valid > 100 and shifted > 1e-3
    assert aligned < 1e-4 * shifted  # channels along the same axes: the maps agree


def test_static_samples_on_invalid_features_do_not_count():
    fixed = blobs(8)
    moving = crop(fixed, 10, 38, 8, 32)  # a smaller field of view, same world positions
    metric = impact_metric(mind_map(), 0, fixed, moving, None, 3, torch.Generator().manual_seed(0))
    points = grid_points(fixed)
    _, _, valid = evaluate(metric, TranslationTransform(2), points)
    expected = well_inside(moving, points, MIND_REACH) & well_inside(fixed, points, MIND_REACH)
    assert valid == int(expected.sum()) > 100  # no sample on features made up from padding


def test_feature_map_updates_count_only_samples_mapped_inside_the_moving_image():
    fixed = blobs(9)
    moving = crop(fixed, 10, 38, 8, 32)
    metric = impact_metric(mind_map(ImpactFeaturesMapUpdateInterval=1), 0, fixed, moving, None, 3,
                           torch.Generator().manual_seed(0))
    points = grid_points(fixed)
    transform = TranslationTransform(2, [1.5, -0.5])
    value_before, _, before = evaluate(metric, transform, points)
    metric.end_iteration(0)
    value, _, after = evaluate(metric, transform, points)
    assert metric.mode.reference is not None
    inside = well_inside(moving, transform.map(points.double()).float(), 0.0)
    assert after <= int(inside.sum()) and abs(after - before) <= 0.1 * before
    assert abs(value - value_before) < 0.2 * value_before  # the same comparison, from maps of the warped image


def test_jacobian_fixed_patches_must_lie_inside_the_fixed_image():
    moving = blobs(10)
    fixed = crop(moving, 8, 40, 6, 34)  # the moving image covers every fixed patch
    metric = impact_metric(mind_map("Jacobian", ImpactPatchSize0=[7, 7]), 0, fixed, moving, None, 1,
                           torch.Generator().manual_seed(0))
    points = grid_points(fixed, 2.0)
    _, _, valid = evaluate(metric, TranslationTransform(2), points)
    # every patch point inside the fixed image by ITK's rule (index -0.5 .. n - 0.5)
    assert valid == int(well_inside(fixed, points, MIND_REACH - 0.5).sum()) > 10


@pytest.mark.parametrize("entries,order", [({}, 3), ({"ImpactFeatureMapInterpolationOrder": 1}, 1),
                                           ({"FeatureMapInterpolationOrder": 0}, 0)])
def test_feature_maps_are_cubic_by_default(entries, order):
    image = blobs(11)
    metric = impact_metric(mind_map(**entries), 0, image, image, None, 1, torch.Generator())
    assert metric.mode.fixed_samplers[0][0].values.order == order
    assert metric.mode.moving_samplers[0][0].values.order == order


def test_static_features_must_see_only_the_fixed_mask():
    from impactreg.keys import LevelView
    from impactreg.metrics.impact import ImpactMetric
    from impactreg.metrics.protocol import LevelContext

    image = blobs(12)
    mask = torch.zeros(image.grid.shape, dtype=torch.bool)
    mask[8:30, 10:36] = True  # y 8..29, x 10..35
    metric = ImpactMetric()
    metric.begin_level(LevelContext(LevelView(mind_map(), 0), image, image, mask, None, 3, torch.Generator(),
                                    torch.device("cpu")))
    points = grid_points(image)
    _, _, valid = evaluate(metric, TranslationTransform(2), points)
    region = crop(image, 10, 36, 8, 30)
    assert valid == int(well_inside(region, points, MIND_REACH).sum()) > 50


class Oriented2D(torch.nn.Module):
    """A new-signature model that reorients its input by ``direction`` (flips x when the x axis points
    to -x, as TotalSegmentator's exports do) before an asymmetric convolution."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x, nb_layers: torch.Tensor, stats: torch.Tensor, direction: torch.Tensor):
        flip = bool(direction[0, 0] < 0)
        if flip:
            x = x.flip(-1)
        y = torch.tanh(self.conv(x))
        if flip:
            y = y.flip(-1)
        return [y]


@pytest.mark.parametrize("mode,patch", [("Static", [0, 0]), ("Jacobian", [5, 5])])
def test_models_that_reorient_see_both_images_along_the_same_axes(mode, patch, tmp_path):
    path = tmp_path / "oriented.pt"
    torch.jit.script(Oriented2D()).save(str(path))
    image = blobs(13)
    n, spacing = image.grid.size[0], image.grid.spacing[0]
    origin = image.grid.origin + np.array([(n - 1) * spacing, 0.0])
    flipped = Image(image.data.flip(-1).clone(), Grid(image.grid.size, image.grid.spacing, origin, np.diag([-1.0, 1.0])))
    pm = ParameterMap({"ImpactModelsPath0": str(path), "ImpactDimension0": 2, "ImpactPatchSize0": patch,
                       "ImpactVoxelSize0": [1, 1], "ImpactMode": mode, "ImpactNormalization0": "zscore",
                       "ImpactSubsetFeatures0": 0})
    metric = impact_metric(pm, 0, image, flipped, None, 3, torch.Generator().manual_seed(0))
    points = grid_points(image, 2.0)
    aligned = evaluate(metric, TranslationTransform(2), points)[0]
    shifted = evaluate(metric, TranslationTransform(2, [1.5, 0.0]), points)[0]
    assert aligned < 1e-3 * shifted

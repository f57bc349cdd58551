"""The Search initialisation: exhaustive translation (and rotation) search scored with mutual information."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from impactreg import register
from impactreg.errors import ParameterError
from impactreg.geometry import Grid
from impactreg.image import Image
from impactreg.transforms import AffineTransform, EulerTransform, SimilarityTransform
from impactreg.transforms.components import warn_if_reflection
from impactreg.transforms.initial_search import SearchSettings, euler_matrices, matrix_parameters, search
from impactreg.transforms.matrix import versor_matrix
from impactreg.warp import resample


def _body(size, spacing, seed=3) -> Image:
    """A smooth random 'anatomy': blobs of different intensity in an ellipsoid, zero outside."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((1, 1) + tuple(max(3, n // 6) for n in reversed(size)), generator=g)
    data = torch.nn.functional.interpolate(coarse, size=tuple(reversed(size)), mode="trilinear" if len(size) == 3
                                           else "bilinear", align_corners=False)[0, 0]
    axes = torch.meshgrid(*[torch.linspace(-1, 1, n) for n in reversed(size)], indexing="ij")
    inside = sum(a ** 2 for a in axes) < 0.9
    return Image((data * 100 * inside)[None].float(), Grid(size, (spacing,) * len(size), (0.0,) * len(size), np.eye(len(size))))


def _slab_pair():
    """Fixed: a whole 3D body; moving: an 8-slice slab of it, shifted in world (boxes apart) and with
    inverted contrast. Truth: x -> x + shift."""
    fixed = _body((36, 32, 48), 3.0)
    shift = np.array([9.0, -6.0, 400.0])  # the slab's world box lies far above the fixed box
    slab_start = 37  # the slab shows fixed slices 37..44
    grid = Grid((36, 32, 8), (3.0, 3.0, 3.0), fixed.grid.index_to_world(np.array([0.0, 0.0, slab_start])) + shift,
                np.eye(3))
    truth = EulerTransform(3, torch.tensor([0.0, 0.0, 0.0, *(-shift)]))  # moving point -> fixed point
    slab = resample(fixed, truth, grid, order=1)
    moving = Image(torch.where(slab.data > 0, 150.0 - slab.data, torch.zeros_like(slab.data)), grid)
    return fixed, moving, shift


def test_search_finds_a_slab_whose_box_lies_far_away():
    fixed, moving, shift = _slab_pair()
    found = search(fixed, moving, fixed.grid.centre, SearchSettings(step_mm=12.0))
    assert found is not None
    np.testing.assert_allclose(found.translation.numpy(), shift, atol=3.5)  # the last round's step is 3 mm
    centres = moving.grid.centre - fixed.grid.centre
    assert np.abs(centres - shift).max() > 40  # what aligning the centres would start from


def test_search_finds_a_rotation_when_asked():
    fixed = _body((64, 64), 2.0, seed=5)
    angle = math.radians(20.0)
    truth = EulerTransform(2, torch.tensor([angle, 6.0, -4.0]), torch.tensor(fixed.grid.centre))
    moving = resample(fixed, _inverse(truth), fixed.grid, order=1)
    found = search(fixed, moving, fixed.grid.centre, SearchSettings(step_mm=8.0, rotation_degrees=30.0,
                                                                  rotation_step_degrees=10.0))
    assert abs(math.degrees(float(found.angles[0])) - 20.0) <= 5.0
    np.testing.assert_allclose(found.translation.numpy(), [6.0, -4.0], atol=3.0)


def _inverse(transform: EulerTransform) -> EulerTransform:
    angle, t = transform.parameters[0], transform.parameters[1:]
    c = transform.center
    rotation = euler_matrices(transform.parameters[:1][None])[0]
    return EulerTransform(2, torch.cat([-angle[None], -(rotation.T @ t)]), c)


def test_search_parameters_reproduce_the_rotation_for_every_matrix_kind():
    angles = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    rotation = euler_matrices(angles[None])[0]
    t = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    centre = torch.tensor([5.0, -2.0, 7.0], dtype=torch.float64)
    points = torch.randn(10, 3, dtype=torch.float64)
    expected = (points - centre) @ rotation.T + centre + t
    for kind in (EulerTransform, SimilarityTransform, AffineTransform):
        transform = kind(3, None, centre)
        set_ = transform.with_parameters(matrix_parameters(transform, rotation, angles, t))
        torch.testing.assert_close(set_.map(points), expected)
    torch.testing.assert_close(versor_matrix(matrix_parameters(SimilarityTransform(3), rotation, angles, t)[:3]), rotation)


def test_register_with_search_starts_where_the_centres_cannot(tmp_path):
    fixed, moving, shift = _slab_pair()
    stage = {"Transform": "TranslationTransform", "Metric": "AdvancedMattesMutualInformation", "NumberOfResolutions": 1,
             "MaximumNumberOfIterations": 30, "NumberOfSpatialSamples": 1000, "ImageSampler": "RandomCoordinate",
             "AutomaticTransformInitialization": "true", "AutomaticTransformInitializationMethod": "Search",
             "AutomaticTransformInitializationSearchStep": 12, "RequiredRatioOfValidSamples": 0.05}
    result = register(fixed, moving, [stage], seed=0)
    np.testing.assert_allclose(result.transform.parameters.numpy(), shift, atol=3.0)


def test_search_range_needs_one_or_one_per_axis():
    fixed, moving, _ = _slab_pair()
    stage = {"Transform": "TranslationTransform", "Metric": "AdvancedMattesMutualInformation", "NumberOfResolutions": 1,
             "MaximumNumberOfIterations": 1, "AutomaticTransformInitialization": "true",
             "AutomaticTransformInitializationMethod": "Search", "AutomaticTransformInitializationSearchRange": [10, 10]}
    with pytest.raises(ParameterError, match="SearchRange"):
        register(fixed, moving, [stage], seed=0)


def test_a_reflection_is_one_warning_line(caplog):
    mirror = AffineTransform(3, torch.tensor([-1.0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0], dtype=torch.float64))
    with caplog.at_level(logging.WARNING, logger="impactreg"):
        warn_if_reflection(0, AffineTransform(3))
        assert not caplog.records
        warn_if_reflection(0, mirror)
    assert len(caplog.records) == 1 and "reflection" in caplog.records[0].getMessage()
    assert "\n" not in caplog.records[0].getMessage()

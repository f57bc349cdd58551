"""CorrespondingPointsEuclideanDistanceMetric and DisplacementMagnitudePenalty: values and exact
gradients (float64, finite differences), landmark-guided registration (API and -fp/-mp) and the
inversion of an initial transform."""
import numpy as np
import pytest
import torch

from impactreg import InputError, register
from impactreg.geometry import Grid
from impactreg.image import Image, write_image
from impactreg.keys import LevelView
from impactreg.metrics.penalties import DisplacementMagnitudePenalty
from impactreg.metrics.points import CorrespondingPointsEuclideanDistance
from impactreg.metrics.protocol import LevelContext, Samples
from impactreg.parameters import ParameterMap
from impactreg.points import write_points
from impactreg.transforms import AffineTransform, BSplineTransform, CombinationTransform, EulerTransform

GRID = Grid((40, 36), (1.0, 1.25), (-5.0, 3.0), np.eye(2))


def blobs(grid=GRID, seed=0):
    rng = np.random.default_rng(seed)
    points = grid.voxel_points().numpy()
    image = np.zeros(len(points))
    lo, hi = points.min(0), points.max(0)
    for _ in range(10):
        centre = rng.uniform(lo + 5, hi - 5)
        image += rng.uniform(50, 100) * np.exp(-((points - centre) ** 2).sum(1) / (2 * rng.uniform(3, 6) ** 2))
    return Image(torch.from_numpy(image.reshape((1,) + grid.shape).astype(np.float32)), grid)


def context(fixed_points=None, moving_points=None, moving_mask=None) -> LevelContext:
    image = blobs()
    return LevelContext(LevelView(ParameterMap({}), 0), image, image, None, moving_mask, 1, torch.Generator(),
                        torch.device("cpu"), None, None, fixed_points, moving_points)


def composed_spline(seed=1):
    affine = AffineTransform(2, [1.05, 0.1, -0.05, 0.95, 1.0, -2.0], GRID.centre)
    spline = BSplineTransform.over_image(GRID, 8.0, initial=affine)
    mu = torch.randn(spline.number_of_parameters, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return CombinationTransform(affine, spline.with_parameters(mu))


def check_gradient(metric, transform, samples, indices, h=1e-6):
    value, gradient, _ = metric.value_and_gradient(transform, samples)
    mu = transform.parameters
    for i in indices:
        e = torch.zeros_like(mu)
        e[i] = h
        up = metric.value_and_gradient(transform.with_parameters(mu + e), samples)[0]
        down = metric.value_and_gradient(transform.with_parameters(mu - e), samples)[0]
        assert float(gradient[i]) == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=1e-9), i
    return value


def test_landmark_distance_value_and_gradient():
    fixed = torch.tensor([[2.0, 10.0], [20.0, 15.0], [10.0, 40.0], [30.0, 30.0]], dtype=torch.float64)
    moving = fixed + torch.tensor([[1.0, -2.0], [0.5, 0.5], [-3.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    metric = CorrespondingPointsEuclideanDistance()
    metric.begin_level(context(fixed, moving))
    transform = composed_spline()
    expected = float((moving - transform.map(fixed)).norm(dim=1).mean())
    value = check_gradient(metric, transform, None, range(0, transform.number_of_parameters, 7))
    assert value == pytest.approx(expected, rel=1e-12)
    affine = AffineTransform(2, [1.0, 0.02, 0.01, 1.0, 0.3, -0.2], GRID.centre)
    check_gradient(metric, affine, None, range(6))
    # a landmark already on its target adds no pull (elastix skips distances below machine epsilon)
    on_target = CorrespondingPointsEuclideanDistance()
    on_target.begin_level(context(fixed, fixed.clone()))
    value, gradient, counted = on_target.value_and_gradient(AffineTransform(2, None, GRID.centre), None)
    assert value == 0.0 and not bool(gradient.any()) and counted == 4


def test_landmarks_outside_the_moving_mask_do_not_count():
    fixed = torch.tensor([[2.0, 10.0], [20.0, 15.0], [10.0, 40.0]], dtype=torch.float64)
    moving = fixed + 1.0
    mask = torch.zeros((1,) + GRID.shape)
    mask[0, :, :15] = 1.0  # x < 10 mm
    metric = CorrespondingPointsEuclideanDistance()
    metric.begin_level(context(fixed, moving, Image(mask, GRID)))
    value, _, counted = metric.value_and_gradient(AffineTransform(2, None, GRID.centre), None)
    assert counted == 1 and value == pytest.approx(np.sqrt(2.0))


def test_missing_landmarks_are_one_clear_error():
    with pytest.raises(InputError, match="-fp and -mp"):
        CorrespondingPointsEuclideanDistance().begin_level(context())


def test_displacement_magnitude_value_and_gradient():
    points = GRID.index_to_world(torch.rand(300, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 30)
    samples = Samples(points, torch.zeros(300, dtype=torch.float64))
    metric = DisplacementMagnitudePenalty()
    metric.begin_level(context())
    transform = composed_spline()
    expected = float(((transform.map(points) - points) ** 2).sum(1).mean())
    value = check_gradient(metric, transform, samples, range(0, transform.number_of_parameters, 5))
    assert value == pytest.approx(expected, rel=1e-12)
    check_gradient(metric, EulerTransform(2, [0.1, 2.0, -1.0], GRID.centre), samples, range(3))


def test_displacement_penalty_inverts_the_initial_transform():
    """elastix's use: with the transform to invert as initial transform ("Compose"), minimising
    ||T(x) - x||^2 makes the optimised transform its inverse."""
    image = blobs()
    initial = EulerTransform(2, [0.05, 2.0, -1.5], GRID.centre)
    parameter_map = {"Transform": "EulerTransform", "Metric": "DisplacementMagnitudePenalty", "NumberOfResolutions": "1",
                     "ImageSampler": "Grid", "Optimizer": "QuasiNewtonLBFGS", "MaximumNumberOfIterations": "50"}
    result = register(image, image, parameter_map, initial_transform=initial)
    points = GRID.voxel_points()
    assert float((result.transform.map(points) - points).norm(dim=1).max()) < 1e-4
    inverse = result.stages[0].transform.current
    assert float((inverse.map(initial.map(points)) - points).abs().max()) < 1e-4


KNOWN_AFFINE = np.array([[1.04, 0.07], [-0.05, 0.97]]), np.array([2.5, -1.5])
FIXED_LANDMARKS = np.array([[0.0, 8.0], [28.0, 10.0], [12.0, 40.0], [-2.0, 35.0], [30.0, 42.0]])


def known_pair():
    matrix, shift = KNOWN_AFFINE
    return FIXED_LANDMARKS, FIXED_LANDMARKS @ matrix.T + shift


@pytest.mark.parametrize("optimizer", ["QuasiNewtonLBFGS", "AdaptiveStochasticGradientDescent"])
def test_landmark_registration_recovers_a_known_affine(optimizer):
    fixed_points, moving_points = known_pair()
    image = blobs()
    parameter_map = {"Transform": "AffineTransform", "Metric": "CorrespondingPointsEuclideanDistanceMetric",
                     "Optimizer": optimizer, "NumberOfResolutions": "1", "MaximumNumberOfIterations": "150",
                     "ImageSampler": "Grid", "SampleGridSpacing": "4", "AutomaticScalesEstimation": "true"}
    result = register(image, image, parameter_map, fixed_points=fixed_points, moving_points=moving_points)
    mapped = result.transform.map(torch.from_numpy(fixed_points)).numpy()
    assert np.abs(mapped - moving_points).max() < (1e-6 if optimizer == "QuasiNewtonLBFGS" else 0.05)


def test_cli_fp_mp_landmarks_guide_a_translation(tmp_path, capsys):
    """-fp/-mp as elastix takes them: a 'point' file and an 'index' file (indices of the moving image)."""
    from impactreg.cli import main

    fixed_image, moving_image = blobs(), blobs(seed=3)
    write_image(fixed_image, tmp_path / "fixed.mha")
    write_image(moving_image, tmp_path / "moving.mha")
    moving_index = np.array([[9.0, 5.0], [30.0, 12.0], [20.0, 30.0], [4.0, 27.0], [33.0, 33.0]])
    moving_points = GRID.index_to_world(moving_index)
    fixed_points = moving_points - np.array([2.5, -1.75])
    write_points(tmp_path / "fixed.txt", fixed_points, "point")
    write_points(tmp_path / "moving.txt", moving_index, "index")
    (tmp_path / "map.txt").write_text(
        '(Registration "MultiMetricMultiResolutionRegistration")\n(Transform "TranslationTransform")\n'
        '(Metric "AdvancedMeanSquares" "CorrespondingPointsEuclideanDistanceMetric")\n(Metric0Weight 0.0)\n'
        '(Optimizer "QuasiNewtonLBFGS")\n(NumberOfResolutions 1)\n(MaximumNumberOfIterations 50)\n(ImageSampler "Full")\n')
    out = tmp_path / "out"
    run = ["register", "-f", tmp_path / "fixed.mha", "-m", tmp_path / "moving.mha", "-p", tmp_path / "map.txt",
           "-out", out, "-q"]
    assert main([str(a) for a in run + ["-fp", tmp_path / "fixed.txt", "-mp", tmp_path / "moving.txt"]]) == 0
    text = (out / "TransformParameters.0.txt").read_text()
    shift = [float(v) for v in text.split("(TransformParameters ")[1].split(")")[0].split()]
    np.testing.assert_allclose(shift, [2.5, -1.75], atol=1e-5)
    capsys.readouterr()
    write_points(tmp_path / "three.txt", fixed_points[:3], "point")
    for extra, message in ((["-fp", tmp_path / "fixed.txt"], "give -mp"),
                           (["-fp", tmp_path / "three.txt", "-mp", tmp_path / "moving.txt"], "do not correspond")):
        assert main([str(a) for a in run + extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err

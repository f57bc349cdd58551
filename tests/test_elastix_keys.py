"""elastix's rules for keys (ignored keys, --strict, fallbacks, schedules, one component per metric) and the
keys real maps use (random sample region, direction cosines off, result formats, ITK transform files,
relative weights, derivative scales, ASGD variants)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from impactreg import register, transform
from impactreg.cli import main
from impactreg.engine.cost import Cost
from impactreg.engine.itk_files import to_sitk
from impactreg.errors import ParameterError
from impactreg.geometry import Grid
from impactreg.image import Image, read_image, write_image
from impactreg.keys import LevelView
from impactreg.parameters import ParameterMap, parse_parameter_text
from impactreg.pyramid import GenericImagePyramid, RecursiveImagePyramid, SmoothingImagePyramid
from impactreg.sampling import RandomCoordinateSampler
from impactreg.transforms import BSplineTransform, CombinationTransform
from impactreg.transforms.elastix_files import read_transform_file
from impactreg.transforms.matrix import AffineTransform, EulerTransform


def _blob_pair(dim=2, direction=None, shift=(1.5, -1.0, 0.5)):
    size = (40, 36) if dim == 2 else (24, 22, 20)
    grid = Grid(size, np.full(dim, 1.5), np.full(dim, -3.0), np.eye(dim) if direction is None else direction)
    idx = grid.voxel_indices().numpy()
    centre = (np.asarray(size) - 1) / 2

    def image(offset):
        r = idx - centre - offset
        values = 100 * np.exp(-(r ** 2).sum(1) / 40.0) + 40 * np.exp(-((r - 3) ** 2).sum(1) / 8.0) + 10
        return Image(torch.from_numpy(values.reshape(grid.shape)).float()[None], grid)

    return image(np.zeros(dim)), image(np.asarray(shift[:dim]))


def _map(**entries):
    base = {"Transform": "TranslationTransform", "Metric": "AdvancedMeanSquares", "NumberOfResolutions": 1,
            "MaximumNumberOfIterations": 20, "ImageSampler": "Full", "AutomaticParameterEstimation": "true"}
    base.update(entries)
    return base


# ignored keys and --strict ----------------------------------------------------------------------------

def test_keys_elastix_ignores_are_one_warning_line_and_strict_refuses_them(caplog, tmp_path):
    entries = _map(FooBar="3", FixedImageBSplineInterpolatorOrder="1", MinimumStepLength="-4", SP_a="7")
    pm = ParameterMap(entries, "map.txt")
    assert set(pm.unknown) == {"FooBar", "FixedImageBSplineInterpolatorOrder"} and set(pm.unused) == {"MinimumStepLength"}
    assert pm.get("SP_a") == 7.0 and "MinimumStepLength" not in pm
    with caplog.at_level(logging.WARNING, logger="impactreg"):
        pm.warn_ignored()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("map.txt: ignored")
    assert "FixedImageBSplineInterpolatorOrder (did you mean FixedImageBSplineInterpolationOrder?)" in lines[0]
    assert "MinimumStepLength" in lines[0]
    with pytest.raises(ParameterError, match="unknown parameter 'FooBar'"):
        pm.warn_ignored(strict=True)
    with pytest.raises(ParameterError, match="MinimumStepLength takes a number >= 0"):  # strict validates every key
        ParameterMap({k: v for k, v in entries.items() if k not in ("FooBar", "FixedImageBSplineInterpolatorOrder")},
                     "map.txt", strict=True).warn_ignored(strict=True)


def test_cli_strict_flag(tmp_path, capsys):
    fixed, moving = _blob_pair()
    write_image(fixed, tmp_path / "f.mha")
    write_image(moving, tmp_path / "m.mha")
    (tmp_path / "p.txt").write_text('(Transform "TranslationTransform")\n(Metric "AdvancedMeanSquares")\n'
                                    '(NumberOfResolutions 1)\n(MaximumNumberOfIterations 3)\n(Transfrom "x")\n')
    args = ["register", "-f", str(tmp_path / "f.mha"), "-m", str(tmp_path / "m.mha"), "-p", str(tmp_path / "p.txt")]
    assert main(args + ["-out", str(tmp_path / "a")]) == 0
    assert "Transfrom (did you mean Transform?)" in capsys.readouterr().err
    assert main(args + ["-out", str(tmp_path / "b"), "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown parameter 'Transfrom'; did you mean 'Transform'" in err[0]


def test_a_missing_component_is_one_line_naming_it_and_the_file(tmp_path):
    path = tmp_path / "kappa.txt"
    path.write_text('(Transform "BSplineTransform")\n(Metric "AdvancedKappaStatistic")\n(UseFooBar "true")\n')
    with pytest.raises(ParameterError) as err:
        ParameterMap.from_file(path)
    text = str(err.value)
    assert str(path) in text and "impactreg has no Metric component 'AdvancedKappaStatistic'" in text and "\n" not in text


def test_a_repeated_key_is_an_error_as_in_elastix():
    with pytest.raises(ParameterError, match=r"p.txt:3: \(Metric ...\) is given a second time \(first at line 1\)"):
        parse_parameter_text('(Metric "AdvancedMeanSquares")\n(Transform "EulerTransform")\n(Metric "AdvancedMeanSquares")',
                             "p.txt")


def test_component_keys_take_one_value_per_metric():
    two = {"Metric": ["AdvancedMeanSquares", "TransformBendingEnergyPenalty"],
           "Registration": "MultiMetricMultiResolutionRegistration", "Transform": "BSplineTransform"}
    pm = ParameterMap(dict(two, ImageSampler=["Random", "Random"], Interpolator=["LinearInterpolator"] * 2,
                           FixedImagePyramid=["FixedSmoothingImagePyramid"] * 2))
    assert pm.get("ImageSampler") == "Random" and pm.get("Interpolator") == "LinearInterpolator"
    with pytest.raises(ParameterError, match="ImageSampler 'Random' 'Full'.*same for all metrics"):
        ParameterMap(dict(two, ImageSampler=["Random", "Full"]), "m.txt")


# fallbacks -----------------------------------------------------------------------------------------------

def _pyramid(cls, role="Fixed", levels=3, dim=2, **entries):
    image = Image(torch.rand(1, 32, 32), Grid((32, 32), (1.0, 1.0), (0.0, 0.0), np.eye(2)))
    return cls(role).build(image, ParameterMap(dict(entries, NumberOfResolutions=levels)), levels)


def test_pyramid_schedules_read_as_elastix(caplog):
    default = np.array([[4, 4], [2, 2], [1, 1]])
    with caplog.at_level(logging.WARNING, logger="impactreg"):
        short = _pyramid(RecursiveImagePyramid, ImagePyramidSchedule=[8, 4, 1])  # 3 values, 6 needed: default
    assert np.array_equal(short.factors, default) and "the default schedule is used" in caplog.text
    both = _pyramid(RecursiveImagePyramid, ImagePyramidSchedule=[4, 4, 2, 2, 1, 1], FixedImagePyramidSchedule=[8, 8, 2])
    assert np.array_equal(both.factors, [[8, 8], [2, 2], [1, 1]])  # Fixed overrides the entries it has
    clamped = _pyramid(RecursiveImagePyramid, ImagePyramidSchedule=[2, 0, 4, 2, 1, 1])
    assert np.array_equal(clamped.factors, [[2, 1], [2, 1], [1, 1]])  # ITK: >= 1, never above the previous level
    smoothing = _pyramid(SmoothingImagePyramid, ImagePyramidSchedule=[2, 0, 4, 2, 1, 1])
    assert np.array_equal(smoothing.factors, [[2, 0], [4, 2], [1, 1]])  # elastix's smoothing pyramid keeps them
    generic = _pyramid(GenericImagePyramid, ImagePyramidRescaleSchedule=[4, 4, 2, 2, 1, 1],
                       ImagePyramidSchedule=[2, 2, 2, 2, 1, 1], FixedImagePyramid="FixedGenericImagePyramid")
    assert np.array_equal(generic.rescale, [[2, 2], [2, 2], [1, 1]])  # the schedule wins over the rescale schedule
    np.testing.assert_allclose(generic.sigmas, [[1, 1], [1, 1], [0, 0]])


# keys real maps use ---------------------------------------------------------------------------------------

def test_random_sample_region_draws_each_iteration_in_one_box_of_the_given_size():
    grid = Grid((40, 30), (2.0, 1.0), (0.0, 0.0), np.eye(2))
    mask = torch.zeros(30, 40, dtype=torch.bool)
    mask[5:25, 4:36] = True
    pm = ParameterMap({"ImageSampler": "RandomCoordinate", "UseRandomSampleRegion": "true",
                       "SampleRegionSize": [20.0, 8.0], "NumberOfSpatialSamples": 300, "NumberOfResolutions": 1})
    sampler = RandomCoordinateSampler()
    sampler.begin_level(LevelView(pm, 0), grid, mask, torch.Generator().manual_seed(3), "cpu", torch.float64)
    boxes = []
    for _ in range(4):
        points = sampler.sample().numpy()
        index = points / grid.spacing
        assert points.shape == (300, 2) and np.all(np.ptp(points, axis=0) <= [20.0 + 1e-9, 8.0 + 1e-9])
        assert mask[tuple(np.round(index[:, ::-1]).astype(int).T)].all()
        boxes.append(points.min(axis=0))
    assert len({tuple(np.round(b, 3)) for b in boxes}) == 4  # a new box every draw
    with sampler.estimating():  # elastix's ASGD estimation samples the whole image
        assert np.ptp(sampler.sample().numpy(), axis=0)[0] > 40.0
    big = ParameterMap({"ImageSampler": "RandomCoordinate", "UseRandomSampleRegion": "true", "SampleRegionSize": 90.0})
    with pytest.raises(ParameterError, match="SampleRegionSize.*give a smaller SampleRegionSize"):
        RandomCoordinateSampler().begin_level(LevelView(big, 0), grid, None, torch.Generator(), "cpu", torch.float64)


def test_moving_image_derivative_scales_stop_motion_along_an_axis():
    fixed, moving = _blob_pair()
    scaled = register(fixed, moving, _map(MovingImageDerivativeScales=[1.0, 0.0]), seed=1).transform
    free = register(fixed, moving, _map(), seed=1).transform
    assert float(scaled.parameters[1]) == 0.0 and abs(float(free.parameters[1])) > 0.3
    assert float(scaled.parameters[0]) == pytest.approx(float(free.parameters[0]), abs=0.3)


class _Fixed:
    uses_samples = True

    def __init__(self, value, gradient):
        self.value, self.gradient = value, torch.tensor(gradient, dtype=torch.float64)

    def value_and_gradient(self, transform, samples):
        return self.value, self.gradient, samples.points.shape[0]


def test_relative_weights_and_default_weights_follow_elastix():
    from impactreg.engine.kinds import MultiMetricMultiResolutionRegistration
    from impactreg.metrics.protocol import Samples
    from impactreg.transforms.matrix import TranslationTransform

    metrics = [_Fixed(2.0, [3.0, 4.0]), _Fixed(1.0, [0.0, 10.0])]
    samples = Samples(torch.zeros(10, 2), torch.zeros(10))
    cost = Cost(metrics, [1.0, 1.0], 0.0, relative=[1.0, 0.5])
    total, _, _, grad = cost.value_and_gradient(TranslationTransform(2), samples)
    # metric 1 is weighted 0.5 * |g0| / |g1| = 0.25: its gradient norm is half of metric 0's
    assert total == pytest.approx(2.0 + 0.25) and torch.allclose(grad, torch.tensor([3.0, 6.5], dtype=torch.float64))
    registration = MultiMetricMultiResolutionRegistration()
    view = LevelView(ParameterMap({"Registration": "MultiMetricMultiResolutionRegistration", "Metric1Weight": 0.3,
                                   "UseRelativeWeights": "true", "Metric1RelativeWeight": 0.1}), 0)
    assert registration.weights(view, 2) == [0.5, 0.3]  # elastix's default weight is 1 / number of metrics
    assert registration.relative_weights(view, 2) == [0.5, 0.1]


def test_asgd_variants_keep_the_maps_sigmoid():
    fixed, moving = _blob_pair()
    result = register(fixed, moving, _map(ASGDParameterEstimationMethod="OriginalButSigmoidToDefault", SigmoidMin=-0.5,
                                          ImageSampler="Random", NumberOfSpatialSamples=300,
                                          NewSamplesEveryIteration="true"), seed=1)
    settings = result.stages[0].levels[0].settings
    assert settings["SigmoidMin"] == -0.5 and settings["SigmoidScale"] == 1e-8 and settings["SP_alpha"] == 1.0
    dd = register(fixed, moving, _map(ASGDParameterEstimationMethod="DisplacementDistribution", NoiseCompensation="false",
                                      ImageSampler="Random", NumberOfSpatialSamples=300,
                                      NewSamplesEveryIteration="true"), seed=1)
    assert dd.stages[0].levels[0].settings["SP_a"] > 0


@pytest.mark.parametrize("fmt", ["gipl", "hdr", "vtk", "dcm", "nrrd"])
def test_result_image_formats_itk_writes(tmp_path, fmt):
    fixed, moving = _blob_pair(3)
    out = tmp_path / fmt
    register(fixed, moving, _map(ResultImageFormat=fmt, ResultImagePixelType="short", MaximumNumberOfIterations=3),
             out_dir=out, seed=1)
    back = read_image(out / f"result.0.{fmt}")
    assert back.grid.size == fixed.grid.size
    np.testing.assert_allclose(back.grid.spacing, fixed.grid.spacing, rtol=1e-5)


def test_direction_cosines_off_registers_as_if_identity_and_writes_on_the_fixed_direction(tmp_path):
    angle = 0.4
    direction = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    fixed, moving = _blob_pair(2, direction)
    out = tmp_path / "out"
    result = register(fixed, moving, _map(UseDirectionCosines="false", ResultImageFormat="mha"), out_dir=out, seed=1)
    # in the identity-direction world the shift is along the index axes: (1.5, -1) voxels of 1.5 mm
    np.testing.assert_allclose(result.transform.parameters.numpy(), [2.25, -1.5], atol=0.1)
    text = (out / "TransformParameters.0.txt").read_text()
    assert '(UseDirectionCosines "false")' in text
    tf = read_transform_file(out / "TransformParameters.0.txt")
    np.testing.assert_allclose(tf.keys.numbers("Direction", 4).reshape(2, 2).T, direction, atol=1e-9)
    written = read_image(out / "result.0.mha")
    np.testing.assert_allclose(written.grid.direction, direction, atol=1e-6)
    ours = transform(out / "TransformParameters.0.txt", tmp_path / "tx", image=moving)
    np.testing.assert_allclose(read_image(tmp_path / "tx" / "result.mha").grid.direction, direction, atol=1e-6)
    np.testing.assert_allclose(ours.image.data.numpy(), written.data.numpy(), atol=1e-3)
    assert float((written.data - fixed.data).abs().mean()) < 0.5 * float((moving.data - fixed.data).abs().mean())


def test_direction_cosines_off_matches_elastixs_transformix(tmp_path):
    itk = pytest.importorskip("itk")
    angle = 0.4
    direction = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    fixed, moving = _blob_pair(2, direction)
    out = tmp_path / "out"
    register(fixed, moving, _map(UseDirectionCosines="false", FinalBSplineInterpolationOrder=1), out_dir=out, seed=1)
    # elastix's command line reads the moving image with an identity direction here; its library interface, given
    # an image in memory, does not: hand it the image as the command line would read it
    write_image(Image(moving.data, Grid(moving.grid.size, moving.grid.spacing, moving.grid.origin, np.eye(2))),
                tmp_path / "moving.mha")
    params = itk.ParameterObject.New()
    params.ReadParameterFile(str(out / "TransformParameters.0.txt"))
    theirs = itk.transformix_filter(itk.imread(str(tmp_path / "moving.mha"), itk.F), params, log_to_console=False)
    np.testing.assert_allclose(np.asarray(theirs.GetDirection()), direction, atol=1e-6)
    ours = read_image(out / "result.0.mha").data[0].numpy()
    np.testing.assert_allclose(np.asarray(itk.array_from_image(theirs))[2:-2, 2:-2], ours[2:-2, 2:-2], atol=0.05)


# ITK transform files ------------------------------------------------------------------------------------

def _sitk_points(tx: sitk.Transform, points: np.ndarray) -> np.ndarray:
    return np.array([tx.TransformPoint(tuple(float(v) for v in p)) for p in points])


def test_itk_forms_map_points_as_the_transforms_do():
    gen = torch.Generator().manual_seed(0)
    angle = 0.3
    oblique = np.eye(3)
    oblique[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    grid = Grid((8, 7, 9), (6.0, 7.0, 5.0), (-10.0, -5.0, 2.0), oblique)
    spline = BSplineTransform(grid, 3, torch.randn(3 * 8 * 7 * 9, dtype=torch.float64, generator=gen))
    euler = EulerTransform(3, torch.tensor([0.1, -0.2, 0.05, 1.0, 2.0, 3.0], dtype=torch.float64), np.full(3, 20.0),
                           compute_zyx=True)
    affine = AffineTransform(3, torch.tensor([1.1, 0.1, 0, -0.05, 0.9, 0.02, 0, 0, 1.05, 3, -2, 1],
                                             dtype=torch.float64), np.full(3, 5.0))
    points = torch.rand(200, 3, dtype=torch.float64, generator=gen) * 50 - 5
    for tx in (euler, affine, spline, CombinationTransform(CombinationTransform(affine, euler), spline)):
        np.testing.assert_allclose(_sitk_points(to_sitk(tx), points.numpy()), tx.map(points).numpy(), atol=1e-9)


def test_itk_transform_files_map_points_as_transformix_does(tmp_path):
    fixed, moving = _blob_pair(3)
    maps = [_map(Transform="AffineTransform", MaximumNumberOfIterations=5, ITKTransformOutputFileNameExtension="tfm"),
            _map(Transform="BSplineTransform", FinalGridSpacingInPhysicalUnits=9.0, MaximumNumberOfIterations=5,
                 ITKTransformOutputFileNameExtension="h5", WriteITKCompositeTransform="true")]
    out = tmp_path / "out"
    register(fixed, moving, maps, out_dir=out, seed=1)
    assert {"TransformParameters.0.tfm", "TransformParameters.1.h5", "TransformParameters.1-Composite.h5"} <= \
           {p.name for p in out.iterdir()}
    points = fixed.grid.voxel_points()[::37]
    for tp, itk_file in (("TransformParameters.0.txt", "TransformParameters.0.tfm"),
                         ("TransformParameters.1.txt", "TransformParameters.1-Composite.h5")):
        expected = read_transform_file(out / tp).transform.map(points).numpy()
        np.testing.assert_allclose(_sitk_points(sitk.ReadTransform(str(out / itk_file)), points.numpy()), expected,
                                   atol=1e-6)
    alone = read_transform_file(out / "TransformParameters.1.txt").transform.current.map(points).numpy()
    np.testing.assert_allclose(_sitk_points(sitk.ReadTransform(str(out / "TransformParameters.1.h5")), points.numpy()),
                               alone, atol=1e-6)  # as elastix: the stage's own transform


def test_itk_transform_file_matches_elastixs_transformix_points(tmp_path):
    pytest.importorskip("itk")
    from elastix_peer import transformix_points

    fixed, moving = _blob_pair(3)
    write_image(moving, tmp_path / "moving.mha")
    out = tmp_path / "out"
    register(fixed, moving, _map(Transform="EulerTransform", MaximumNumberOfIterations=10,
                                 ITKTransformOutputFileNameExtension="itk.txt"), out_dir=out, seed=1)
    points = fixed.grid.voxel_points()[::97].numpy()
    theirs = transformix_points(out / "TransformParameters.0.txt", points, tmp_path / "moving.mha", tmp_path / "tx")
    np.testing.assert_allclose(_sitk_points(sitk.ReadTransform(str(out / "TransformParameters.0.itk.txt")), points),
                               theirs, atol=1e-3)


def test_a_cyclic_bspline_is_refused_in_one_line_and_ignored_elsewhere():
    with pytest.raises(ParameterError, match=r"m.txt: \(UseCyclicTransform true\): only false is supported"):
        ParameterMap({"Transform": "BSplineTransform", "Metric": "AdvancedMeanSquares", "UseCyclicTransform": "true"},
                     "m.txt")
    pm = ParameterMap({"Transform": "AffineTransform", "Metric": "AdvancedMeanSquares", "UseCyclicTransform": "true"})
    assert "UseCyclicTransform" in pm.unused  # elastix reads it only for its B-spline transforms


def test_a_random_sample_region_turns_adaptive_steps_off_as_elastix(caplog):
    fixed, moving = _blob_pair()
    with caplog.at_level(logging.WARNING, logger="impactreg"):
        register(fixed, moving, _map(ImageSampler="RandomCoordinate", NewSamplesEveryIteration="true",
                                     NumberOfSpatialSamples=200, UseRandomSampleRegion="true", SampleRegionSize=20.0,
                                     MaximumNumberOfIterations=3), seed=1)
    assert "UseAdaptiveStepSizes is turned off" in caplog.text

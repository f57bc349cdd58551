"""The B-spline engine step by step against elastix (itk-elastix) where neither draws random samples:
the same map on the same images gives the same pyramid images, the same metric value at every
iteration, the same scales and the same final parameters. Small images, a few iterations: seconds."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from scipy import ndimage

import impactreg
from impactreg.geometry import Grid
from impactreg.image import Image, write_image
from impactreg.interpolation import Interpolator
from impactreg.sampling import ImageSampler

SIZE = (20, 18, 16)  # x, y, z
SPACING = (2.0, 2.5, 4.0)  # exactly representable: index <-> world round trips are exact, as elastix's regions need
ORIGIN = (-20.0, -22.5, -32.0)


def _blobs(points: np.ndarray) -> np.ndarray:
    """A smooth test intensity (three Gaussian blobs on a ramp) at world points (N, 3)."""
    centres = np.array([[-6.0, -4.0, -8.0], [8.0, 6.0, 4.0], [2.0, -10.0, 12.0]])
    widths = np.array([7.0, 9.0, 6.0])
    value = 0.02 * points[:, 0]
    for c, w, a in zip(centres, widths, (100.0, 70.0, 50.0)):
        value = value + a * np.exp(-((points - c) ** 2).sum(1) / (2 * w * w))
    return value


def _case(folder, size=SIZE, spacing=SPACING, origin=ORIGIN):
    """Fixed: the blobs; moving: the blobs under a small affine map A, so that fixed(x) = moving(A x)."""
    grid = Grid(size, spacing, origin, np.eye(3))
    points = grid.voxel_points().numpy()
    matrix = np.array([[1.03, 0.04, 0.0], [-0.03, 0.98, 0.02], [0.01, 0.0, 1.02]])
    shift = np.array([1.5, -1.0, 2.0])
    fixed = _blobs(points)
    moving = _blobs((points - shift) @ np.linalg.inv(matrix).T)  # moving(y) = fixed(A^-1 (y - b))
    shape = (1,) + tuple(reversed(size))
    paths = []
    for name, values in (("fixed", fixed), ("moving", moving)):
        path = folder / f"{name}.mha"
        write_image(Image(torch.from_numpy(values.reshape(shape)).float(), grid), path)
        paths.append(path)
    return paths


MAP = """(FixedImageDimension 3)
(MovingImageDimension 3)
(Registration "MultiResolutionRegistration")
(FixedImagePyramid "FixedRecursiveImagePyramid")
(MovingImagePyramid "MovingRecursiveImagePyramid")
(NumberOfResolutions 2)
(ImagePyramidSchedule 2 2 2 1 1 1)
(Interpolator "BSplineInterpolator")
(BSplineInterpolationOrder 1)
(Metric "{metric}")
(Optimizer "StandardGradientDescent")
(Transform "AffineTransform")
(AutomaticScalesEstimation "true")
(AutomaticTransformInitialization "false")
(ImageSampler "Full")
(NewSamplesEveryIteration "false")
(MaximumNumberOfIterations 6)
(SP_a {a})
(SP_A 20)
(SP_alpha 0.6)
(ResampleInterpolator "FinalBSplineInterpolator")
(Resampler "DefaultResampler")
(WriteResultImage "false")
"""


def _elastix(fixed, moving, map_path, out):
    itk = pytest.importorskip("itk")
    params = itk.ParameterObject.New()
    params.ReadParameterFile(str(map_path))
    out.mkdir()
    itk.elastix_registration_method(itk.imread(str(fixed), itk.F), itk.imread(str(moving), itk.F),
                                    parameter_object=params, log_to_console=False, log_to_file=True,
                                    output_directory=str(out), number_of_threads=1)
    log = (out / "elastix.log").read_text()
    scales = [float(v) for v in re.search(r"Scales for transform parameters are: \[([^\]]*)\]", log).group(1).split(",")]
    values = [float(r.split()[1]) for level in (0, 1)
              for r in (out / f"IterationInfo.0.R{level}.txt").read_text().splitlines()[1:]]
    tp = (out / "TransformParameters.0.txt").read_text()
    final = [float(v) for v in re.search(r"\(TransformParameters ([^)]*)\)", tp).group(1).split()]
    return np.array(scales), np.array(values), np.array(final)


@pytest.mark.parametrize("metric,a", [("AdvancedNormalizedCorrelation", 200.0), ("AdvancedMeanSquares", 0.02)])
def test_deterministic_trace_matches_elastix(tmp_path, metric, a):
    fixed, moving = _case(tmp_path)
    map_path = tmp_path / "map.txt"
    map_path.write_text(MAP.format(metric=metric, a=a))
    scales, elastix_values, elastix_final = _elastix(fixed, moving, map_path, tmp_path / "elastix")
    trace = []
    result = impactreg.register(str(fixed), str(moving), [str(map_path)], threads=1,
                                callbacks=[lambda info: trace.append(info.value)])
    ours_scales = result.stages[0].levels and _our_scales(fixed, moving, map_path)
    np.testing.assert_allclose(ours_scales, scales, rtol=1e-9)  # the centred grid of elastix's ImageGridSampler
    assert len(trace) == len(elastix_values) == 12
    # the order-1 B-spline mirrors at the borders; level 0 is ITK's recursive pyramid image
    np.testing.assert_allclose(trace, elastix_values, rtol=2e-5)
    final = result.transform.parameters.numpy()
    np.testing.assert_allclose(final, elastix_final, rtol=0, atol=2e-5 * np.abs(elastix_final).max())


def _our_scales(fixed, moving, map_path):
    from impactreg.image import read_image
    from impactreg.parameters import ParameterMap
    from impactreg.transforms.components import AffineTransformComponent

    component = AffineTransformComponent()
    component.begin_stage(ParameterMap.from_file(map_path), read_image(fixed), read_image(moving), None)
    return (component.scales(component.current) ** 2).numpy()


def test_order_one_mirror_matches_scipy_and_is_the_interpolants_derivative():
    rng = np.random.default_rng(3)
    grid = Grid((9, 7, 6), (1.5, 2.0, 0.7), (3.0, -1.0, 2.0), np.eye(3))
    data = rng.normal(size=(1, 6, 7, 9))
    interp = Interpolator(Image(torch.from_numpy(data), grid), order=1, dtype=torch.float64, mirror_linear=True)
    index = rng.uniform(-0.5, np.array(grid.size) - 0.5 - 1e-9, size=(300, 3))
    index[:40, 0] = rng.uniform(-0.5, 0.0, 40)  # in the half voxels beyond the outermost centres
    index[40:80, 1] = rng.uniform(grid.size[1] - 1, grid.size[1] - 0.5 - 1e-9, 40)
    points = torch.from_numpy(grid.index_to_world(index))
    got = interp(points, gradient=True)
    reference = ndimage.map_coordinates(data[0], index[:, ::-1].T, order=1, mode="mirror")
    np.testing.assert_allclose(got.values[:, 0].numpy(), reference, atol=1e-12)
    step = 1e-6
    for axis in range(3):
        shifted = index.copy()
        shifted[:, axis] += step
        ahead = ndimage.map_coordinates(data[0], shifted[:, ::-1].T, order=1, mode="mirror")
        along = torch.from_numpy(grid.index_to_world(shifted) - grid.index_to_world(index))[0]
        numeric = (ahead - reference) / step
        analytic = (got.gradients[:, 0] @ along).numpy() / step
        np.testing.assert_allclose(analytic, numeric, atol=1e-5)


def test_clamped_order_one_stays_itks_linear_interpolator():
    grid = Grid((4, 1), (1.0, 1.0), (0.0, 0.0), np.eye(2))
    image = Image(torch.tensor([[[0.0, 1.0, 5.0, 2.0]]], dtype=torch.float64), grid)
    edge = torch.tensor([[3.4, 0.0], [-0.4, 0.0]], dtype=torch.float64)
    clamped = Interpolator(image, order=1, dtype=torch.float64)(edge).values[:, 0]
    mirrored = Interpolator(image, order=1, dtype=torch.float64, mirror_linear=True)(edge).values[:, 0]
    torch.testing.assert_close(clamped, torch.tensor([2.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(mirrored, torch.tensor([0.6 * 2.0 + 0.4 * 5.0, 0.6 * 0.0 + 0.4 * 1.0],
                                                      dtype=torch.float64))


def test_grid_sampler_is_centred_on_the_mask_box_as_elastix():
    grid = Grid((11, 10, 9), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    mask = torch.zeros(grid.shape, dtype=torch.bool)
    mask[2:8, 1:9, 3:10] = True  # z 2..7, y 1..8, x 3..9
    index = grid.world_to_index(ImageSampler("Grid", grid, mask, grid_spacing=(3,), dtype=torch.float64).sample())
    # x: 7 voxels from 3, samples 3 apart span 7 -> start 3; y: 8 from 1, span 7 -> 1 + 0; z: 6 from 2, span 4 -> 2 + 1
    assert sorted(set(index[:, 0].round().tolist())) == [3.0, 6.0, 9.0]
    assert sorted(set(index[:, 1].round().tolist())) == [1.0, 4.0, 7.0]
    assert sorted(set(index[:, 2].round().tolist())) == [3.0, 6.0]


def test_recursive_pyramid_images_are_elastixs(tmp_path):
    """Odd and even sizes and a spacing that is not a binary fraction: ITK's discrete Gaussian (maximum error
    0.1), its shrinking by the nearest voxel, and the rounding of a half-voxel offset by the last bit."""
    itk = pytest.importorskip("itk")
    from impactreg.image import read_image
    from impactreg.parameters import ParameterMap
    from impactreg.pyramid import RecursiveImagePyramid

    grid = Grid((21, 18, 13), (2.732, 2.732, 5.0), (-152.461, -148.986, -1432.0), np.eye(3))
    values = _blobs((grid.voxel_points().numpy() - grid.centre) * 0.6)
    path = tmp_path / "image.mha"
    write_image(Image(torch.from_numpy(values.reshape(1, 13, 18, 21)).float(), grid), path)
    map_path = tmp_path / "map.txt"
    map_path.write_text(MAP.format(metric="AdvancedMeanSquares", a=0.0).replace(
        "(NumberOfResolutions 2)", "(NumberOfResolutions 3)").replace(
        "(ImagePyramidSchedule 2 2 2 1 1 1)", "(ImagePyramidSchedule 4 4 4 2 2 2 1 1 1)").replace(
        "(MaximumNumberOfIterations 6)", "(MaximumNumberOfIterations 1)\n(WritePyramidImagesAfterEachResolution \"true\")"))
    params = itk.ParameterObject.New()
    params.ReadParameterFile(str(map_path))
    out = tmp_path / "elastix"
    out.mkdir()
    itk.elastix_registration_method(itk.imread(str(path), itk.F), itk.imread(str(path), itk.F), parameter_object=params,
                                    log_to_console=False, output_directory=str(out), number_of_threads=1)
    pyramid = RecursiveImagePyramid("Fixed").build(read_image(path), ParameterMap.from_file(map_path), 3)
    for level in range(3):
        theirs = itk.imread(str(out / f"FixedImagePyramid0.0.R{level}.mhd"))
        ours = pyramid.level(level)
        assert ours.grid.size == tuple(theirs.GetLargestPossibleRegion().GetSize())
        np.testing.assert_allclose(ours.grid.origin, np.asarray(theirs.GetOrigin()), atol=1e-9)
        np.testing.assert_allclose(ours.data[0].numpy(), itk.array_from_image(theirs), rtol=0, atol=1e-3)


@pytest.mark.parametrize("given,expected", [("", 50.0), ("(SP_A 7)", 7.0)])
def test_standard_gradient_descent_reads_elastixs_default_gain_offset(tmp_path, given, expected):
    from impactreg.keys import LevelView
    from impactreg.optimizers import StandardGradientDescent
    from impactreg.parameters import ParameterMap

    path = tmp_path / "map.txt"
    path.write_text(f'(Optimizer "StandardGradientDescent")\n(Transform "AffineTransform")\n{given}\n')
    settings = StandardGradientDescent().begin_level(LevelView(ParameterMap.from_file(path), 0), None)
    assert settings["SP_A"] == expected


def test_shrinking_pyramid_images_are_elastixs(tmp_path):
    itk = pytest.importorskip("itk")
    from impactreg.image import read_image
    from impactreg.parameters import ParameterMap
    from impactreg.pyramid import ShrinkingImagePyramid

    grid = Grid((21, 18, 13), (2.732, 2.732, 5.0), (-152.461, -148.986, -1432.0), np.eye(3))
    values = _blobs((grid.voxel_points().numpy() - grid.centre) * 0.6)
    path = tmp_path / "image.mha"
    write_image(Image(torch.from_numpy(values.reshape(1, 13, 18, 21)).float(), grid), path)
    map_path = tmp_path / "map.txt"
    map_path.write_text(MAP.format(metric="AdvancedMeanSquares", a=0.0).replace("Recursive", "Shrinking").replace(
        "(NumberOfResolutions 2)", "(NumberOfResolutions 3)").replace(
        "(ImagePyramidSchedule 2 2 2 1 1 1)", "(ImagePyramidSchedule 4 3 2 2 2 1 1 1 1)").replace(
        "(MaximumNumberOfIterations 6)", "(MaximumNumberOfIterations 1)\n(WritePyramidImagesAfterEachResolution \"true\")"))
    params = itk.ParameterObject.New()
    params.ReadParameterFile(str(map_path))
    out = tmp_path / "elastix"
    out.mkdir()
    itk.elastix_registration_method(itk.imread(str(path), itk.F), itk.imread(str(path), itk.F), parameter_object=params,
                                    log_to_console=False, output_directory=str(out), number_of_threads=1)
    pyramid = ShrinkingImagePyramid("Fixed").build(read_image(path), ParameterMap.from_file(map_path), 3)
    for level in range(3):
        theirs = itk.imread(str(out / f"FixedImagePyramid0.0.R{level}.mhd"))
        ours = pyramid.level(level)
        assert ours.grid.size == tuple(theirs.GetLargestPossibleRegion().GetSize())
        np.testing.assert_allclose(ours.grid.origin, np.asarray(theirs.GetOrigin()), atol=1e-9)
        np.testing.assert_allclose(ours.data[0].numpy(), itk.array_from_image(theirs), rtol=0, atol=1e-3)


def test_asgd_gain_estimate_matches_elastixs(tmp_path):
    """ASGD's SP_a from elastix's Jacobian terms (a centred grid of about max(1000, P) points over the fixed image,
    all of them) and exact gradients; Full sampler, so no sampling noise, only the random perturbations of the
    gradient measurements (many of them here) differ (about +-3 % between seeds in either engine)."""
    fixed, moving = _case(tmp_path)
    text = MAP.format(metric="AdvancedNormalizedCorrelation", a=0.0).replace(
        '(Optimizer "StandardGradientDescent")', '(Optimizer "AdaptiveStochasticGradientDescent")\n'
        '(NumberOfGradientMeasurements 40)').replace("(MaximumNumberOfIterations 6)",
                                                                 "(MaximumNumberOfIterations 1)")
    map_path = tmp_path / "map.txt"
    map_path.write_text(text)
    _elastix(fixed, moving, map_path, tmp_path / "elastix")
    log = (tmp_path / "elastix" / "elastix.log").read_text()
    theirs = [float(v) for v in re.findall(r"Settings of AdaptiveStochasticGradientDescent in resolution \d:\s*"
                                            r"\( SP_a ([\d.e+-]+) \)", log)]
    result = impactreg.register(str(fixed), str(moving), [str(map_path)], threads=1)
    ours = [level.settings["SP_a"] for level in result.stages[0].levels]
    assert len(theirs) == len(ours) == 2
    np.testing.assert_allclose(ours, theirs, rtol=0.06)
    # the map's (SP_alpha 0.6) is ignored with the estimation, as elastix does: otherwise level 0's first step is
    # three times elastix's and level 1 starts elsewhere (its SP_a then 40 % off)
    assert all(level.settings["SP_alpha"] == 1.0 for level in result.stages[0].levels)


# y spacing 2.732 mm, 20 voxels: the last voxel centre round-trips (index -> world -> index, float64) to 18.999...,
# so elastix's fixed image region (PreparePyramids floors it) ends one row early and elastix never samples that row
ROUND_TRIP = dict(size=(20, 20, 16), spacing=(2.0, 2.732, 4.0), origin=(-20.0, -22.5, -32.0))


def test_fixed_image_region_floors_the_last_centre_as_elastix():
    from impactreg.sampling import fixed_image_region

    grid = Grid(ROUND_TRIP["size"], ROUND_TRIP["spacing"], ROUND_TRIP["origin"], np.eye(3))
    start, size = fixed_image_region(grid, grid)
    assert start.tolist() == [0, 0, 0] and size.tolist() == [20, 19, 16]
    assert fixed_image_region(Grid(SIZE, SPACING, ORIGIN, np.eye(3)), Grid(SIZE, SPACING, ORIGIN, np.eye(3))) is None


def test_fixed_image_region_rows_are_never_sampled_as_in_elastix(tmp_path):
    """On such a grid elastix leaves the last y row out of every metric value: ours must too (it had 1 % more
    correlation error and 20 % more gradient on the lung CT, and slowed ASGD with random samples)."""
    fixed, moving = _case(tmp_path, **ROUND_TRIP)
    text = MAP.format(metric="AdvancedNormalizedCorrelation", a=200.0)
    text = text.replace("(NumberOfResolutions 2)", "(NumberOfResolutions 1)").replace(
        "(ImagePyramidSchedule 2 2 2 1 1 1)", "(ImagePyramidSchedule 1 1 1)").replace(
        "(MaximumNumberOfIterations 6)", "(MaximumNumberOfIterations 1)")
    map_path = tmp_path / "map.txt"
    map_path.write_text(text)
    infos = []
    impactreg.register(str(fixed), str(moving), [str(map_path)], threads=1, callbacks=[infos.append])
    from impactreg.image import read_image
    f, m = (read_image(p).data[0].double().numpy()[:, :19, :] for p in (fixed, moving))  # (z, y, x): no last y row
    f, m = f - f.mean(), m - m.mean()
    expected = -(f * m).sum() / np.sqrt((f * f).sum() * (m * m).sum())
    assert infos[0].valid_samples == 20 * 19 * 16
    assert infos[0].value == pytest.approx(expected, rel=1e-6)

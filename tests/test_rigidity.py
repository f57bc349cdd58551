"""TransformRigidityPenalty: elastix's value (checked against a literal transcription of elastix's
formulas on scipy's filters), its exact gradient, rigidity images and the pull towards rigidity."""
import numpy as np
import pytest
import torch
from scipy.ndimage import correlate1d

from impactreg.errors import ParameterError
from impactreg.geometry import Grid
from impactreg.image import Image, write_image
from impactreg.keys import LevelView
from impactreg.metrics.protocol import LevelContext, Samples
from impactreg.metrics.rigidity import TransformRigidityPenalty, dilate, rigidity_conditions
from impactreg.parameters import ParameterMap
from impactreg.transforms import AffineTransform, BSplineTransform, CombinationTransform, TranslationTransform


def elastix_conditions(coef: np.ndarray, spacing):
    """elastix's itkTransformRigidityPenaltyTerm GetValue, term by term, on numpy arrays ([Z,] Y, X)."""
    dim = coef.shape[0]
    s = spacing
    smooth = np.array([1, 4, 1]) / 6.0

    def filt(image, per_axis):  # per_axis: x, y[, z] kernels; numpy axis of x is the last
        for axis, kernel in enumerate(per_axis):
            image = correlate1d(image, np.asarray(kernel, float), axis=image.ndim - 1 - axis, mode="nearest")
        return image

    def first(sp):
        return [-0.5 / sp, 0.0, 0.5 / sp]

    def second(sp):
        return [0.5 / sp ** 2, -1.0 / sp ** 2, 0.5 / sp ** 2]

    ops = {"A": [first(s[0]), smooth, smooth], "B": [smooth, first(s[1]), smooth], "C": [smooth, smooth, first(s[2]) if dim == 3 else None],
           "D": [second(s[0]), smooth, smooth], "E": [smooth, second(s[1]), smooth],
           "F": [smooth, smooth, second(s[2]) if dim == 3 else None],
           "G": [first(s[0] * s[1]), first(s[0] * s[1]), smooth]}
    if dim == 3:
        ops["H"] = [first(s[0] * s[2]), smooth, first(s[0] * s[2])]
        ops["I"] = [smooth, first(s[1] * s[2]), first(s[1] * s[2])]
    u = {(i, L): filt(coef[i], ops[L][:dim]) for i in range(dim) for L in ops if (dim == 3 or L in "ABDEG")}
    if dim == 2:
        a1, a2, b1, b2 = u[0, "A"], u[1, "A"], u[0, "B"], u[1, "B"]
        oc = ((1 + a1) ** 2 + a2 ** 2 - 1) ** 2 + (b1 ** 2 + (1 + b2) ** 2 - 1) ** 2 + ((1 + a1) * b1 + a2 * (1 + b2)) ** 2
        pc = ((1 + a1) * (1 + b2) - a2 * b1 - 1) ** 2
        lc = sum(u[i, L] ** 2 for i in range(2) for L in "DEG")
    else:
        a1, a2, a3 = u[0, "A"], u[1, "A"], u[2, "A"]
        b1, b2, b3 = u[0, "B"], u[1, "B"], u[2, "B"]
        c1, c2, c3 = u[0, "C"], u[1, "C"], u[2, "C"]
        oc = (((1 + a1) ** 2 + a2 ** 2 + a3 ** 2 - 1) ** 2 + ((1 + a1) * b1 + a2 * (1 + b2) + a3 * b3) ** 2
              + ((1 + a1) * c1 + a2 * c2 + a3 * (1 + c3)) ** 2 + (b1 ** 2 + (1 + b2) ** 2 + b3 ** 2 - 1) ** 2
              + (b1 * c1 + (1 + b2) * c2 + b3 * (1 + c3)) ** 2 + (c1 ** 2 + c2 ** 2 + (1 + c3) ** 2 - 1) ** 2)
        pc = (-c1 * (1 + b2) * a3 + b1 * c2 * a3 + c1 * a2 * b3 - (1 + a1) * c2 * b3 - b1 * a2 * (1 + c3)
              + (1 + a1) * (1 + b2) * (1 + c3) - 1) ** 2
        lc = sum(u[i, L] ** 2 for i in range(3) for L in "DEGFHI")
    return {"LC": lc, "OC": oc, "PC": pc}


def spline_2d():
    grid = Grid((7, 6), (6.0, 7.5), (1.0, -2.0), np.eye(2))
    return BSplineTransform(grid)


def spline_3d():
    grid = Grid((6, 5, 5), (5.0, 6.0, 7.0), (0.0, 0.0, 0.0), np.eye(3))
    return BSplineTransform(grid)


@pytest.mark.parametrize("make", [spline_2d, spline_3d])
def test_conditions_equal_elastix_formulas(make):
    spline = make()
    params = torch.randn(spline.number_of_parameters, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    coef = spline.coefficients(params)
    weights = torch.rand(spline.grid.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ours = rigidity_conditions(coef, spline.grid.spacing, weights)
    theirs = elastix_conditions(coef.numpy(), spline.grid.spacing)
    for c in ("LC", "OC", "PC"):
        assert float(ours[c]) == pytest.approx(float((weights.numpy() * theirs[c]).sum()), rel=1e-12)


def level_context(text: str, dim: int, level: int = 0, base=None) -> LevelContext:
    pm = ParameterMap.from_text(text)
    grid = Grid((8,) * dim, (1.0,) * dim, (0.0,) * dim, np.eye(dim))
    image = Image(torch.zeros((1,) + grid.shape), grid)
    return LevelContext(LevelView(pm, level), image, image, None, None, 1, torch.Generator(), torch.device("cpu"), base)


def penalty(text="(Metric \"TransformRigidityPenalty\")\n", dim=3, base=None):
    metric = TransformRigidityPenalty()
    metric.begin_level(level_context(text, dim, base=base))
    return metric


NO_SAMPLES = Samples(torch.zeros(1, 3), torch.zeros(1))


@pytest.mark.parametrize("make", [spline_2d, spline_3d])
def test_gradient_equals_finite_differences(make):
    spline = make()
    dim = spline.dim
    metric = penalty("(LinearityConditionWeight 3.0)\n(OrthonormalityConditionWeight 0.5)\n(PropernessConditionWeight 2.0)\n",
                     dim)
    mu = torch.randn(spline.number_of_parameters, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.8
    composed = CombinationTransform(AffineTransform(dim, None, np.zeros(dim)), spline.with_parameters(mu))
    value, gradient, _ = metric.value_and_gradient(composed, NO_SAMPLES)
    conditions = metric.condition_values
    assert value == pytest.approx(3.0 * conditions["LC"] + 0.5 * conditions["OC"] + 2.0 * conditions["PC"], rel=1e-12)
    h = 1e-6
    for i in torch.randperm(len(mu), generator=torch.Generator().manual_seed(2))[:12].tolist():
        e = torch.zeros_like(mu)
        e[i] = h
        up, _, _ = metric.value_and_gradient(spline.with_parameters(mu + e), NO_SAMPLES)
        down, _, _ = metric.value_and_gradient(spline.with_parameters(mu - e), NO_SAMPLES)
        assert float(gradient[i]) == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=1e-9)


def rotated_coefficients(spline: BSplineTransform, degrees: float):
    nodes = spline.grid.voxel_points()
    angle = np.deg2rad(degrees)
    rotation = torch.tensor([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    centre = nodes.mean(0)
    displacement = (nodes - centre) @ rotation.T + centre - nodes
    return displacement.T.reshape(-1)


def test_rigid_motions_cost_nothing_inside_and_a_deformation_costs():
    spline = spline_3d()
    metric = penalty()
    shift = torch.cat([torch.full((spline.num_coefficients,), v, dtype=torch.float64) for v in (1.5, -2.0, 0.7)])
    assert metric.value_and_gradient(spline.with_parameters(shift), NO_SAMPLES)[0] == pytest.approx(0.0, abs=1e-20)
    # a rotation: the B-spline reproduces the linear map, so every condition vanishes away from the border
    coef = spline.coefficients(rotated_coefficients(spline, 20.0))
    interior = torch.zeros(spline.grid.shape, dtype=torch.float64)
    interior[1:-1, 1:-1, 1:-1] = 1.0
    sums = rigidity_conditions(coef, spline.grid.spacing, interior)
    assert max(float(v) for v in sums.values()) < 1e-20
    stretch = spline.coefficients(torch.zeros(spline.number_of_parameters, dtype=torch.float64)).clone()
    stretch[0] = 0.2 * spline.grid.voxel_points()[:, 0].reshape(spline.grid.shape)  # x scaled by 1.2
    sums = rigidity_conditions(stretch, spline.grid.spacing, interior)
    assert float(sums["OC"]) > 0.1 and float(sums["PC"]) > 0.01


def test_descent_on_the_penalty_makes_the_transform_rigid():
    spline = spline_2d()
    metric = penalty(dim=2)
    mu = torch.randn(spline.number_of_parameters, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    first, _, _ = metric.value_and_gradient(spline.with_parameters(mu), NO_SAMPLES)
    for _ in range(200):
        _, gradient, _ = metric.value_and_gradient(spline.with_parameters(mu), NO_SAMPLES)
        mu = mu - 10.0 * gradient
    last, _, _ = metric.value_and_gradient(spline.with_parameters(mu), NO_SAMPLES)
    assert last < 0.02 * first


def test_rigidity_images_weight_the_control_points(tmp_path):
    spline = spline_3d()
    image_grid = Grid((30, 30, 35), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    data = torch.zeros((1,) + image_grid.shape)
    data[0, 12:16, 10:14, 8:12] = 1.0  # rigid block: x 8..11, y 10..13, z 12..15 mm; control point (10, 12, 14)
    write_image(Image(data, image_grid), tmp_path / "rigid.mha")
    text = f"(MovingRigidityImageName \"{tmp_path / 'rigid.mha'}\")\n(DilateRigidityImages \"false\")\n"
    metric = penalty(text)
    weights = metric._coefficient_image(spline)
    nodes = spline.grid.voxel_points().reshape(*spline.grid.shape, 3)
    expected = torch.zeros(spline.grid.shape, dtype=torch.float64)
    idx = torch.floor(nodes + 0.5).long()
    inside = (idx[..., 0] >= 8) & (idx[..., 0] < 12) & (idx[..., 1] >= 10) & (idx[..., 1] < 14) & \
             (idx[..., 2] >= 12) & (idx[..., 2] < 16)
    expected[inside] = 1.0
    assert torch.equal(weights, expected) and float(weights.sum()) >= 1
    # the moving image is looked up at the B-spline's image of each control point: shift everything by 5 mm in x
    shifted = spline.with_parameters(torch.cat([torch.full((spline.num_coefficients,), 5.0, dtype=torch.float64),
                                                torch.zeros(2 * spline.num_coefficients, dtype=torch.float64)]))
    moved = metric._coefficient_image(shifted)
    assert not torch.equal(moved, weights)
    # dilation widens the block by int(multiplier x grid spacing) = 5, 6, 7 voxels: x 3..16, y 4..19, z 5..22
    dilated = penalty(f"(MovingRigidityImageName \"{tmp_path / 'rigid.mha'}\")\n(DilationRadiusMultiplier 1.0)\n")
    assert float(dilated._coefficient_image(spline).sum()) == 27  # nodes x 5, 10, 15; y 6, 12, 18; z 7, 14, 21
    # with no rigid voxel at all the penalty is zero, as elastix's early exit
    write_image(Image(torch.zeros((1,) + image_grid.shape), image_grid), tmp_path / "none.mha")
    empty = penalty(f"(FixedRigidityImageName \"{tmp_path / 'none.mha'}\")\n")
    value, gradient, _ = empty.value_and_gradient(spline, NO_SAMPLES)
    assert value == 0.0 and not bool(gradient.any())


def test_dilation_is_a_box_of_lines():
    data = torch.zeros(7, 9, dtype=torch.float64)
    data[3, 4] = 1.0
    out = dilate(data, [2, 1])  # 2 voxels along x (last axis), 1 along y
    assert torch.equal(out.nonzero().min(0).values, torch.tensor([2, 2]))
    assert torch.equal(out.nonzero().max(0).values, torch.tensor([4, 6]))
    assert float(out.sum()) == 15


def test_needs_a_bspline_and_a_readable_image(tmp_path):
    with pytest.raises(ParameterError, match="cubic B-spline"):
        penalty().value_and_gradient(TranslationTransform(3), NO_SAMPLES)
    with pytest.raises(ParameterError, match="BSplineTransformSplineOrder 3"):  # elastix's operators are cubic
        penalty().value_and_gradient(BSplineTransform(spline_3d().grid, order=2), NO_SAMPLES)
    with pytest.raises(Exception, match="no such image"):
        penalty(f"(FixedRigidityImageName \"{tmp_path / 'missing.mha'}\")\n")


def test_values_equal_elastix_on_its_own_iterates(tmp_path):
    """elastix reports the three conditions each iteration (IterationInfo Metric-LC/OC/PC); evaluated on
    the B-spline parameters elastix wrote after iteration k they must equal its row k + 1."""
    itk = pytest.importorskip("itk")
    from impactreg.transforms.elastix_files import read_transform_file

    inputs = __import__("pathlib").Path(__file__).resolve().parent / "regression" / "inputs"
    fixed = itk.imread(str(inputs / "fixed3d.mha"), itk.F)
    moving = itk.imread(str(inputs / "moving3d_same.mha"), itk.F)
    parameters = itk.ParameterObject.New()
    pm = parameters.GetDefaultParameterMap("bspline", 1)
    for key, value in {"Registration": "MultiMetricMultiResolutionRegistration", "Metric1Weight": "0.0",
                       "Metric": ["AdvancedMeanSquares", "TransformRigidityPenalty"], "MaximumNumberOfIterations": "4",
                       "FinalGridSpacingInPhysicalUnits": "10", "GridSpacingSchedule": "1", "ImageSampler": "Full",
                       "AutomaticParameterEstimation": "false", "SP_a": "0.05", "WriteIterationInfo": "true",
                       "WriteTransformParametersEachIteration": "true", "ImagePyramidSchedule": ["1", "1", "1"],
                       "WriteResultImage": "false"}.items():
        pm[key] = [value] if isinstance(value, str) else value
    parameters.AddParameterMap(pm)
    itk.elastix_registration_method(fixed, moving, parameter_object=parameters, log_to_console=False,
                                    output_directory=str(tmp_path))
    rows = [line.split("\t") for line in (tmp_path / "IterationInfo.0.R0.txt").read_text().splitlines()]
    columns = {name.strip(): i for i, name in enumerate(rows[0])}
    checked = 0
    for k in range(3):
        spline = read_transform_file(tmp_path / f"TransformParameters.0.R0.It{k:07d}.txt").transform
        weights = torch.ones(spline.grid.shape, dtype=torch.float64)
        ours = rigidity_conditions(spline.coefficients(), spline.grid.spacing, weights)
        for condition in ("LC", "OC", "PC"):
            theirs = float(rows[k + 2][columns[f"Metric-{condition}"]])
            mean = float(ours[condition]) / float(weights.sum())
            assert mean == pytest.approx(theirs, rel=1e-6, abs=1e-9), (k, condition)
            checked += theirs > 1e-6
    assert checked >= 6  # the transform moved: the conditions are not all zero

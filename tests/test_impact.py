"""The IMPACT metric: exact gradients in both modes, known translations recovered, settings errors,
Static-mode feature maps, and the PyTorch loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import impactreg
from impactreg.errors import ModelError, ParameterError
from impactreg.geometry import Grid
from impactreg.image import Image, read_image
from impactreg.keys import LevelView
from impactreg.metrics.impact import ImpactMetric
from impactreg.metrics.protocol import LevelContext, Samples
from impactreg.parameters import ParameterMap
from impactreg import register
from impactreg.sampling import ImageSampler
from impactreg.transforms import AffineTransform, TranslationTransform


class Smooth2D(torch.nn.Module):
    """A small smooth network (so finite differences are meaningful)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = torch.nn.Conv2d(1, 6, 3, padding=1)
        self.c2 = torch.nn.Conv2d(6, 8, 3, padding=1)

    def forward(self, x):
        return [torch.tanh(self.c1(x)), torch.tanh(self.c2(torch.tanh(self.c1(x))))]


@pytest.fixture(scope="module")
def smooth_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "smooth2d.pt"
    torch.jit.trace(Smooth2D(), torch.rand(1, 1, 5, 5), strict=False).save(str(path))
    return path


def blobs(seed: int, shift=(0.0, 0.0)) -> Image:
    grid = Grid((48, 40), (1.0, 1.0), (shift[0], shift[1]), np.eye(2))
    idx = grid.voxel_indices().numpy()
    rng = np.random.default_rng(seed)
    value = np.zeros(len(idx))
    for _ in range(12):
        c = rng.uniform(5, 40, 2)
        value += rng.uniform(50, 150) * np.exp(-((idx - c) ** 2).sum(1) / (2 * rng.uniform(2, 5) ** 2))
    return Image(torch.from_numpy(value.reshape(1, *grid.shape)).float(), grid)


def impact_metric(pm, level, fixed, moving, mask, order, generator, device="cpu") -> ImpactMetric:
    """The metric at the start of ``level``, as the engine sets it up."""
    metric = ImpactMetric()
    metric.begin_level(LevelContext(LevelView(pm, level), fixed, moving, None, mask, order, generator, torch.device(device)))
    return metric


def evaluate(metric, transform, points):
    return metric.value_and_gradient(transform, Samples(points, torch.zeros(points.shape[0])))


def impact_map(path, mode, **extra):
    entries = {"ImpactModelsPath0": str(path), "ImpactDimension0": 2, "ImpactPatchSize0": [5, 5], "ImpactVoxelSize0": [1, 1],
               "ImpactLayersMask0": "11", "ImpactLayersWeight0": [1.0, 0.5], "ImpactSubsetFeatures0": 0,
               "ImpactDistance0": "L2", "ImpactMode": mode, "ImpactNormalization0": "zscore"}
    entries.update(extra)
    return ParameterMap(entries)


@pytest.mark.parametrize("mode", ["Jacobian", "Static"])
def test_gradient_matches_finite_differences(mode, smooth_model):
    fixed = blobs(0)
    moving = blobs(0, shift=(1.3, -0.7))
    metric = impact_metric(impact_map(smooth_model, mode, ImpactPatchSize0=[5, 5] if mode == "Jacobian" else [0, 0]),
                          0, fixed, moving, None, 3, torch.Generator().manual_seed(0), "cpu")
    interior = torch.zeros(fixed.grid.shape, dtype=torch.bool)
    interior[10:-10, 10:-10] = True  # patches stay inside the moving image: the valid set does not change
    points = ImageSampler("RandomCoordinate", fixed.grid, interior, 300, generator=torch.Generator().manual_seed(1)).sample()
    transform = AffineTransform(2, [1.02, 0.03, -0.02, 0.98, 0.4, -0.3], [24.0, 20.0])
    value, grad, valid = evaluate(metric, transform, points)
    assert valid == 300
    eps = 1e-2
    for i in range(6):
        step = torch.zeros(6, dtype=torch.float64)
        step[i] = eps * (0.05 if i < 4 else 1.0)
        plus = evaluate(metric, transform.with_parameters(transform.parameters + step), points)[0]
        minus = evaluate(metric, transform.with_parameters(transform.parameters - step), points)[0]
        fd = (plus - minus) / (2 * step[i].item())
        assert abs(fd - grad[i].item()) < 2e-2 * abs(grad).max().item() + 1e-7, (i, fd, grad[i].item())


@pytest.fixture(scope="module")
def brain_t1_pd(data_dir):
    d = data_dir / "brainweb2d"
    t1 = read_image(d / "BrainT1SliceBorder20.png").channel(0)
    pd = read_image(d / "BrainProtonDensitySliceBorder20.png").channel(0)
    return t1, pd


def mind_map(mode, patch, iterations, levels=2):
    return {"Transform": "TranslationTransform", "Metric": "Impact", "NumberOfResolutions": levels,
            "MaximumNumberOfIterations": iterations, "NumberOfSpatialSamples": 500, "NewSamplesEveryIteration": "true",
            "NumberOfSamplesForExactGradient": 2000, "BSplineInterpolationOrder": 3, "WriteResultImage": "false",
            "ImpactModelsPath0": "MIND/R1D2", "ImpactDimension0": 2, "ImpactPatchSize0": [patch, patch],
            "ImpactVoxelSize0": [2, 2], "ImpactVoxelSize1": [1, 1], "ImpactDistance0": "L2", "ImpactMode": mode}


# Jacobian mode runs at 2 mm only: per-patch MIND at the native 1 mm is too noisy for ASGD to settle
@pytest.mark.parametrize("mode,patch,iterations,levels", [("Static", 0, 150, 2), ("Jacobian", 11, 150, 1)])
def test_brainweb_t1_pd_translation_recovered_with_mind(mode, patch, iterations, levels, brain_t1_pd):
    t1, pd = brain_t1_pd
    truth = np.array([4.6, -3.3])  # the PD slice moved by a known translation (its origin shifted)
    moving = Image(pd.data, Grid(pd.grid.size, pd.grid.spacing, pd.grid.origin + truth, pd.grid.direction))
    result = register(t1, moving, [mind_map(mode, patch, iterations, levels)], seed=0)
    assert np.abs(result.transform.parameters.numpy() - truth).max() < 0.5


def test_brainweb_r10x13y17_static_mind(data_dir):
    d = data_dir / "brainweb2d"
    t1 = read_image(d / "BrainT1SliceBorder20.png").channel(0)
    moved = read_image(d / "BrainProtonDensitySliceShifted13x17y.png").channel(0)
    params = dict(mind_map("Static", 0, 100), NumberOfResolutions=3, ImpactVoxelSize0=[4, 4], ImpactVoxelSize1=[2, 2],
                  ImpactVoxelSize2=[1, 1])
    result = register(t1, moved, [params], seed=0)
    np.testing.assert_allclose(result.transform.parameters.numpy(), [13.0, 17.0], atol=0.5)


def test_lung_ct_translation_recovered_with_m730_jacobian(data_dir):
    ct = read_image(data_dir / "lung_ct" / "3DCT_lung_baseline_small.mha")
    truth = np.array([3.2, -2.4, 4.1])
    moving = Image(ct.data, Grid(ct.grid.size, ct.grid.spacing, ct.grid.origin + truth, ct.grid.direction))
    params = {"Transform": "TranslationTransform", "Metric": "Impact", "NumberOfResolutions": 2,
              "MaximumNumberOfIterations": 80, "NumberOfSpatialSamples": 300, "NewSamplesEveryIteration": "true",
              "NumberOfSamplesForExactGradient": 1000, "WriteResultImage": "false",
              "ImpactModelsPath0": str(data_dir / "models" / "M730_1_Layers.pt"), "ImpactPatchSize0": [5, 5, 5],
              "ImpactVoxelSize0": [6, 6, 6], "ImpactVoxelSize1": [3, 3, 3], "ImpactNormalization0": "zscore",
              "ImpactSubsetFeatures0": 16, "ImpactMode": "Jacobian"}
    result = register(ct, moving, [params], seed=0)
    error_voxels = np.abs(result.transform.parameters.numpy() - truth) / ct.grid.spacing
    assert error_voxels.max() < 0.5


@pytest.mark.parametrize("entries,message", [
    ({"ImpactModelsPath0": ["MIND/R1D2", "MIND/R1D1", "MIND/R2D1"], "ImpactDimension0": [2, 2]}, "2 values for 3 model"),
    ({"ImpactModelsPath0": "MIND/R1D2", "ImpactDistance0": "L3"}, "Distance 'L3'"),
    ({"ImpactModelsPath0": "MIND/R1D2", "ImpactLayersMask0": "1x"}, "LayersMask"),
    ({"ImpactModelsPath0": ["MIND/R1D2", "MIND/R1D1"], "ImpactPatchSize0": [5, 5, 5]},
     "3 numbers for model.s. of dimensions 2 2"),
    ({"ImpactModelsPath0": ["MIND/R1D2", "MIND/R1D1", "MIND/R2D1"], "ImpactLayersWeight0": [1, 2]},
     "LayersWeight: 2 values for 3 selected layer"),
    ({"ImpactModelsPath0": ["MIND/R1D2", "MIND/R1D1", "MIND/R2D1"], "ImpactSubsetFeatures0": [4, 4]},
     "SubsetFeatures: 2 values for 3 selected layer"),
    ({"ImpactModelsPath0": "MIND/R1D2", "ImpactMode": "Dynamic"}, "use one of Jacobian, Static"),
    ({"Transform": "TranslationTransform"}, "needs models"),
])
def test_settings_errors(entries, message):
    image = blobs(1)
    with pytest.raises(ParameterError, match=message):
        impact_metric(ParameterMap(dict({"ImpactDimension0": 2}, **entries)), 0, image, image, None, 1,
                     torch.Generator(), "cpu")


def test_layers_mask_must_match_the_model(smooth_model):
    image = blobs(1)
    with pytest.raises(ModelError, match="LayersMask '111' has 3 digit"):
        impact_metric(impact_map(smooth_model, "Jacobian", ImpactLayersMask0="111", ImpactLayersWeight0=1), 0, image, image,
                     None, 1, torch.Generator(), "cpu")


def test_documented_family_with_per_level_strings(smooth_model):
    pm = ParameterMap({"ModelsPath": f"{smooth_model} MIND/R1D1", "Dimension": "2", "PatchSize": ["5*5 5*5", "7*7 3*3"],
                       "VoxelSize": "1*1 2*2", "LayersMask": "01 1", "Distance": "L1 Cosine", "Mode": "Static",
                       "Normalization": "zscore minmax"})
    image = blobs(2)
    metric = impact_metric(pm, 1, image, image, None, 1, torch.Generator(), "cpu")
    assert [s.patch_size for s in metric.mode.inputs.config.fixed] == [(7, 7), (3, 3)]
    assert [s.voxel_size for s in metric.mode.inputs.config.fixed] == [(1.0, 1.0), (2.0, 2.0)]
    assert metric.mode.inputs.config.distances == [["L1"], ["Cosine"]]
    points = ImageSampler("Grid", image.grid, grid_spacing=(3,)).sample()
    value, grad, valid = evaluate(metric, TranslationTransform(2), points)
    # identical images: L1 is 0 and Cosine at its minimum -1; both stationary
    assert value == pytest.approx(-1.0, abs=1e-5) and torch.allclose(grad, torch.zeros(2, dtype=torch.float64), atol=1e-4)


class Strided(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.c = torch.nn.Conv2d(1, 3, 3, padding=1)
        self.s = torch.nn.Conv2d(3, 5, 2, stride=2)

    def forward(self, x):
        a = self.c(x)
        return [a, self.s(a)]


def test_static_feature_maps_geometry_pca_and_export(tmp_path):
    path = tmp_path / "strided.pt"
    torch.jit.trace(Strided(), torch.rand(1, 1, 8, 8), strict=False).save(str(path))
    image = blobs(3)
    out = tmp_path / "features"
    pm = ParameterMap({"ImpactModelsPath0": str(path), "ImpactDimension0": 2, "ImpactPatchSize0": [0, 0],
                       "ImpactVoxelSize0": [2, 2], "ImpactLayersMask0": "11", "ImpactLayersWeight0": 1,
                       "ImpactPCA0": 2, "ImpactMode": "Static", "ImpactWriteFeatureMaps": str(out)})
    metric = impact_metric(pm, 0, image, image, None, 1, torch.Generator(), "cpu")
    fine, coarse = metric.mode.fixed_maps[0]
    assert fine.channels == 2 and coarse.channels == 2  # PCA kept 2 components of 3 and 5
    np.testing.assert_allclose(fine.grid.spacing, [2, 2])
    np.testing.assert_allclose(coarse.grid.spacing, [4, 4])
    # a stride-2 layer's first voxel is centred between the first two 2 mm voxels
    np.testing.assert_allclose(coarse.grid.origin - fine.grid.origin, [1.0, 1.0])
    names = sorted(p.name for p in out.iterdir())
    assert "Fixed_0_2_2.mha" in names and "Moving_0_2_2.mha" in names
    assert sum(n.startswith("Fixed_0_0_strided_layer") for n in names) == 2


def test_tiled_static_inference_matches_whole_image_for_a_local_model(smooth_model):
    from impactreg.features import image_stats, load_extractor
    from impactreg.features.inference import feature_maps

    image = blobs(4)
    extractor = load_extractor(str(smooth_model), 2, 1, "zscore")
    stats = image_stats(image.data)
    _, whole = feature_maps(extractor, image, (1, 1), (0, 0), "11", stats, "cpu")
    _, tiled = feature_maps(extractor, image, (1, 1), (16, 16), "11", stats, "cpu")
    inner = (slice(None), slice(4, -4), slice(4, -4))  # away from the image border (zero padding differs there)
    diff = (whole[1].data - tiled[1].data)[inner].abs()
    assert float(diff.quantile(0.95)) < 0.05 and float(diff.mean()) < 0.02


def test_2d_model_on_3d_image_in_both_modes(data_dir):
    ct = read_image(data_dir / "lung_ct" / "3DCT_lung_baseline_small.mha")
    points = ImageSampler("RandomCoordinate", ct.grid, None, 50, generator=torch.Generator().manual_seed(0)).sample()
    for mode, patch in (("Jacobian", [7, 7]), ("Static", [0, 0])):
        pm = ParameterMap({"ImpactModelsPath0": "MIND/R1D2", "ImpactDimension0": 2, "ImpactPatchSize0": patch,
                           "ImpactVoxelSize0": [6, 6], "ImpactMode": mode})
        metric = impact_metric(pm, 0, ct, ct, None, 1, torch.Generator().manual_seed(0), "cpu")
        value, grad, valid = evaluate(metric, TranslationTransform(3, [2.0, 0.0, 0.0]), points)
        assert valid > 10 and np.isfinite(value) and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_impact_loss_is_differentiable_in_both_inputs(smooth_model):
    loss = impactreg.IMPACT(str(smooth_model), dimension=2, layers_mask="11", weights=[1.0, 0.5], distance="L2",
                            normalization="zscore")
    a = torch.rand(2, 1, 20, 24, requires_grad=True)
    b = (a.detach() + 0.1 * torch.randn(2, 1, 20, 24)).requires_grad_(True)
    value = loss(a, b)
    value.backward()
    assert value.item() > 0 and a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    assert loss(a.detach(), a.detach()).item() == pytest.approx(0.0, abs=1e-7)
    mask = torch.zeros(2, 1, 20, 24)
    mask[:, :, 5:15, 5:15] = 1
    assert loss(a.detach(), b.detach(), mask).item() > 0
    mind = impactreg.IMPACT("MIND/R1D2", dimension=3, distance="L1")
    x = torch.rand(1, 1, 12, 12, 12)
    assert mind(x, x).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ModelError):
        impactreg.IMPACT("MIND/R1D2", dimension=3, distance="L7")


def test_impact_loss_with_precomputed_fixed_features_equals_the_full_loss(smooth_model):
    loss = impactreg.IMPACT(str(smooth_model), dimension=2, layers_mask="11", weights=[1.0, 0.5], distance="L1")
    fixed = torch.rand(2, 1, 20, 24)
    mask = torch.zeros(2, 1, 20, 24)
    mask[0, :, 3:17, 4:20] = 1
    mask[1, :, 6:12, 2:22] = 1
    values, grads = [], []
    for vectors in (None, loss.fixed_vectors(fixed, mask)):
        moving = (fixed + 0.2 * torch.sin(torch.arange(20.0))[:, None]).requires_grad_(True)
        value = loss(fixed, moving, mask) if vectors is None else loss(fixed, moving, mask, fixed_vectors=vectors)
        value.backward()
        values.append(value.item())
        grads.append(moving.grad)
    assert values[0] > 0 and values[1] == pytest.approx(values[0], rel=1e-6)
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[1], grads[0], rtol=1e-5, atol=1e-9)


def test_feature_map_update_does_not_apply_the_transform_twice(smooth_model):
    fixed = blobs(5)
    moving = blobs(5, shift=(2.0, -1.0))  # moving(x + (2, -1)) = fixed(x): the truth is that translation
    base = dict(ImpactPatchSize0=[0, 0], ImpactLayersMask0="01", ImpactLayersWeight0=1, ImpactFeaturesMapUpdateInterval=1)
    interior = torch.zeros(fixed.grid.shape, dtype=torch.bool)
    interior[8:-8, 8:-8] = True
    points = ImageSampler("Grid", fixed.grid, interior, grid_spacing=(2,)).sample()
    metric = impact_metric(impact_map(smooth_model, "Static", **base), 0, fixed, moving, None, 3, torch.Generator(), "cpu")
    truth = TranslationTransform(2, [2.0, -1.0])
    misaligned = evaluate(metric, TranslationTransform(2), points)[0]
    metric.end_iteration(0)  # after iteration 0 (interval 1) the maps come from the moving image warped by the truth
    evaluate(metric, truth, points)
    assert metric.mode.reference is not None
    aligned, grad, _ = evaluate(metric, truth, points)
    assert aligned < 0.1 * misaligned  # sampled at x, not at T(x) a second time
    nudged = evaluate(metric, TranslationTransform(2, [2.6, -1.0]), points)[1]
    assert nudged[0] > 0  # the gradient points back to the truth


def test_feature_maps_are_updated_at_optimiser_iterations_only(monkeypatch):
    """FeaturesMapUpdateInterval counts optimiser iterations, not metric evaluations: ASGD's automatic
    step-size estimation evaluates the metric too, and must not move the update schedule."""
    from impactreg.metrics.impact.static import StaticMode

    updates, seen = [], []
    original = StaticMode._compute_moving_maps

    def spy(self, transform, out_dir=None):
        if transform is not None:
            updates.append(len(seen))  # the iteration whose evaluation triggered the update
        return original(self, transform, out_dir)

    monkeypatch.setattr(StaticMode, "_compute_moving_maps", spy)
    pm = {"Transform": "TranslationTransform", "Metric": "Impact", "NumberOfResolutions": 1,
          "MaximumNumberOfIterations": 7, "NumberOfSpatialSamples": 300, "AutomaticParameterEstimation": "true",
          "NumberOfGradientMeasurements": 3, "WriteResultImage": "false", "ImpactModelsPath0": "MIND/R1D2",
          "ImpactDimension0": 2, "ImpactPatchSize0": [0, 0], "ImpactVoxelSize0": [1, 1], "ImpactMode": "Static",
          "ImpactFeaturesMapUpdateInterval": 3}
    register(blobs(6), blobs(6, shift=(1.0, 0.5)), pm, seed=3, callbacks=[lambda info: seen.append(info.iteration)])
    assert seen == list(range(7))
    assert updates == [3, 6]

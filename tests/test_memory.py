"""The memory budget: parsing, batched IMPACT Jacobian passes equal to one batch, out-of-memory
halving, the 'cannot fit' line, and budget-sized Static feature maps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from impactreg.cli import main
from impactreg.compute.memory import MemoryBudget, halving, is_out_of_memory, parse_memory
from impactreg.errors import MemoryLimitError, ParameterError
from impactreg.geometry import Grid
from impactreg.image import Image, write_image
from impactreg.keys import LevelView
from impactreg.metrics.impact import ImpactMetric
from impactreg.metrics.protocol import LevelContext, Samples
from impactreg.parameters import ParameterMap
from impactreg.sampling import ImageSampler
from impactreg.transforms import AffineTransform
from test_impact import Smooth2D  # the same small smooth network


class RefusesLargeBatches(torch.nn.Module):
    """Raises an out-of-memory RuntimeError for batches larger than ``limit``; counts its calls."""

    def __init__(self, inner, limit):
        super().__init__()
        self.inner, self.limit, self.batches = inner, limit, []

    def forward(self, x):
        self.batches.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


class RefusesLargeVolumes(torch.nn.Module):
    """Raises an out-of-memory RuntimeError for inputs of more than ``limit`` voxels."""

    def __init__(self, inner, limit):
        super().__init__()
        self.inner, self.limit, self.sizes = inner, limit, []

    def forward(self, x, *args):
        self.sizes.append(x[0].numel())
        if x[0].numel() > self.limit:
            raise MemoryError()
        return self.inner(x, *args)


@pytest.fixture(scope="module")
def smooth_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "smooth2d.pt"
    torch.jit.trace(Smooth2D(), torch.rand(1, 1, 5, 5), strict=False).save(str(path))
    return path


def blobs(seed: int, shift=(0.0, 0.0), size=(48, 40)) -> Image:
    grid = Grid(size, (1.0, 1.0), shift, np.eye(2))
    idx = grid.voxel_indices().numpy()
    rng = np.random.default_rng(seed)
    value = np.zeros(len(idx))
    for _ in range(12):
        c = rng.uniform(5, min(size) - 5, 2)
        value += rng.uniform(50, 150) * np.exp(-((idx - c) ** 2).sum(1) / (2 * rng.uniform(2, 5) ** 2))
    return Image(torch.from_numpy(value.reshape(1, *grid.shape)).float(), grid)


def metric_for(model_path, memory, distance="L2", subset=0, mode="Jacobian", patch=(5, 5), fixed=None, moving=None):
    pm = ParameterMap({"ImpactModelsPath0": str(model_path), "ImpactDimension0": 2, "ImpactPatchSize0": list(patch),
                       "ImpactVoxelSize0": [1, 1], "ImpactLayersMask0": "11", "ImpactLayersWeight0": [1.0, 0.5],
                       "ImpactSubsetFeatures0": subset, "ImpactDistance0": distance, "ImpactMode": mode,
                       "ImpactNormalization0": "zscore"})
    fixed = fixed if fixed is not None else blobs(0)
    moving = moving if moving is not None else blobs(0, shift=(1.3, -0.7))
    metric = ImpactMetric()
    metric.begin_level(LevelContext(LevelView(pm, 0), fixed, moving, None, None, 3, torch.Generator().manual_seed(0),
                                    torch.device("cpu"), None, memory))
    return metric


def sample_points(n=300):
    grid = blobs(0).grid
    return ImageSampler("RandomCoordinate", grid, None, n, generator=torch.Generator().manual_seed(1)).sample()


TRANSFORM = AffineTransform(2, [1.02, 0.03, -0.02, 0.98, 0.4, -0.3], [24.0, 20.0])


def evaluate(metric, points):
    return metric.value_and_gradient(TRANSFORM, Samples(points, torch.zeros(points.shape[0])))


@pytest.mark.parametrize("distance,subset", [("L2", 0), ("NCC", 4), ("Cosine", 3)])
def test_batched_jacobian_equals_one_batch(smooth_model, distance, subset):
    points = sample_points()
    whole = metric_for(smooth_model, MemoryBudget(2 ** 34, True), distance, subset)
    value, grad, valid = evaluate(whole, points)
    small = metric_for(smooth_model, MemoryBudget(whole.mode.patch_bytes[0] * 7, True), distance, subset)
    b_value, b_grad, b_valid = evaluate(small, points)
    assert 2 <= valid == b_valid < 300  # some patches leave the moving image
    assert abs(b_value - value) <= 1e-6 * abs(value)
    assert float((b_grad - grad).norm()) <= 5e-6 * float(grad.norm())  # float32 sums in another order


def test_a_batch_without_valid_patches(smooth_model):
    points = torch.cat([torch.full((20, 2), -50.0), sample_points(100)])  # the first batches lie outside
    value, grad, valid = evaluate(metric_for(smooth_model, MemoryBudget(2 ** 34, True)), points)
    small = metric_for(smooth_model, MemoryBudget(2 ** 34, True))
    small.mode.patch_bytes[0] = 2 ** 34 // 8
    b_value, b_grad, b_valid = evaluate(small, points)
    assert valid == b_valid and abs(b_value - value) <= 1e-6 * abs(value)
    assert float((b_grad - grad).norm()) <= 5e-6 * float(grad.norm())


def test_out_of_memory_halves_the_batch(smooth_model):
    points = sample_points(100)
    value, grad, _ = evaluate(metric_for(smooth_model, MemoryBudget(2 ** 34, True)), points)
    metric = metric_for(smooth_model, MemoryBudget(2 ** 34, True))
    moving_model = metric.mode.inputs.moving_models[0]
    refusing = RefusesLargeBatches(moving_model.model, 12)
    moving_model.model = refusing
    b_value, b_grad, _ = evaluate(metric, points)
    refused = [b for b in refusing.batches if b > 12]
    assert refusing.batches[0] > 12 and refused == sorted(refused, reverse=True)[:len(refused)]
    assert sum(b for b in refusing.batches if b <= 12) >= 2 * 50  # every kept patch went through both passes
    assert abs(b_value - value) <= 1e-6 * abs(value)
    assert float((b_grad - grad).norm()) <= 5e-6 * float(grad.norm())  # float32 sums in another order


def test_halving_gives_up_at_one_item():
    calls = []

    def run(start, stop):
        calls.append(stop - start)
        raise MemoryError()

    with pytest.raises(MemoryLimitError, match="too big"):
        halving(run, 10, 8, lambda: MemoryLimitError("too big"))
    assert calls == [8, 4, 2, 1]
    with pytest.raises(RuntimeError, match="shape"):  # other errors pass through
        halving(lambda a, b: (_ for _ in ()).throw(RuntimeError("bad shape")), 4, 4, lambda: MemoryLimitError("x"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"))


def test_a_patch_that_cannot_fit_is_one_line(smooth_model):
    metric = metric_for(smooth_model, MemoryBudget(2 ** 20, True), patch=(31, 31))
    with pytest.raises(MemoryLimitError) as info:
        evaluate(metric, sample_points(10))
    message = str(info.value)
    assert "\n" not in message and "31x31" in message and "--memory-limit" in message and "ImpactPatchSize" in message


@pytest.mark.parametrize("text,expected", [("4G", 4 * 2 ** 30), ("800M", 800 * 2 ** 20), ("1.5GiB", 3 * 2 ** 29),
                                           ("512mb", 512 * 2 ** 20), ("2000000000", 2000000000)])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["lots", "4X", "-1G", "", "10K"])
def test_memory_limit_errors_are_one_line_exit_2(text, tmp_path, capsys):
    with pytest.raises(ParameterError):
        parse_memory(text)
    image = write_image(blobs(0), tmp_path / "f.mha")
    code = main(["register", "-f", str(image), "-m", str(image), "--preset", "rigid", "-out", str(tmp_path / "o"),
                 f"--memory-limit={text}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "--memory-limit" in err


def test_default_budget_is_a_share_of_available_memory():
    budget = MemoryBudget.resolve()
    assert 2 ** 28 <= budget.bytes and not budget.explicit
    assert MemoryBudget.resolve("1G").bytes == 2 ** 30 and MemoryBudget.resolve("1G").explicit


def volume(size=(40, 36, 30)) -> Image:
    rng = np.random.default_rng(3)
    data = torch.from_numpy(rng.normal(size=size[::-1]).astype(np.float32))
    data = torch.nn.functional.avg_pool3d(data[None, None], 3, stride=1, padding=1)[0]
    return Image(data, Grid(size, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)))


def test_static_maps_in_budget_sized_tiles_equal_the_whole_image():
    from impactreg.features import image_stats, load_extractor
    from impactreg.features.inference import feature_maps

    image = volume()
    mind = load_extractor("MIND/R1D2", 3)
    stats = image_stats(image.data)
    _, whole = feature_maps(mind, image, (1, 1, 1), (0, 0, 0), "1", stats, "cpu", MemoryBudget(2 ** 32, True))
    maps_bytes = whole[0].data.numel() * 4
    _, tiled = feature_maps(mind, image, (1, 1, 1), (0, 0, 0), "1", stats, "cpu", MemoryBudget(maps_bytes + 2 ** 20, True))
    assert tiled[0].grid == whole[0].grid
    # MIND is local but for a clamp of its variance to [0.001, 1000] x the tile's mean: equal where that is not hit
    assert float((tiled[0].data - whole[0].data).abs().max()) < 1e-5


def test_static_tiles_halve_on_out_of_memory():
    from impactreg.features import image_stats, load_extractor
    from impactreg.features.budgeted import run_within_budget

    image = volume()
    mind = load_extractor("MIND/R1D2", 3)
    stats = image_stats(image.data)
    expected = run_within_budget(mind, image.data, stats, torch.eye(3), [0], 1, MemoryBudget(2 ** 32, True))[0][0]
    mind.model = RefusesLargeVolumes(mind.model, 32 ** 3)  # the 40x36x30 image must go in tiles
    got = run_within_budget(mind, image.data, stats, torch.eye(3), [0], 1, MemoryBudget(2 ** 32, True))[0][0]
    assert max(mind.model.sizes) > 32 ** 3 and len(mind.model.sizes) > 3
    assert float((got - expected).abs().max()) < 1e-5


def test_static_maps_that_cannot_fit_are_one_line(tmp_path, capsys):
    fixed = write_image(volume(), tmp_path / "f.mha")
    pm = tmp_path / "map.txt"
    pm.write_text('(Transform "TranslationTransform")\n(Metric "Impact")\n(NumberOfResolutions 1)\n'
                  '(MaximumNumberOfIterations 2)\n(ImpactModelsPath0 "MIND/R1D2")\n(ImpactMode "Static")\n'
                  '(ImpactPatchSize0 0 0 0)\n(ImpactVoxelSize0 0.5 0.5 0.5)\n(WriteResultImage "false")\n')
    code = main(["register", "-f", str(fixed), "-m", str(fixed), "-p", str(pm), "-out", str(tmp_path / "o"),
                 "--memory-limit", "8M"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "MIND/R1D2" in err and "ImpactVoxelSize" in err and "--memory-limit" in err

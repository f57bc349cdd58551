"""IMPACT-Synth: the IMPACT loss with a 2D model run slice by slice on volumes, channel replication,
per-layer weights, a mask on each feature grid, frozen model weights; and the synthesis example's
training step on tiny volumes."""
from __future__ import annotations

import argparse
import importlib.util

import pytest
import torch

import impactreg
from conftest import REPO
from impactreg.errors import ModelError


class TwoLayers(torch.nn.Module):
    """A 2D RGB feature model with weights: a full-resolution layer and a stride-2 layer."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1)

    def forward(self, x):
        first = torch.tanh(self.a(x))
        return [first, torch.tanh(self.b(first))]


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("synth") / "two_layers_2d.pt"
    torch.jit.script(TwoLayers()).save(str(path))
    return path


def volume(seed: int, shape=(5, 16, 20)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.avg_pool3d(torch.rand((1, 1) + shape, generator=g), 3, 1, 1) * 100


def test_slice_by_slice_equals_the_2d_loss_on_the_slices():
    loss3d = impactreg.IMPACT("MIND/R1D2", dimension=2, slice_axis=0)
    loss2d = impactreg.IMPACT("MIND/R1D2", dimension=2)
    a, b = volume(0), volume(1)
    slices = lambda v: v[0].transpose(0, 1)  # noqa: E731  (1, 1, Z, Y, X) -> (Z, 1, Y, X)
    torch.testing.assert_close(loss3d(a, b), loss2d(slices(a), slices(b)), atol=1e-6, rtol=1e-5)
    along_y = impactreg.IMPACT("MIND/R1D2", dimension=2, slice_axis=1)
    assert float(along_y(a, b)) > 0 and float(along_y(a, a)) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ModelError):
        loss2d(a, b)  # a volume needs slice_axis with a 2D model
    with pytest.raises(ModelError):
        impactreg.IMPACT("MIND/R1D2", dimension=3, slice_axis=0)


def test_gradients_reach_the_input_only_with_weights_channels_and_mask(rgb_model):
    loss = impactreg.IMPACT(str(rgb_model), dimension=2, channels=3, layers_mask="11", weights=[1.0, 0.5],
                            normalization="zscore", slice_axis=0, slice_batch=2)
    real = volume(2)
    synthetic = volume(3).requires_grad_(True)
    value = loss(real, synthetic)
    value.backward()
    assert float(value) > 0 and float(synthetic.grad.abs().sum()) > 0
    model = loss.extractors[0].model
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    only_first = impactreg.IMPACT(str(rgb_model), dimension=2, channels=3, layers_mask="11", weights=[1.0, 0.0],
                                  normalization="zscore", slice_axis=0)
    only_second = impactreg.IMPACT(str(rgb_model), dimension=2, channels=3, layers_mask="11", weights=[0.0, 1.0],
                                   normalization="zscore", slice_axis=0)
    parts = float(only_first(real, synthetic)) + 0.5 * float(only_second(real, synthetic))
    assert float(value) == pytest.approx(parts, rel=1e-5)
    mask = torch.zeros_like(real)
    mask[..., 4:12, 5:15] = 1  # resampled to the full- and half-resolution feature grids
    masked = float(loss(real, synthetic, mask))
    assert masked > 0 and masked != pytest.approx(float(value), rel=1e-3)


def test_synthesis_example_trains_with_impact_synth_on_slabs():
    pytest.importorskip("monai")
    spec = importlib.util.spec_from_file_location("synthesis_example", REPO / "examples" / "synthesis_impact_synth.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    x = volume(4, (12, 24, 24))[0, 0] / 100
    y = 1 - x
    head = torch.ones_like(x)
    train_blocks, held = example.split_slices(head, block=3, every=4)
    args = argparse.Namespace(seed=0, lr=1e-3, epochs=1, model="MIND/R1D2", channels=1, layers="1", distance="L1",
                              normalization="none")
    scores = example.train_and_score(0.5, (x, y, head, train_blocks, held), args)
    assert held and scores["mae"] > 0 and -1 <= scores["ssim"] <= 1

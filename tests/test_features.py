"""Feature extractors: MIND against its formula, export, TorchScript loading, the model hub cache."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from impactreg.errors import ModelError
from impactreg.features import MIND, export_mind, load_extractor, resolve_model_path
from impactreg.features.mind import neighbour_pairs


def mind_numpy(image: np.ndarray, r: int, d: int) -> np.ndarray:
    """MIND-SSC written out from its definition (IMPACT_FACTS.md), image min-max normalised."""
    x = (image - image.min()) / (image.max() - image.min())
    dim = x.ndim
    padded = np.pad(x, d, mode="edge")
    channels = []
    for a, b in neighbour_pairs(dim):
        def shifted(o):
            return padded[tuple(slice(d + d * oi, d + d * oi + n) for oi, n in zip(o, x.shape))]
        diff = shifted(a) - shifted(b)
        channels.append(ndimage.uniform_filter(diff ** 2, size=2 * r + 1, mode="nearest"))
    ssd = np.stack(channels)
    mind = ssd - ssd.min(axis=0)
    var = mind.mean(axis=0)
    var = np.clip(var, 0.001 * var.mean(), 1000 * var.mean())
    return np.exp(-mind / var)


@pytest.mark.parametrize("dim,r,d", [(3, 1, 2), (3, 2, 1), (2, 1, 2), (2, 0, 1)])
def test_mind_matches_its_formula(dim, r, d):
    image = np.random.default_rng(dim + r).normal(size=(9, 11, 10)[:dim]).cumsum(axis=0)
    expected = mind_numpy(image, r, d)
    x = torch.from_numpy(image).float()[None, None]
    stats = torch.tensor([x.min(), x.max(), x.mean(), x.std()])
    got = MIND(r, d, dim)(x, torch.ones(1), stats, torch.zeros(0))[0][0].numpy()
    assert got.shape == expected.shape and got.shape[0] == (12 if dim == 3 else 4)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_exported_mind_loads_back_with_the_new_signature(tmp_path):
    path = export_mind(tmp_path / "MIND_R1D2_3D.pt", 1, 2, 3)
    loaded = torch.jit.load(str(path))
    assert [a.name for a in loaded.forward.schema.arguments][1:] == ["x", "nb_layers", "stats", "direction"]
    x = torch.rand(2, 1, 8, 9, 7)
    stats = torch.tensor([0.0, 1.0, 0.5, 0.3])
    direct = MIND(1, 2, 3)(x, torch.ones(1), stats, torch.eye(3))[0]
    np.testing.assert_allclose(loaded(x, torch.ones(1), stats, torch.eye(3))[0].numpy(), direct.numpy(), atol=1e-6)
    extractor = load_extractor(str(path), 3)
    assert extractor.arity == 4
    assert extractor.layer_shapes((7, 7, 7), "cpu") == [(12, (7, 7, 7))]


def test_m730_layer1_loads_and_runs(data_dir):
    extractor = load_extractor(str(data_dir / "models" / "M730_1_Layers.pt"), 3, 1, "zscore")
    assert extractor.arity == 1
    x = torch.randn(3, 1, 5, 5, 5) * 200 + 40
    stats = torch.tensor([-1000.0, 1000.0, 40.0, 200.0])
    out = extractor(x, stats, torch.eye(3, dtype=torch.int64))
    assert len(out) == 1 and out[0].shape == (3, 32, 5, 5, 5) and torch.isfinite(out[0]).all()


class NewSignature(torch.nn.Module):
    """A tiny two-layer model that uses the stats and layer-count arguments."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv3d(1, 4, 3, padding=1)
        self.b = torch.nn.Conv3d(4, 6, 3, padding=1, stride=2)

    def forward(self, x, nb_layers: torch.Tensor, stats: torch.Tensor, direction: torch.Tensor):
        x = (x - stats[2]) / stats[3]
        first = torch.relu(self.a(x))
        return [first, self.b(first)][: int(nb_layers[0])]


def test_new_signature_model_gets_stats_and_layer_count(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    torch.jit.script(NewSignature()).save(str(path))
    extractor = load_extractor(str(path), 3)
    assert extractor.arity == 4
    x = torch.rand(1, 1, 8, 8, 8)
    out = extractor(x, torch.tensor([0.0, 1.0, 0.5, 0.25]), torch.eye(3, dtype=torch.int64), nb_layers=2)
    assert [o.shape for o in out] == [(1, 4, 8, 8, 8), (1, 6, 4, 4, 4)]
    shifted = extractor(x, torch.tensor([0.0, 1.0, 0.0, 0.25]), torch.eye(3, dtype=torch.int64), nb_layers=2)
    assert not torch.allclose(out[0], shifted[0])  # the stats reach the model


def test_hub_names_resolve_through_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPACTREG_MODELS", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    source = export_mind(tmp_path / "published.pt", 1, 1, 3)
    calls = []

    def fake_hub(name, destination):
        calls.append(name)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(source.read_bytes())
        return destination

    first = resolve_model_path("TS/M730_2_Layers.pt", downloader=fake_hub)
    second = resolve_model_path("TS/M730_2_Layers.pt", downloader=fake_hub)
    assert first == second == tmp_path / "cache" / "TS" / "M730_2_Layers.pt"
    assert calls == ["TS/M730_2_Layers.pt"]  # downloaded once, then read from the cache
    extractor = load_extractor("TS/M730_2_Layers.pt", 3, downloader=fake_hub)
    assert extractor.arity == 4


def test_missing_model_errors_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPACTREG_MODELS", str(tmp_path / "cache"))

    def offline(name, destination):
        raise ModelError(f"model {name!r} could not be downloaded; put it at {destination}")

    with pytest.raises(ModelError, match="put it at"):
        resolve_model_path("TS/M999.pt", downloader=offline)
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model_path(str(tmp_path / "nowhere.pt"), downloader=offline)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a loadable TorchScript model"):
        load_extractor(str(broken), 3)

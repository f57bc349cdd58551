"""Networks shipped in installed packages: deepbet's LinkNet3d as an IMPACT feature extractor."""
from __future__ import annotations

import os
from importlib import metadata

import pytest
import torch

from impactreg.cli import main
from impactreg.errors import ModelError
from impactreg.features import image_stats, load_extractor
from impactreg.features.catalog import CATALOG, receptive_half_width
from impactreg.features.packaged import packaged_name, ras_order, recentre

LPS_TO_RAS = torch.tensor([[-1, 0, 0], [0, -1, 0], [0, 0, 1]])  # index axes i, j, k along R, A, S


def _deepbet_installed() -> bool:
    try:
        metadata.distribution("deepbet")
    except metadata.PackageNotFoundError:
        message = "deepbet is not installed (pip install 'impactreg[deepbet]')"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return True


@pytest.fixture(scope="module")
def linknet():
    _deepbet_installed()
    return load_extractor("deepbet/LinkNet3d", 3)


def test_the_head_layer_is_deepbets_own_output(linknet):
    x = torch.randn(1, 1, 32, 64, 32, generator=torch.Generator().manual_seed(0))
    stats = image_stats(x[0])
    with torch.no_grad():
        ours = linknet(x, stats, LPS_TO_RAS, 12)[11]
        normalised = (x - stats[2]) / stats[3] * 0.226 + 0.449
        theirs = linknet.model.network(normalised.permute(0, 1, 4, 3, 2)).permute(0, 1, 4, 3, 2)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_layers_cover_their_input_with_the_catalogued_channels_and_strides(linknet):
    x = torch.randn(1, 1, 20, 37, 33)
    with torch.no_grad():
        layers = linknet(x, image_stats(x[0]), torch.eye(3, dtype=torch.int64), 12)
    info = next(i for i in CATALOG if i.name == "deepbet/LinkNet3d")
    assert len(layers) == len(info.layers) == 12
    for layer, (channels, stride, _) in zip(layers, info.layers):
        assert layer.shape[1] == channels
        assert tuple(layer.shape[2:]) == tuple(-(-n // stride) for n in (20, 37, 33))
    with torch.no_grad():
        assert len(linknet(x, image_stats(x[0]), torch.eye(3, dtype=torch.int64), 2)) == 2  # only as deep as asked
    assert receptive_half_width(linknet, [1]) == 43 // 2


def test_features_follow_the_anatomy_not_the_storage_order(linknet):
    """The same image stored with its x axis reversed (direction flipped) gives the same features, reversed."""
    x = torch.randn(1, 1, 32, 32, 64, generator=torch.Generator().manual_seed(1))
    stats = image_stats(x[0])
    with torch.no_grad():
        stored = linknet(x, stats, torch.eye(3, dtype=torch.int64), 4)
        reversed_ = linknet(x.flip(4), stats, torch.diag(torch.tensor([-1, 1, 1])), 4)
    for a, b in zip(stored, reversed_):
        torch.testing.assert_close(a, b.flip(4), rtol=0, atol=1e-5)


def test_ras_order_reads_signed_permutations():
    assert ras_order(LPS_TO_RAS) == ([2, 1, 0], [])
    assert ras_order(torch.eye(3, dtype=torch.int64)) == ([2, 1, 0], [2, 1])
    axial_to_coronal = torch.tensor([[1, 0, 0], [0, 0, 1], [0, -1, 0]])  # j along -z, k along +y
    assert ras_order(axial_to_coronal) == ([2, 0, 1], [2, 0, 1])
    assert ras_order(torch.tensor([[1, 1, 0], [0, 0, 0], [0, 0, 1]])) is None


def test_recentre_moves_strided_voxels_to_the_middle_of_their_input_voxels():
    k = 4
    centres = (k * torch.arange(6, dtype=torch.float64)).reshape(1, 1, 6)  # voxel n sits on input k n
    moved = recentre(centres, k)
    torch.testing.assert_close(moved[0, 0, :-1], centres[0, 0, :-1] + (k - 1) / 2)


def test_packaged_names_and_bad_uses(monkeypatch):
    assert packaged_name("deepbet/LinkNet3d.pt") == "deepbet/LinkNet3d"
    assert packaged_name("TS/M730.pt") is None

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(ModelError, match=r"pip install 'impactreg\[deepbet\]'"):
        load_extractor("deepbet/LinkNet3d_head", 3)
    with pytest.raises(ModelError, match="3D network"):
        load_extractor("deepbet/LinkNet3d", 2)


def test_models_command_lists_the_packaged_networks(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "deepbet/LinkNet3d " in out and "L5: 128 ch /32 rf 435" in out
    assert "Packaged deepbet/LinkNet3d:" in out

"""IMPACT's keys as the elastix IMPACT metric reads them: values per selected layer, VoxelSize by mode,
ImpactGPU, and where model names resolve (cache, the Docker layout /Data/Models/<hub name>, ./files)."""
from __future__ import annotations

import logging

import pytest
import torch

from impactreg.errors import ModelError, ParameterError
from impactreg.features.torchscript import published_name, resolve_model_path
from impactreg.metrics.impact import impact_level
from impactreg.parameters import ParameterMap

TWO = ["MIND/R1D2", "MIND/R1D1"]


def level(entries, image_dim=3, device_given=False):
    return impact_level(ParameterMap(entries), 0, image_dim, torch.device("cpu"), device_given)


def test_subset_pca_distance_and_weights_hold_one_value_per_selected_layer():
    config = level({"ImpactModelsPath0": TWO, "ImpactLayersMask0": ["101", "1"], "ImpactSubsetFeatures0": [4, 8, 2],
                    "ImpactPCA0": [0, 3, 0], "ImpactDistance0": ["L1", "Cosine", "NCC"],
                    "ImpactLayersWeight0": [1, 0.5, 2]})
    assert config.subset_features == [[4, 8], [2]] and config.pca == [[0, 3], [0]]
    assert config.distances == [["L1", "Cosine"], ["NCC"]] and config.layer_weights == [[1.0, 0.5], [2.0]]
    one = level({"ImpactModelsPath0": TWO, "ImpactLayersMask0": ["101", "1"], "ImpactDistance0": "Dice"})
    assert one.distances == [["Dice", "Dice"], ["Dice"]]


def test_one_value_per_model_is_refused_when_a_model_selects_several_layers():
    with pytest.raises(ParameterError, match="SubsetFeatures: 2 values for 3 selected layer"):
        level({"ImpactModelsPath0": TWO, "ImpactLayersMask0": ["11", "1"], "ImpactSubsetFeatures0": [4, 8]})


def test_extra_values_are_ignored_with_a_warning_as_elastix_does(caplog):
    with caplog.at_level(logging.WARNING, logger="impactreg"):
        config = level({"ImpactModelsPath0": "MIND/R1D2", "ImpactLayersWeight0": [1, 2],
                        "ImpactPatchSize0": [7, 7, 7, 9, 9, 9]})
    assert config.layer_weights == [[1.0]] and config.fixed[0].patch_size == (7, 7, 7)
    assert "extra values 2 are ignored" in caplog.text and "extra numbers 9 9 9 are ignored" in caplog.text


@pytest.mark.parametrize("mode,given,voxel", [
    ("Static", [2, 2, 4], (2.0, 2.0, 4.0)),  # elastix: the image's dimension in Static mode
    ("Static", [2, 3], (2.0, 3.0)),  # a 2D model's planar sizes, the third from the image
    ("Jacobian", [2, 3], (2.0, 3.0)),  # elastix: the model's dimension in Jacobian mode (patch spacing)
])
def test_voxel_size_of_a_2d_model_on_a_3d_image(mode, given, voxel):
    config = level({"ImpactModelsPath0": "MIND/R1D2", "ImpactDimension0": 2, "ImpactPatchSize0": [7, 7],
                    "ImpactVoxelSize0": given, "ImpactMode": mode})
    assert config.fixed[0].voxel_size == voxel and config.fixed[0].patch_size == (7, 7)


def test_static_voxel_sizes_of_mixed_models_follow_the_image_dimension():
    config = level({"ImpactModelsPath0": TWO, "ImpactDimension0": [2, 3], "ImpactPatchSize0": [0, 0, 0, 0, 0],
                    "ImpactVoxelSize0": [1, 1, 2, 3, 3, 3], "ImpactMode": "Static"})
    assert [s.voxel_size for s in config.fixed] == [(1.0, 1.0, 2.0), (3.0, 3.0, 3.0)]
    with pytest.raises(ParameterError, match="4 numbers for model.s. of dimensions 2 3; give 6 .or 5"):
        level({"ImpactModelsPath0": TWO, "ImpactDimension0": [2, 3], "ImpactPatchSize0": [0] * 5,
               "ImpactVoxelSize0": [1, 1, 2, 3], "ImpactMode": "Static"})


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.mark.parametrize("entries", [{"ImpactGPU": 0}, {"GPU": 1}, {"ImpactGPU": [-1, 0]}])
def test_a_gpu_that_is_not_there_is_refused_not_replaced_by_the_cpu(entries, no_cuda):
    pm = ParameterMap(dict({"ImpactModelsPath0": "MIND/R1D2"}, **entries))
    last = len(next(iter(entries.values()))) - 1 if isinstance(next(iter(entries.values())), list) else 0
    with pytest.raises(ParameterError, match=r"\(ImpactGPU \d\): CUDA is not available .*ImpactGPU -1.*--device cpu"):
        impact_level(pm, last, 3, torch.device("cpu"))


def test_cpu_and_a_given_device_decide_where_the_models_run(no_cuda, caplog):
    assert level({"ImpactModelsPath0": "MIND/R1D2", "ImpactGPU": -1}).device == torch.device("cpu")
    with caplog.at_level(logging.WARNING, logger="impactreg"):
        assert level({"ImpactModelsPath0": "MIND/R1D2", "ImpactGPU": 0}, device_given=True).device == torch.device("cpu")
    assert "(ImpactGPU 0): the models run on cpu" in caplog.text


def test_a_gpu_index_beyond_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ParameterError, match=r"\(ImpactGPU 3\): this machine has 1 CUDA device"):
        level({"ImpactModelsPath0": "MIND/R1D2", "ImpactGPU": 3})
    assert level({"ImpactModelsPath0": "MIND/R1D2", "ImpactGPU": 0}).device == torch.device("cuda:0")


def test_docker_model_paths_stand_for_hub_names(tmp_path, monkeypatch):
    from pathlib import Path
    assert published_name(Path("/Data/Models/TS/M730_2_Layers.pt")) == "TS/M730_2_Layers.pt"
    assert published_name(Path("/home/me/models/SAM2.1/Tiny_2_Layers.pt")) == "SAM2.1/Tiny_2_Layers.pt"
    assert published_name(Path("/home/me/net.pt")) is None
    monkeypatch.setenv("IMPACTREG_MODELS", str(tmp_path))
    (tmp_path / "TS").mkdir()
    (tmp_path / "TS" / "M730_2_Layers.pt").write_bytes(b"x")
    assert resolve_model_path("/Data/Models/TS/M730_2_Layers.pt") == tmp_path / "TS" / "M730_2_Layers.pt"
    asked = []
    resolve_model_path("/Data/Models/TS/M258_2_Layers.pt", downloader=lambda name, dest: asked.append((name, dest)))
    assert asked == [("TS/M258_2_Layers.pt", tmp_path / "TS" / "M258_2_Layers.pt")]
    with pytest.raises(ModelError, match="model file /home/me/net.pt does not exist"):
        resolve_model_path("/home/me/net.pt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match=r"model file \./net\.pt not found in .*; put it there or give its absolute path"):
        resolve_model_path("./net.pt", downloader=lambda *a: pytest.fail("a ./path is no hub name"))

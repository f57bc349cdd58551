"""The IMPACT authors' parameter maps (../shared/elastix-maps/impactloss) and the elastix IMPACT
plugin's test maps (impactelastix-testing) run unchanged through ``impactreg register``: only the
iterations and sample counts are cut (for time). The weights they name cannot be downloaded here,
so stand-ins with the published layer counts, dimensions and input channels are put where the maps
look for them: in the model cache ($IMPACTREG_MODELS) under the hub names that follow /Data/Models/,
and next to the working folder for the plugin's ./M730_1_Layers.pt and ./R1D2_2D.pt. MIND/R1D2.pt
is the built-in MIND."""
from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from impactreg import cli
from impactreg.geometry import Grid
from impactreg.image import Image, read_image, write_image
from impactreg.metrics.impact import impact_level
from impactreg.parameters import ParameterMap
from impactreg.parameters.parse import parse_parameter_text
from impactreg.transforms.elastix_files import read_transform_file

from conftest import REPO

MAPS = REPO.parent / "shared" / "elastix-maps"
AUTHORS = ["ParameterMap_Config_AllOptions.txt", "ParameterMap_Jacobian.txt", "ParameterMap_Recommended.txt",
           "ParameterMap_SAM_2_Layers_Jacobian.txt", "ParameterMap_Static.txt"]
PLUGIN = ["parameters.2D.IMPACT.bspline.ASGD.002.txt", "parameters.3D.IMPACT.bspline.ASGD.001.txt",
          "parameters.3D.IMPACT.bspline.ASGD.002.txt"]


class Layers3D(torch.nn.Module):
    """Stand-in for a published N-layer 3D export: the real first TotalSegmentator stage, then
    alternately itself and a stride-2 average of it (strided layers as the encoder's)."""

    def __init__(self, stage, layers: int):
        super().__init__()
        self.stage, self.layers = stage, layers

    def forward(self, x):
        f = self.stage(x)[0]
        out = [f]
        for i in range(1, self.layers):
            out.append(F.avg_pool3d(f, 2, 2, ceil_mode=True) if i % 2 == 1 else f)
        return out


class RGB2D(torch.nn.Module):
    """Stand-in for SAM2.1 Tiny, 2 layers (2D, 3 input channels): the real 2D MIND of the channel
    mean, and a stride-2 average of it."""

    def __init__(self, mind):
        super().__init__()
        self.mind = mind

    def forward(self, x):
        m = self.mind(x.mean(dim=1, keepdim=True))[0]
        return [m, F.avg_pool2d(m, 2, 2, ceil_mode=True)]


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory, data_dir):
    models = data_dir / "models"
    cache = tmp_path_factory.mktemp("cache")
    stage = torch.jit.load(str(models / "M730_1_Layers.pt"))
    mind2d = torch.jit.load(str(models / "R1D2_2D.pt"))
    for name, module in (("TS/M730_2_Layers.pt", Layers3D(stage, 2)), ("TS/M730_8_Layers.pt", Layers3D(stage, 8)),
                         ("SAM2.1/Tiny_2_Layers.pt", RGB2D(mind2d))):
        (cache / name).parent.mkdir(parents=True, exist_ok=True)
        torch.jit.script(module).save(str(cache / name))
    return cache


@pytest.fixture(scope="module")
def images(tmp_path_factory, data_dir):
    """Small real pairs: a 32x32x16 block of the lung CT and a copy moved by one voxel (2.7 mm); an
    80^3 block (240 mm) of the abdominal CT and a copy moved by one voxel (3 mm); the BrainWeb T1
    slice and the PD slice shifted by (13, 17) mm, also with their pixels read as 3 mm."""
    folder = tmp_path_factory.mktemp("images")
    ct = read_image(data_dir / "lung_ct" / "3DCT_lung_baseline_small.mha")
    block = ct.data[:, 24:40, 20:52, 12:44]
    grid = ct.grid.region((12, 20, 24), (32, 32, 16))
    write_image(Image(block.clone(), grid), folder / "fixed3d.mha")
    write_image(Image(torch.roll(block, shifts=1, dims=3).clone(), grid), folder / "moving3d.mha")
    abdomen = read_image(data_dir / "abdomen_ct_mr" / "ct.nii.gz")  # 3 mm voxels
    abdomen = Image(abdomen.data[:, 16:96, 10:90, 21:101].clone(), abdomen.grid.region((21, 10, 16), (80, 80, 80)))
    write_image(abdomen, folder / "abdomen.mha")
    write_image(abdomen.with_data(torch.roll(abdomen.data, shifts=1, dims=3).clone()), folder / "abdomen_moved.mha")
    brain = data_dir / "brainweb2d"
    for name in ("BrainT1Slice", "BrainProtonDensitySliceShifted13x17y"):  # 1 mm pixels read as 3 mm
        slice_ = read_image(brain / f"{name}.png").channel(0)
        grid = slice_.grid
        write_image(Image(slice_.data, Grid(grid.size, grid.spacing * 3, grid.origin, grid.direction)),
                    folder / f"{name}_3mm.mha")
    return {3: (folder / "fixed3d.mha", folder / "moving3d.mha"),
            "large": (folder / "abdomen.mha", folder / "abdomen_moved.mha"),
            2: (brain / "BrainT1Slice.png", brain / "BrainProtonDensitySliceShifted13x17y.png"),
            "large2d": (folder / "BrainT1Slice_3mm.mha", folder / "BrainProtonDensitySliceShifted13x17y_3mm.mha")}


def cut(text: str, iterations: int = 2, samples: int = 32, exact: int = 64) -> str:
    """The map with fewer iterations and samples (time only); every other line as published."""
    text = re.sub(r"\(MaximumNumberOfIterations [^)]*\)", f"(MaximumNumberOfIterations {iterations})", text)
    text = re.sub(r"\(NumberOfSpatialSamples [^)]*\)", f"(NumberOfSpatialSamples {samples})", text)
    text = re.sub(r"\(NumberOfSamplesForExactGradient [^)]*\)", "", text)
    return text + f"\n(NumberOfSamplesForExactGradient {exact})\n"


def published(folder: str, name: str) -> Path:
    """A published map by path; skipped when the corpus is absent, a failure under CI=true (as data_dir)."""
    path = MAPS / folder / name
    if not path.is_file():
        message = f"published map {path} not found"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def register(tmp_path, capsys, map_path: Path, which, images, *flags) -> tuple[int, str]:
    """``impactreg register`` on the cut map and the image pair ``images[which]``."""
    param = tmp_path / map_path.name
    param.write_text(cut(map_path.read_text()))
    fixed, moving = images[which]
    logger = logging.getLogger("impactreg")
    handlers, propagate = list(logger.handlers), logger.propagate
    try:  # cli.main adds its console handler on the captured stderr of this call
        code = cli.main(["register", "-f", str(fixed), "-m", str(moving), "-p", str(param), "-out",
                         str(tmp_path / "out"), "-threads", "1", *flags])
    finally:
        logger.handlers, logger.propagate = handlers, propagate
    return code, capsys.readouterr().err


def working_folder(tmp_path, monkeypatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def check_result(tmp_path, dim: int):
    tf = read_transform_file(tmp_path / "out" / "TransformParameters.0.txt")
    params = tf.transform.parameters
    assert params.numel() > 0 and bool(torch.isfinite(params).all())
    assert tf.grid.dim == dim


@pytest.mark.parametrize("name", AUTHORS)
def test_authors_maps_run_with_their_docker_model_paths(name, tmp_path, monkeypatch, capsys, model_cache, images):
    """/Data/Models/<hub name> resolves through the cache; (ImpactGPU 0) gives way to --device cpu.
    Patches of 11^3 TotalSegmentator voxels at 6 mm (66 mm) need the 240 mm abdomen; the SAM map's
    29^2 pixels at 6 mm (174 mm; on a 3D image in a plane turned at random) run on the 2D slice read
    with 3 mm pixels (the map names no dimension; the 2D model on 3D images is the all-options map's)."""
    monkeypatch.setenv("IMPACTREG_MODELS", str(model_cache))
    working_folder(tmp_path, monkeypatch)
    which = {"ParameterMap_Jacobian.txt": 3, "ParameterMap_SAM_2_Layers_Jacobian.txt":
             "large2d"}.get(name, "large")
    code, err = register(tmp_path, capsys, published("impactloss", name), which, images, "--device", "cpu")
    assert code == 0, err
    check_result(tmp_path, 2 if which == "large2d" else 3)


@pytest.mark.parametrize("name", PLUGIN)
def test_plugin_test_maps_run_with_models_in_the_working_folder(name, tmp_path, monkeypatch, capsys, data_dir, images):
    work = working_folder(tmp_path, monkeypatch)
    for model in ("M730_1_Layers.pt", "R1D2_2D.pt"):
        shutil.copyfile(data_dir / "models" / model, work / model)
    dim = 2 if ".2D." in name else 3
    code, err = register(tmp_path, capsys, published("impactelastix-testing", name), dim, images)
    assert code == 0, err
    check_result(tmp_path, dim)
    if dim == 2:  # (ImpactFeatureMapOutputDirectory "./Features/"): relative to the working folder, as in elastix
        assert any(p.suffix == ".mha" for p in (work / "Features").iterdir())


def test_a_missing_relative_model_is_one_line_naming_where_it_was_looked_for(tmp_path, monkeypatch, capsys, images):
    working_folder(tmp_path, monkeypatch)
    code, err = register(tmp_path, capsys, published("impactelastix-testing", PLUGIN[1]), 3, images)
    assert code == 2 and "Traceback" not in err
    assert "model file ./M730_1_Layers.pt not found in" in err and str(tmp_path / "work") in err


def test_authors_gpu_maps_are_refused_without_cuda_unless_a_device_is_given(tmp_path, monkeypatch, capsys, model_cache,
                                                                           images):
    monkeypatch.setenv("IMPACTREG_MODELS", str(model_cache))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    working_folder(tmp_path, monkeypatch)
    code, err = register(tmp_path, capsys, published("impactloss", "ParameterMap_Static.txt"), 3, images)
    lines = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "(ImpactGPU 0): CUDA is not available" in lines[0] and "--device cpu" in lines[0]
    assert not (tmp_path / "out").exists()


def test_authors_all_options_map_reads_values_per_selected_layer():
    """Level 1 mixes a 2D 3-channel model (SAM) and a 3D one: PatchSize/VoxelSize are grouped by model
    dimension (Jacobian mode); SubsetFeatures/Distance/LayersWeight/PCA hold one value per selected layer."""
    entries = parse_parameter_text(published("impactloss", "ParameterMap_Config_AllOptions.txt").read_text())
    pm = ParameterMap({k: v for k, v in entries.items() if k.startswith("Impact")})  # what the IMPACT metric reads
    level0 = impact_level(pm, 0, 3, torch.device("cpu"), device_given=True)
    assert level0.subset_features == [[30]] and level0.distances == [["Dice"]] and level0.layer_weights == [[1.0]]
    level1 = impact_level(pm, 1, 3, torch.device("cpu"), device_given=True)
    sam, ts = level1.fixed
    assert (sam.dimension, sam.channels, sam.patch_size, sam.voxel_size) == (2, 3, (29, 29), (1.5, 1.5))
    assert (ts.dimension, ts.channels, ts.patch_size, ts.voxel_size) == (3, 1, (11, 11, 11), (1.5, 1.5, 1.5))
    assert level1.subset_features == [[1000], [64]] and level1.distances == [["L2"], ["L1"]]
    assert level1.pca == [[0], [0]] and level1.layer_weights == [[1.0], [1.0]]

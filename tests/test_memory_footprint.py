"""The whole process within --memory-limit: the estimate that refuses what cannot fit before any
work, the budget left to batched work, a measured peak below the limit, and the pieces that keep
large images from being copied (in-place prefilter, no voxel lists)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from impactreg.cli import main
from impactreg.compute.memory import MemoryBudget, format_bytes, parse_memory, resident_bytes
from impactreg.engine.footprint import stage_needs
from impactreg.errors import MemoryLimitError
from impactreg.geometry import Grid
from impactreg.image import Image, write_image
from impactreg.interpolation import bspline_coefficients, flush_subnormals
from impactreg.parameters import ParameterMap
from impactreg.pyramid import GenericImagePyramid, RecursiveImagePyramid, ShrinkingImagePyramid, SmoothingImagePyramid
from impactreg.sampling import ImageSampler

SRC = Path(__file__).resolve().parents[1] / "src"


def volume(size=(40, 36, 30), seed=3) -> Image:
    rng = np.random.default_rng(seed)
    data = torch.from_numpy(rng.normal(size=size[::-1]).astype(np.float32))
    data = torch.nn.functional.avg_pool3d(data[None, None], 5, stride=1, padding=2)[0] * 100
    return Image(data, Grid(size, (1.5, 1.5, 1.5), (0.0, 0.0, 0.0), np.eye(3)))


def test_process_budget_leaves_the_limit_less_what_the_process_holds():
    held = resident_bytes()
    assert held > 2 ** 24  # /proc/self/status is read
    budget = MemoryBudget(held + 2 ** 30, True, process=True)
    assert 2 ** 29 < budget.room() <= 2 ** 30
    assert budget.items(2 ** 20) == budget.room() // 2 ** 20 or abs(budget.items(2 ** 20) - 1024) < 64
    assert MemoryBudget(2 ** 30, True).room() == 2 ** 30  # a working-memory budget is what it says
    assert "left" in MemoryBudget(held // 2, True, process=True).describe()
    default = MemoryBudget.for_process()
    assert default.process and not default.explicit and default.bytes > resident_bytes()


def test_a_registration_that_cannot_fit_is_refused_before_any_work(tmp_path, capsys):
    fixed = write_image(volume(), tmp_path / "f.mha")
    pm = tmp_path / "map.txt"  # MIND feature maps at 0.5 mm: 2 x 12 channels x 1.2 M voxels x 2 copies
    pm.write_text('(Transform "TranslationTransform")\n(Metric "Impact")\n(NumberOfResolutions 1)\n'
                  '(ImpactModelsPath0 "MIND/R1D2")\n(ImpactMode "Static")\n(ImpactPatchSize0 0 0 0)\n'
                  '(ImpactVoxelSize0 0.5 0.5 0.5)\n(WriteResultImage "false")\n')
    out = tmp_path / "o"
    limit = f"{(resident_bytes() + 150 * 2 ** 20) // 2 ** 20}M"
    code = main(["register", "-f", str(fixed), "-m", str(fixed), "-p", str(pm), "-out", str(out), "--memory-limit", limit])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "stage 0 level 0 needs about" in err and "IMPACT feature maps of MIND/R1D2" in err
    shown = format_bytes(parse_memory(limit))
    assert f"--memory-limit is {shown}" in err and "a --memory-limit of at least" in err and "ImpactVoxelSize" in err
    assert not out.exists()  # refused before the output folder was made


def test_static_feature_maps_are_counted_and_named(tmp_path):
    image = volume()
    pm = ParameterMap({"Transform": "TranslationTransform", "Metric": "Impact", "NumberOfResolutions": 2,
                       "ImpactModelsPath0": "MIND/R1D2", "ImpactMode": "Static", "ImpactPatchSize0": [0, 0, 0],
                       "ImpactVoxelSize0": [3, 3, 3], "ImpactVoxelSize1": [0.5, 0.5, 0.5]})
    coarse, fine = stage_needs(0, pm, image, image, None, None)[:2]
    maps = [k for k in fine.parts if k.startswith("IMPACT feature maps")]
    assert maps == ["IMPACT feature maps of MIND/R1D2"]
    voxels = 120 * 108 * 90  # 40x36x30 voxels of 1.5 mm at 0.5 mm
    # 12 channels, each kept as values and cubic coefficients, for both images
    assert 2 * 2 * 12 * voxels * 4 <= fine.parts[maps[0]] <= 1.2 * 2 * 2 * 12 * voxels * 4 + 4 * voxels * 4 * 2
    assert coarse.parts[maps[0]] < fine.parts[maps[0]] / 50
    jacobian = ParameterMap(dict(pm.raw, ImpactMode=["Jacobian"], ImpactPatchSize0=["5", "5", "5"]))
    need = stage_needs(0, jacobian, image, image, None, None)[0]
    assert need.parts["IMPACT patch images"] == 2 * image.data.numel() * 4


JACOBIAN_MAP = ('(Transform "TranslationTransform")\n(Metric "Impact")\n(NumberOfResolutions 1)\n'
                '(MaximumNumberOfIterations 2)\n(ImpactModelsPath0 "MIND/R1D2")\n(ImpactMode "Jacobian")\n'
                '(ImpactPatchSize0 7 7 7)\n(ImpactVoxelSize0 1.5 1.5 1.5)\n(WriteResultImage "false")\n'
                '(NumberOfSpatialSamples 4000)\n(AutomaticParameterEstimation "false")\n(SP_a 1.0)\n')
PATCH_BYTES = 350_000  # the estimate of one 7x7x7 MIND patch through both passes; measured ~0.9 MB


def _peak_of_a_registration(tmp_path, limit_over_held: int, size) -> dict:
    """In a fresh process: (the resident set before the registration, the limit given, the peak resident set)."""
    paths = [str(write_image(volume(size, 1), tmp_path / "f.mha")), str(write_image(volume(size, 2), tmp_path / "m.mha"))]
    pm = tmp_path / "map.txt"
    pm.write_text(JACOBIAN_MAP)
    script = ("import json, sys, impactreg\n"
              "from impactreg.compute.memory import resident_bytes\n"
              "held = resident_bytes()\n"
              "limit = held + int(sys.argv[4])\n"
              "impactreg.register(sys.argv[1], sys.argv[2], [sys.argv[3]], memory_limit=limit)\n"
              "hwm = [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
              "print(json.dumps({'held': held, 'limit': limit, 'peak': hwm}))\n")
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", script, *paths, str(pm), str(limit_over_held)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc for the peak resident set")
def test_a_budgeted_jacobian_run_peaks_below_its_limit(tmp_path):
    """4000 patches of 7x7x7 through MIND with autograd need over 1.4 GB at once (3.6 GB measured); with
    250 MB over what the process holds they go in batches sized by a measured probe batch, and the
    process's peak (VmHWM) stays under the limit."""
    over = 250 * 2 ** 20
    assert 4000 * PATCH_BYTES > 4 * over  # one batch would not do
    result = _peak_of_a_registration(tmp_path, over, (64, 64, 64))
    assert result["peak"] <= result["limit"]


def test_prefilter_in_slabs_equals_the_whole_array(monkeypatch):
    """The torch FIR (GPU, kernels off) filters slab by slab; the compiled recursive filter needs no slabs."""
    import impactreg.compute.dispatch as dispatch
    import impactreg.interpolation as interpolation

    monkeypatch.setattr(dispatch, "ENABLED", False)
    data = volume((23, 17, 11)).data
    whole = bspline_coefficients(data, 3, torch.float64)
    monkeypatch.setattr(interpolation, "PREFILTER_SLAB_BYTES", 4096)  # slabs of one plane
    slabbed = bspline_coefficients(data, 3, torch.float64)
    assert float((slabbed - whole).abs().max()) < 1e-12
    assert torch.equal(data, volume((23, 17, 11)).data)  # the caller's data is untouched


def test_flush_subnormals_copies_only_when_it_must():
    clean = torch.tensor([1.0, -2.0, 0.0, 3e-30])
    assert flush_subnormals(clean, owned=False) is clean
    dirty = torch.tensor([1.0, 1e-40, -0.0, -1e-42])
    flushed = flush_subnormals(dirty, owned=False)
    assert flushed is not dirty and dirty[1] != 0  # the caller's tensor is kept
    assert flushed.tolist() == [1.0, 0.0, 0.0, 0.0] and not bool(flushed.signbit().any())
    assert flush_subnormals(dirty, owned=True) is dirty and dirty[1] == 0


def test_random_samplers_without_a_mask_draw_as_with_a_full_mask():
    grid = Grid((13, 11, 7), (1.0, 2.0, 0.5), (3.0, -1.0, 2.0), np.eye(3))
    full = torch.ones(grid.shape, dtype=torch.bool)
    for kind in ("Random", "RandomCoordinate"):
        unmasked = ImageSampler(kind, grid, None, 200, generator=torch.Generator().manual_seed(5)).sample()
        masked = ImageSampler(kind, grid, full, 200, generator=torch.Generator().manual_seed(5)).sample()
        assert torch.equal(unmasked, masked)
    for kind, spacing in (("Full", (1,)), ("Grid", (2, 3, 1)), ("Grid", (4, 4, 3))):  # grids centred on the image
        a = ImageSampler(kind, grid, None, grid_spacing=spacing).sample()
        b = ImageSampler(kind, grid, full, grid_spacing=spacing).sample()
        assert torch.equal(a, b)


def test_border_voxel_points_are_the_border_voxels():
    for size in [(5, 4, 3), (1, 4, 3), (2, 2, 2), (6, 5), (3, 4, 1)]:
        grid = Grid(size, (0.7,) * len(size), (1.0,) * len(size), np.eye(len(size)))
        index = grid.voxel_indices().numpy()
        border = ((index == 0) | (index == np.asarray(size) - 1)).any(axis=1)
        expected = sorted(map(tuple, grid.index_to_world(index[border])))
        assert sorted(map(tuple, grid.border_voxel_points())) == expected


@pytest.mark.parametrize("pyramid", [SmoothingImagePyramid, RecursiveImagePyramid, ShrinkingImagePyramid,
                                     GenericImagePyramid])
def test_pyramid_level_grids_without_the_levels(pyramid):
    image = volume((20, 17, 9))
    built = pyramid("Fixed").build(image, ParameterMap({}), 3)
    for level in range(3):
        assert built.level_grid(level).same_as(built.level(level).grid)


def test_resampling_in_chunks_equals_one_chunk(monkeypatch):
    import impactreg.warp as warp
    from impactreg.transforms import AffineTransform

    image = volume((15, 13, 11))
    transform = AffineTransform(3, [1.01, 0.02, 0, -0.01, 0.99, 0.03, 0, 0, 1.0, 0.4, -0.2, 0.1], [10.0, 9.0, 8.0])
    whole = warp.resample(image, transform, image.grid)
    monkeypatch.setattr(warp, "CHUNK", 97)
    assert torch.equal(warp.resample(image, transform, image.grid).data, whole.data)
    assert whole.data.dtype == torch.float32 and whole.data.shape == image.data.shape


def test_images_that_alone_cannot_fit_are_refused_before_they_are_read(tmp_path, capsys, monkeypatch):
    import impactreg.engine.registration as registration

    fixed = write_image(volume((120, 100, 80)), tmp_path / "f.mha")  # 3.7 MB as float32
    reads = []
    monkeypatch.setattr(registration, "as_image", lambda *a, **k: reads.append(a))
    limit = f"{(resident_bytes() + 2 * 2 ** 20) // 2 ** 20}M"  # 2 MB over what the process holds
    code = main(["register", "-f", str(fixed), "-m", str(fixed), "--preset", "rigid", "-out", str(tmp_path / "o"),
                 "--memory-limit", limit])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and not reads
    assert "the images alone (fixed image 120x100x80, moving image 120x100x80)" in err and "--memory-limit" in err

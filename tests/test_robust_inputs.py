"""Bad input is refused with one clear ImpactRegError, never a traceback or a silent result."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from impactreg import register
from impactreg.errors import ImageError, InputError, ParameterError
from impactreg.geometry import Grid
from impactreg.image import Image
from impactreg.keys import Key
from impactreg.parameters import ParameterMap

QUICK = {"Transform": "EulerTransform", "Metric": "AdvancedMeanSquares", "NumberOfResolutions": 1,
         "MaximumNumberOfIterations": 3, "NumberOfSpatialSamples": 200, "WriteResultImage": "false"}


def blob(n: int = 32, shift: float = 0.0) -> Image:
    y, x = np.mgrid[:n, :n].astype(np.float32)
    return Image.from_array(np.exp(-((x - n / 2 - shift) ** 2 + (y - n / 2) ** 2) / (n / 4) ** 2) * 100)


@pytest.mark.parametrize("entries,message", [
    ({"MaximumNumberOfIterations": "-5"}, "MaximumNumberOfIterations takes a whole number >= 0"),
    ({"NumberOfResolutions": "0"}, "NumberOfResolutions takes a whole number >= 1"),
    ({"NumberOfSpatialSamples": "0"}, "NumberOfSpatialSamples takes a whole number 2..10000000"),
    ({"NumberOfSpatialSamples": "1000000000000"}, "2..10000000"),
    ({"NumberOfHistogramBins": "2"}, ">= 4"),
    ({"BSplineInterpolationOrder": "7"}, "0..5"),
    ({"FinalGridSpacingInPhysicalUnits": ["8", "0"]}, "> 0"),
    ({"RequiredRatioOfValidSamples": "1.5"}, "0..1"),
    ({"SP_a": "nan"}, "SP_a takes a finite number"),
])
def test_out_of_range_values_are_refused_at_the_map(entries, message):
    with pytest.raises(ParameterError, match=message):
        ParameterMap(entries)


def test_key_range_text_and_check():
    assert Key("A", "int", 1, "", minimum=0, maximum=5).range_text() == "0..5"
    assert Key("A", "float", 1, "", minimum=0, exclusive_minimum=True).range_text() == "> 0"
    spacing = Key("A", "float", 1, "", minimum=0, exclusive_minimum=True)
    assert spacing.in_range(0.5) and not spacing.in_range(0.0) and not spacing.in_range(float("nan"))


def test_every_real_map_still_loads(data_dir):
    maps = sorted((data_dir.parent / "elastix-maps").rglob("*.txt"))
    if not maps:
        pytest.skip("no elastix-maps folder beside the data")
    refused = []
    for path in maps:
        try:
            ParameterMap.from_file(path)
        except ParameterError as exc:
            if "number" in str(exc):
                refused.append(str(exc))
    assert not refused


@pytest.mark.parametrize("fixed,moving,maps,message", [
    (None, "image", QUICK, "fixed image: none given"),
    ("image", None, QUICK, "moving image: none given"),
    ("image", "image", None, "parameter maps: got NoneType"),
    ("image", "image", [None], "parameter maps: got NoneType"),
    (np.array([["a", "b"], ["c", "d"]]), "image", QUICK, "array of strings"),
    (np.empty((4, 4), dtype=object), "image", QUICK, "array of Python objects"),
    ({"a": 1}, "image", QUICK, "got dict"),
])
def test_python_api_wrong_arguments_are_input_errors(fixed, moving, maps, message):
    image = blob()
    fixed, moving = (image if isinstance(v, str) and v == "image" else v for v in (fixed, moving))
    with pytest.raises(InputError, match=message):
        register(fixed, moving, maps)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_voxels_are_refused_with_their_count(value):
    moving = blob()
    moving.data[0, 3:5, 3:6] = value
    with pytest.raises(ImageError, match=r"moving image: 6 voxel\(s\) are NaN or infinite"):
        register(blob(), moving, QUICK)


def test_non_finite_voxels_in_a_file_name_the_file(tmp_path):
    from impactreg.image import write_image

    moving = blob()
    moving.data[0, 0, 0] = float("nan")
    path = write_image(moving, tmp_path / "nan.mha", "float32")
    with pytest.raises(ImageError, match=f"moving image {path}: 1 voxel"):
        register(blob(), path, QUICK)


def test_asgd_estimation_with_a_one_voxel_moving_mask_is_one_error():
    mask = torch.zeros(1, 32, 32)
    mask[0, 16, 16] = 1
    params = dict(QUICK, Optimizer="AdaptiveStochasticGradientDescent")
    with pytest.raises(ImageError, match="too many samples map outside the moving image"):
        register(blob(), blob(shift=1), params, moving_mask=Image(mask, blob().grid))


def test_asgd_estimation_on_a_one_voxel_image_is_one_error():
    one = Image(torch.ones(1, 1, 1), Grid((1, 1), (1, 1), (0, 0), np.eye(2)))
    params = dict(QUICK, Optimizer="AdaptiveStochasticGradientDescent")
    with pytest.raises(ImageError, match=r"only 1 sample can be drawn from the fixed image \(1x1 voxels"):
        register(one, one, params)


@pytest.mark.parametrize("name,message", [("gpu7", "--device gpu7: not a torch device"),
                                          ("cuda:99", "--device cuda:99: "), ("meta", "runs on cpu or cuda")])
def test_unknown_or_absent_devices_are_refused(name, message):
    from impactreg.devices import torch_device

    assert torch_device(None).type == "cpu"
    with pytest.raises(InputError, match=message):
        torch_device(name)


@pytest.mark.parametrize("threads", [0, -1, 2.5, True])
def test_thread_counts_below_one_are_refused(threads):
    with pytest.raises(InputError, match=f"-threads {threads}: give a whole number of CPU threads, at least 1"):
        register(blob(), blob(), QUICK, threads=threads)


def test_export_mind_into_unwritable_places(tmp_path):
    from impactreg.errors import OutputError
    from impactreg.features import export_mind

    a_file = tmp_path / "a.txt"
    a_file.write_text("keep me")
    with pytest.raises(OutputError, match="a.txt is a file, not a folder"):
        export_mind(a_file / "sub" / "mind.pt")
    with pytest.raises(OutputError, match="is a folder; give a file name"):
        export_mind(tmp_path)
    with pytest.raises(OutputError, match=r"cannot write the model file \(.+\); choose a writable folder"):
        export_mind("/proc/impactreg-test.pt")
    assert a_file.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_3d_model_on_2d_images_says_to_use_a_2d_model(data_dir):
    from impactreg.errors import ModelError

    params = dict(QUICK, Metric="Impact", ImpactModelsPath0=str(data_dir / "models" / "M730_1_Layers.pt"),
                  ImpactPatchSize0=[5, 5], ImpactVoxelSize0=[2, 2])
    with pytest.raises(ModelError, match=r"is a 3D network but runs here as a 2D model \(ImpactDimension 2.*use a 2D"):
        register(blob(), blob(), params)


def test_a_model_exception_of_any_kind_is_one_model_error():
    from impactreg.errors import ModelError
    from impactreg.features.extractor import FeatureExtractor

    def broken(x):
        raise ValueError("expected input's size at dim=1 to match num_features (32), but got: 1.")

    with pytest.raises(ModelError, match=r"model broken failed on a \(1, 1, 4, 4\) input \(expected input's size"):
        FeatureExtractor(broken, "broken", 2)(torch.zeros(1, 1, 4, 4), torch.tensor([0.0, 1, 0.5, 0.5]), torch.eye(2))


def test_jacobian_patch_too_small_for_the_model_gives_the_minimum(data_dir):
    from impactreg.errors import ModelError
    from impactreg.keys import LevelView
    from impactreg.metrics.impact import ImpactMetric
    from impactreg.metrics.protocol import LevelContext

    grid = Grid((12, 12, 12), (2.0, 2.0, 2.0), (0, 0, 0), np.eye(3))
    image = Image(torch.rand(1, 12, 12, 12, generator=torch.Generator().manual_seed(0)), grid)
    for patch, ok in (([1, 1, 1], False), ([2, 2, 2], True)):
        pm = ParameterMap({"ImpactModelsPath0": str(data_dir / "models" / "M730_1_Layers.pt"), "ImpactPatchSize0": patch,
                           "ImpactVoxelSize0": [2, 2, 2], "ImpactMode": "Jacobian"})
        context = LevelContext(LevelView(pm, 0), image, image, None, None, 1, torch.Generator(), torch.device("cpu"))
        if ok:
            ImpactMetric().begin_level(context)
        else:
            with pytest.raises(ModelError, match="PatchSize 1 1 1 is too small for model M730_1_Layers.pt; "
                                                 "use at least PatchSize 2 2 2"):
                ImpactMetric().begin_level(context)


@pytest.mark.parametrize("patch", [(0, 0), (40, 40)])
def test_a_model_with_a_larger_output_is_placed_on_its_input(data_dir, patch):
    """R1D2_2D.pt pads one voxel more than it convolves away on each side; centred, it is the built-in MIND."""
    from impactreg.features.extractor import image_stats, load_extractor
    from impactreg.features.inference import feature_maps
    from impactreg.image import read_image

    image = read_image(data_dir / "brainweb2d" / "BrainT1Slice.png").channel(0)
    stats = image_stats(image.data)
    scripted = load_extractor(str(data_dir / "models" / "R1D2_2D.pt"), 2, normalization="minmax")
    builtin = load_extractor("MIND/R1D2", 2)
    _, [a] = feature_maps(scripted, image, (1.0, 1.0), patch, "1", stats, "cpu")
    _, [b] = feature_maps(builtin, image, (1.0, 1.0), patch, "1", stats, "cpu")
    assert a.grid.shape == b.grid.shape == image.grid.shape
    np.testing.assert_allclose(a.grid.origin, b.grid.origin)
    inner = (slice(None), slice(5, -5), slice(5, -5))
    aligned = float((a.data[inner] - b.data[inner]).abs().mean())
    shifted = float((a.data[:, 5:-5, 4:-6] - b.data[inner]).abs().mean())
    assert aligned < 1e-3 and shifted > 100 * aligned


def test_a_model_whose_output_has_no_known_place_is_refused():
    from impactreg.errors import ModelError
    from impactreg.features.extractor import FeatureExtractor
    from impactreg.features.inference import run_model

    valid_conv = FeatureExtractor(lambda x: [x[..., 1:-2, 1:-2]], "cropping", 2)  # 3 voxels fewer, unevenly
    with pytest.raises(ModelError, match=r"model cropping gives a \(13, 13\) output for a \(16, 16\) input"):
        run_model(valid_conv, torch.rand(1, 16, 16), torch.tensor([0.0, 1, 0.5, 0.5]), torch.eye(2), [0], (0, 0), 1)


@pytest.fixture()
def nifti(tmp_path):
    from impactreg.image import write_image

    grid = Grid((20, 16, 12), (1.0, 1.0, 2.0), (0, 0, 0), np.eye(3))
    image = Image(torch.rand(1, 12, 16, 20, generator=torch.Generator().manual_seed(1)) * 100, grid)
    return write_image(image, tmp_path / "whole.nii.gz", "float32"), write_image(image, tmp_path / "whole.nii", "float32")


def test_truncated_nifti_files_are_refused(nifti, tmp_path):
    from impactreg.image import read_image

    for path in nifti:
        assert read_image(path).grid.size == (20, 16, 12)
        data = path.read_bytes()
        cut = tmp_path / ("cut" + "".join(path.suffixes))
        cut.write_bytes(data[: len(data) * 2 // 3])
        message = "gzip stream ends early" if path.name.endswith(".gz") else r"bytes of voxel data missing"
        with pytest.raises(ImageError, match=f"{cut}: the file is truncated .*{message}"):
            read_image(cut)


def test_permission_denied_is_said(nifti, monkeypatch):
    import os

    from impactreg.image import read_image

    def denied(path, flags, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(InputError, match="permission denied; make it readable"):
        read_image(nifti[0])


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root reads files whatever their mode")
def test_permission_denied_on_a_real_file(nifti):
    from impactreg.image import read_image

    nifti[0].chmod(0)
    with pytest.raises(InputError, match="permission denied"):
        read_image(nifti[0])


def test_singular_direction_gives_itks_reason(tmp_path):
    from impactreg.image import read_image

    (tmp_path / "a.raw").write_bytes(bytes(12))
    (tmp_path / "a.mhd").write_text("ObjectType = Image\nNDims = 2\nTransformMatrix = 1 0 1 0\nDimSize = 3 4\n"
                                     "ElementType = MET_UCHAR\nElementDataFile = a.raw\n")
    with pytest.raises(InputError, match="direction matrix is singular"):
        read_image(tmp_path / "a.mhd")


def test_itk_warnings_stay_off_the_screen(tmp_path, capfd):
    from impactreg.image import read_image

    (tmp_path / "notes.txt").write_text("no DICOM here")
    with pytest.raises(InputError, match="folder holds no DICOM series"):
        read_image(tmp_path)
    assert capfd.readouterr().err == ""


def test_tre_with_points_of_another_dimension_says_so():
    from impactreg.evaluation import target_registration_errors
    from impactreg.transforms import TranslationTransform

    with pytest.raises(InputError, match="the fixed points are 2D and the moving points 3D but the transform is 2D"):
        target_registration_errors(TranslationTransform(2, [1.0, 0.0]), np.zeros((3, 2)), np.zeros((3, 3)))

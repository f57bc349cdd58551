import numpy as np
import pytest
import torch

from impactreg.errors import InputError, OutputError
from impactreg.geometry import Grid
from impactreg.image import Image, read_image, write_image
from test_geometry import oblique


def make_image(dim, channels=1, dtype=np.int16, seed=0):
    rng = np.random.default_rng(seed)
    size = (9, 7, 5)[:dim]
    grid = Grid(size, (0.6, 1.1, 2.5)[:dim], (-12.25, 40.5, 3.125)[:dim], oblique(dim, seed))
    data = rng.integers(-500, 500, size=(channels, *reversed(size))).astype(dtype)
    return Image(torch.from_numpy(data).float(), grid, "int16" if dtype == np.int16 else "float32")


@pytest.mark.parametrize("suffix", [".mha", ".mhd", ".nrrd", ".nii.gz", ".nii"])
@pytest.mark.parametrize("dim", [2, 3])
def test_round_trip_keeps_geometry_and_values(tmp_path, suffix, dim):
    image = make_image(dim)
    path = write_image(image, tmp_path / f"im{suffix}")
    back = read_image(path)
    # NIfTI stores its affine in float32: geometry survives to about 1e-5 mm
    tol = 1e-4 if suffix.startswith(".nii") else 1e-12
    assert back.grid.size == image.grid.size
    assert back.grid.same_as(image.grid, tol=tol)
    assert back.pixel_type == "int16"
    assert torch.equal(back.data, image.data)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_multicomponent_round_trip(tmp_path):
    image = make_image(3, channels=3, dtype=np.float32)
    back = read_image(write_image(image, tmp_path / "vec.mha"))
    assert back.channels == 3 and back.grid == image.grid
    assert torch.equal(back.data, image.data)


def test_png_round_trip(tmp_path):
    data = torch.from_numpy(np.random.default_rng(0).integers(0, 255, size=(1, 12, 17))).float()
    image = Image(data, Grid((17, 12), (1.0, 1.0), (0.0, 0.0), np.eye(2)), "uint8")
    back = read_image(write_image(image, tmp_path / "a.png"))
    assert torch.equal(back.data, image.data)
    with pytest.raises(OutputError):
        write_image(make_image(3), tmp_path / "b.png")


def test_dicom_series_round_trip(tmp_path):
    image = make_image(3)
    if np.linalg.det(image.grid.direction) < 0:
        d = image.grid.direction.copy()
        d[:, 2] *= -1
        image = Image(image.data, Grid(image.grid.size, image.grid.spacing, image.grid.origin, d), "int16")
    write_image(image, tmp_path / "series")
    back = read_image(tmp_path / "series")
    assert back.grid.same_as(image.grid, tol=1e-6)
    assert torch.equal(back.data, image.data)


def test_dicom_left_handed_frame_is_the_same_image_in_space(tmp_path):
    image = make_image(3)
    d = image.grid.direction.copy()
    if np.linalg.det(d) > 0:
        d[:, 2] *= -1
    image = Image(image.data, Grid(image.grid.size, image.grid.spacing, image.grid.origin, d), "int16")
    write_image(image, tmp_path / "series")
    back = read_image(tmp_path / "series")
    np.testing.assert_allclose(back.grid.voxel_points().numpy().reshape(*back.grid.shape, 3)[::-1],
                               image.grid.voxel_points().numpy().reshape(*image.grid.shape, 3), atol=1e-5)
    assert torch.equal(back.data[0].flip(0), image.data[0])


def test_real_images_read(data_dir):
    t1 = read_image(data_dir / "brainweb2d" / "BrainT1SliceBorder20DirectionPlus30.mhd")
    assert t1.grid.size == (221, 257)
    np.testing.assert_allclose(t1.grid.direction, [[np.cos(np.pi / 6), -0.5], [0.5, np.cos(np.pi / 6)]], atol=1e-6)
    png = read_image(data_dir / "brainweb2d" / "BrainT1SliceBorder20.png")
    assert png.channels == 3 and png.dim == 2
    ct = read_image(data_dir / "lung_ct" / "3DCT_lung_baseline_small.mha")
    assert ct.grid.size == (57, 78, 64) and ct.pixel_type == "int16"


def test_read_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.mha")
    bad = tmp_path / "broken.mha"
    bad.write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\nElementDataFile = LOCAL\n")
    with pytest.raises(InputError) as err:
        read_image(bad)
    assert "\n" not in str(err.value) and "broken.mha" in str(err.value)
    with pytest.raises(InputError, match="unsupported image format"):
        read_image(tmp_path / "x.jpg") if (tmp_path / "x.jpg").write_text("x") else None
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(tmp_path)


def test_failed_write_keeps_earlier_output(tmp_path):
    image = make_image(3)
    path = write_image(image, tmp_path / "out.mha")
    before = path.read_bytes()
    with pytest.raises(OutputError):
        write_image(image, path, pixel_type="no-such-type")
    assert path.read_bytes() == before

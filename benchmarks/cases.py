"""Benchmark cases built from ../shared/data with fixed seeds (see ../shared/data/README.md).

Each case: fixed and moving images; where known, the true transform (fixed -> moving) and
landmarks in the fixed image (their true partners are truth(p)); where available, label maps for
Dice (fixed labels, and moving labels on the moving grid, with the fixed image's label values).
``linear`` and ``deformable`` say how the suite registers the case: a linear stage (the elastix
transform name), then a B-spline stage when ``deformable``.

``CASES`` holds the two 3D known-deformation cases of the engine and IMPACT benchmarks;
``SUITE_CASES`` every case of the benchmark suite (``suite.py``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import impactreg  # noqa: F401  (first: it sets the OpenMP wait policy users get, before torch loads)
import numpy as np
import torch

from impactreg.demo import build_case
from impactreg.filters import resample_to_grid
from impactreg.geometry import Grid
from impactreg.image import Image, read_image
from impactreg.synthetic import cbct_like, crop_to_fraction, random_deformation, warp_by_inverse
from impactreg.transforms import EulerTransform, Transform

DATA = Path(os.environ.get("IMPACTREG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@dataclass
class Case:
    name: str
    fixed: Image
    moving: Image
    truth: Transform | None = None
    landmarks: np.ndarray | None = None
    fixed_labels: Image | None = None
    moving_labels: Image | None = None
    label_names: dict[int, str] | None = None
    linear: str = "AffineTransform"
    deformable: bool = True
    agreement_points: np.ndarray | None = None  # where transforms are compared with elastix's (default: landmarks)
    dice_in_moving_view: bool = False  # Dice/HD95 only where the fixed grid maps inside the moving image
    map_overrides: dict = field(default_factory=dict)  # parameter-map entries this case needs in every stage

    @property
    def evaluation_points(self) -> np.ndarray | None:
        return self.agreement_points if self.agreement_points is not None else self.landmarks


def _inside(labels: Image, n: int, seed: int) -> np.ndarray:
    index = torch.nonzero(labels.data[0] > 0).numpy()[:, ::-1].astype(np.float64)
    pick = np.random.default_rng(seed).choice(len(index), min(n, len(index)), replace=False)
    return labels.grid.index_to_world(index[pick])


def lung_ct_cbct(seed: int = 11) -> Case:
    """Lung CT (fixed) against a CBCT-like copy under a breathing-like deformation, on a smaller
    field of view (the image is already a crop of one lung, so the FOV is a crop, not a cylinder)."""
    ct = read_image(DATA / "lung_ct" / "3DCT_lung_baseline_small.mha")
    mask = resample_to_grid(read_image(DATA / "lung_ct" / "3DCT_lung_baseline_mask.mha"), ct.grid, order=0)
    truth = random_deformation(ct.grid, seed, rotation_degrees=2.0, translation_mm=4.0, bumps=8, bump_mm=6.0,
                               bump_width_mm=35.0)
    moving_grid = crop_to_fraction(ct, 0.85).grid
    moving, moving_mask = warp_by_inverse([cbct_like(ct, seed, fov_fraction=None), mask], truth, default=[-1000.0, 0.0], order=[3, 0],
                                          grid=moving_grid)
    return Case("lung CT -> CBCT-like", ct, moving, truth, _inside(mask, 300, seed), mask, moving_mask,
                label_names={1: "lung"}, dice_in_moving_view=True)


def mni_t1_t2(seed: int = 12, spacing_mm: float = 2.0) -> Case:
    """MNI152 T1 (fixed) against a synthetic T2 from its tissue maps under a known warp (the demo's case)."""
    t1, moving, labels, moving_labels, landmarks, truth = build_case(DATA / "mni152", spacing_mm, seed)
    return Case("MNI T1 -> synthetic T2", t1, moving, truth, landmarks, labels, moving_labels,
                label_names={1: "grey matter", 2: "white matter"})


# 2D BrainWeb ------------------------------------------------------------------------------------

# The moved PD copies in ITK's Examples/Data. ITK documents R10X13Y17 as "rotated 10 degrees and
# shifted 13 mm in X and 17 mm in Y" without the centre of rotation. A PD -> PD registration of the
# copy (mean squares, full sampling; elastix and impactreg agree) gives a rotation of 10.00 deg and
# a shift of (13.09, 15.92) px about the image centre (110, 128), the result ITK's Software Guide
# reports for this pair (ImageRegistration5): that is the documented 10 deg and (13, 17) px about
# the centre (116.2, 128.0) px. Shifted13x17y is a pure shift; Rotated10 and R10X13Y17S12 do not
# match their documented transforms to a pixel and are not used.
BRAINWEB_MOVED = {
    "R10X13Y17": {"degrees": 10.0, "shift": (13.0, 17.0), "centre": (116.2, 128.0)},
    "Shifted13x17y": {"degrees": 0.0, "shift": (13.0, 17.0), "centre": (110.0, 128.0)},
}


def brainweb_transform(moved: str) -> Transform:
    """The transform (fixed -> moving, px = mm) under which BrainProtonDensitySlice<moved> shows the
    Border20 slices: x -> R(x - c) + c + shift, R the rotation by +degrees in the image's x-y axes."""
    spec = BRAINWEB_MOVED[moved]
    parameters = np.array([np.deg2rad(spec["degrees"]), *spec["shift"]])
    return EulerTransform(2, torch.tensor(parameters, dtype=torch.float64), torch.tensor(spec["centre"], dtype=torch.float64))


def head_grid_points(image: Image, spacing_px: int = 8, threshold: float = 20.0) -> np.ndarray:
    """World points on a regular grid (every ``spacing_px`` voxels) where the image exceeds ``threshold``."""
    data = image.data[0]
    axes = [torch.arange(spacing_px // 2, n, spacing_px) for n in data.shape]
    index = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, data.dim())
    inside = data[tuple(index.T)] > threshold
    return image.grid.index_to_world(index[inside].flip(-1).numpy().astype(np.float64))


def brainweb_t1_pd(moved: str = "R10X13Y17") -> Case:
    """2D BrainWeb T1 slice (fixed) against a PD slice moved by a known rigid transform (default
    R10X13Y17: 10 deg about (116.2, 128.0) px, then a (13, 17) px shift; ITK's Examples/Data, where T1
    and PD are aligned). TRE over a grid of points in the head, every 8 px."""
    folder = DATA / "brainweb2d"
    fixed = read_image(folder / "BrainT1SliceBorder20.png").channel(0)
    moving = read_image(folder / f"BrainProtonDensitySlice{moved}.png").channel(0)
    return Case(f"BrainWeb 2D T1 -> PD {moved}", fixed, moving, brainweb_transform(moved), head_grid_points(fixed),
                linear="EulerTransform", deformable=False)


# Abdomen CT -> MR of another subject -----------------------------------------------------------

def crop_z(image: Image, start: int, stop: int) -> Image:
    """Slices [start, stop) of a 3D image along its third index axis, geometry kept."""
    grid = image.grid
    origin = grid.index_to_world(np.array([0.0, 0.0, float(start)]))
    cropped = Grid((grid.size[0], grid.size[1], stop - start), grid.spacing, origin, grid.direction)
    return Image(image.data[:, start:stop].contiguous(), cropped, image.pixel_type)


def keep_labels(labels: Image, mapping: dict[int, int]) -> Image:
    """A label map with each value in ``mapping`` replaced by its image, every other value set to 0."""
    values = labels.data.round().long()
    out = torch.zeros_like(values)
    for source, target in mapping.items():
        out[values == source] = target
    return Image(out.to(torch.float32), labels.grid, "uint8")


def slab_of_labels(labels: Image, values, margin_mm: float) -> tuple[int, int]:
    """The slice range (third index axis) holding any of ``values``, widened by ``margin_mm``."""
    present = torch.isin(labels.data[0].round().long(), torch.tensor(list(values)))
    slices = torch.nonzero(present.any(dim=2).any(dim=1)).reshape(-1)
    margin = int(round(margin_mm / labels.grid.spacing[2]))
    return max(0, int(slices.min()) - margin), min(labels.grid.size[2], int(slices.max()) + 1 + margin)


def abdomen_ct_mr(margin_mm: float = 15.0) -> Case:
    """Abdominal CT (fixed) against the abdominal MR of another subject (moving), Dice and HD95 on the
    20 organs both show (``shared_organs.json``; MR labels renumbered to the CT's values).

    The MR is a 60 mm slab of the upper abdomen; the CT runs from the kidneys to the pelvis, and
    their geometric centres lie about 100 mm apart along z, beyond any automatic initialisation.
    The CT is therefore cut to the slices of its kidneys and adrenal glands (+-``margin_mm``), the
    anatomy the MR slab shows; the registration itself sees no labels. Dice and HD95 count only
    the fixed voxels that the transform maps inside the MR slab. As most of the CT lies outside the
    slab (and IMPACT Jacobian patches must lie wholly inside it), 5 % of the samples may suffice."""
    folder = DATA / "abdomen_ct_mr"
    organs = json.loads((folder / "shared_organs.json").read_text())
    ct_labels = read_image(folder / "ct_labels.nii.gz")
    slab = [organs[name][0] for name in ("kidney_left", "kidney_right", "adrenal_gland_left", "adrenal_gland_right")]
    start, stop = slab_of_labels(ct_labels, slab, margin_mm)
    ct = crop_z(read_image(folder / "ct.nii.gz"), start, stop)
    fixed_labels = keep_labels(crop_z(ct_labels, start, stop), {ct: ct for ct, _ in organs.values()})
    moving_labels = keep_labels(read_image(folder / "mr_labels.nii.gz"), {mr: ct for ct, mr in organs.values()})
    names = {ct: name for name, (ct, _) in organs.items()}
    return Case("abdomen CT -> MR (other subject)", ct, read_image(folder / "mr.nii.gz"), fixed_labels=fixed_labels,
                moving_labels=moving_labels, label_names=names, agreement_points=_inside(fixed_labels, 3000, 14),
                dice_in_moving_view=True, map_overrides={"RequiredRatioOfValidSamples": 0.05})


def abdomen_ct_mr_uncut() -> Case:
    """Abdominal CT (fixed, whole: kidneys to pelvis) against the 60 mm MR slab of another subject (moving),
    Dice and HD95 on the 20 shared organs where the fixed image maps inside the slab.

    The uncut variant of ``abdomen_ct_mr``: the boxes of the two images do not overlap in world
    coordinates and their centres lie about 100 mm apart along z, so centring them starts far off
    (an initialisation that searches is needed). About a sixth of the CT lies in the slab, hence the
    low required ratio of valid samples."""
    folder = DATA / "abdomen_ct_mr"
    organs = json.loads((folder / "shared_organs.json").read_text())
    fixed_labels = keep_labels(read_image(folder / "ct_labels.nii.gz"), {ct: ct for ct, _ in organs.values()})
    moving_labels = keep_labels(read_image(folder / "mr_labels.nii.gz"), {mr: ct for ct, mr in organs.values()})
    names = {ct: name for name, (ct, _) in organs.items()}
    return Case("abdomen whole CT -> MR slab (other subject)", read_image(folder / "ct.nii.gz"),
                read_image(folder / "mr.nii.gz"), fixed_labels=fixed_labels, moving_labels=moving_labels,
                label_names=names, agreement_points=_inside(fixed_labels, 3000, 14), dice_in_moving_view=True,
                map_overrides={"RequiredRatioOfValidSamples": 0.02})


# Brain T1 -> PD, rigid ----------------------------------------------------------------------------

def brain_points(t1: Image, n: int, seed: int, threshold: float = 70.0, erosions: int = 3) -> np.ndarray:
    """``n`` random world points in the brain of a T1 image: voxels above ``threshold`` (grey and
    white matter, scalp fat), eroded so that the scalp falls away, largest connected part."""
    from scipy import ndimage

    tissue = ndimage.binary_erosion(t1.numpy()[0] > threshold, iterations=erosions)
    parts, count = ndimage.label(tissue)
    largest = np.argmax(np.bincount(parts.ravel())[1:]) + 1
    index = np.argwhere(parts == largest)[:, ::-1].astype(np.float64)
    pick = np.random.default_rng(seed).choice(len(index), min(n, len(index)), replace=False)
    return t1.grid.index_to_world(index[pick])


def brain_t1_pd(seed: int = 13) -> Case:
    """3D T1 (fixed) against the PD slab (moving, oblique) of the same subject: a rigid problem with
    no ground truth. Transforms are compared with elastix's on 3000 brain points. Where MIND's receptive
    field (3 voxels of 6 mm at the first level) must lie inside the slab, 24 % of the T1's samples count,
    hence the lower required ratio of valid samples (elastix's default 0.25 stops IMPACT Static there)."""
    folder = DATA / "brain_t1_pd"
    t1 = read_image(folder / "t1.nii.gz")
    downsampling = {"FixedImagePyramid": "FixedRecursiveImagePyramid", "MovingImagePyramid": "MovingRecursiveImagePyramid"}
    return Case("brain T1 -> PD (rigid)", t1, read_image(folder / "pd.nii.gz"), linear="EulerTransform", deformable=False,
                agreement_points=brain_points(t1, 3000, seed),
                map_overrides=dict(downsampling, RequiredRatioOfValidSamples=0.1))


CASES = {"lung": lung_ct_cbct, "mni": mni_t1_t2}
def brainweb_t1_pd_shifted() -> Case:
    """2D BrainWeb T1 slice (fixed) against the PD slice shifted by (13, 17) px (an exact, pure shift)."""
    return brainweb_t1_pd("Shifted13x17y")


SUITE_CASES = {"brainweb": brainweb_t1_pd, "lung": lung_ct_cbct, "mni": mni_t1_t2, "abdomen": abdomen_ct_mr,
               "brain": brain_t1_pd, "brainweb-shifted": brainweb_t1_pd_shifted, "abdomen-uncut": abdomen_ct_mr_uncut}
DEFAULT_SUITE = ["brainweb", "lung", "mni", "abdomen", "brain"]


def ct_like_volume(size=(512, 512, 300), spacing_mm: float = 0.8, seed: int = 14) -> tuple[Image, Image]:
    """A synthetic CT-sized pair (x, y, z voxels at ``spacing_mm``): a body ellipse of smooth random
    tissue in air, and the same shifted by (3, -2, 1) voxels; for memory, not accuracy."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((1, 1, 12, 16, 16), generator=generator) * 400.0 - 100.0
    z, y, x = (torch.linspace(-1.0, 1.0, n) for n in size[::-1])
    data = torch.nn.functional.interpolate(coarse, size=size[::-1], mode="trilinear", align_corners=False)[0, 0]
    body = (x[None, None, :] / 0.85) ** 2 + (y[None, :, None] / 0.65) ** 2 <= 1.0
    data = torch.where(body.expand_as(data), data, torch.full_like(data, -1000.0))
    grid = Grid(size, (spacing_mm,) * 3, (0.0, 0.0, 0.0), np.eye(3))
    moving = torch.roll(data, shifts=(1, -2, 3), dims=(0, 1, 2))
    return Image(data[None].contiguous(), grid), Image(moving[None].contiguous(), grid)

"""Ensembles: K registrations of one pair that differ only in their random seed (seed, seed + 1, ...).
Their mean displacement field is the result, written as elastix's DeformationFieldTransform (transformix
reads it), and their spread is an uncertainty map: per voxel, the norm of the per-component sample
standard deviations (N - 1) of the displacements, in mm.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .engine.outputs import StagedFolder
from .errors import InputError
from .geometry import Grid
from .image import Image, write_image
from .transforms import Transform
from .transforms.deformation_field import DeformationFieldTransform
from .transforms.elastix_files import field_file_name, write_transform_file
from .warp import deformation_field, resample

ENSEMBLE_FILE = "TransformParameters.0.txt"
UNCERTAINTY_FILE = "uncertainty.nii.gz"


def member_seeds(seed: int, members: int) -> list[int]:
    if isinstance(members, bool) or not isinstance(members, int) or members < 2:
        raise InputError(f"--ensemble {members}: an ensemble needs at least 2 members")
    return [int(seed) + i for i in range(members)]


def member_folder(out_dir: str | os.PathLike, index: int) -> Path:
    return Path(out_dir) / f"member{index}"


@dataclass
class EnsembleFields:
    mean: Image         # (D, ...) mm, fixed -> moving
    uncertainty: Image  # (1, ...) mm

    @property
    def transform(self) -> DeformationFieldTransform:
        return DeformationFieldTransform(self.mean, order=1)


def ensemble_fields(transforms: list[Transform], grid: Grid, device=None) -> EnsembleFields:
    """Mean and spread of the members' displacement fields on ``grid`` (float64 sums, one field at a time)."""
    total = squares = None
    for transform in transforms:
        u = deformation_field(transform, grid, device).data.to(torch.float64)
        total = u if total is None else total + u
        squares = u * u if squares is None else squares + u * u
    k = len(transforms)
    mean = total / k
    variance = ((squares - total * mean) / (k - 1)).clamp_min(0.0)
    return EnsembleFields(Image(mean.to(torch.float32), grid, "float32"),
                          Image(variance.sum(0, keepdim=True).sqrt().to(torch.float32), grid, "float32"))


def ensemble_output_names(image_format: str = "nii.gz", warped: bool = True) -> list[str]:
    names = [ENSEMBLE_FILE, field_file_name(ENSEMBLE_FILE, image_format), UNCERTAINTY_FILE]
    return names + ([f"result.0.{image_format}"] if warped else [])


def write_ensemble(out_dir: str | os.PathLike, fields: EnsembleFields, moving: Image | None, inputs: dict,
                   image_format: str = "nii.gz") -> dict[str, Path]:
    """TransformParameters.0.txt (DeformationFieldTransform on the mean field), its field image, the
    uncertainty map and, with ``moving``, the moving image warped by the mean field; staged, so nothing
    is written unless everything is."""
    names = ensemble_output_names(image_format, moving is not None)
    with StagedFolder(out_dir, names, inputs) as folder:
        final = Path(out_dir).resolve() / ENSEMBLE_FILE
        write_transform_file(folder.path(ENSEMBLE_FILE), fields.transform, fields.mean.grid,
                             resample={"ResultImageFormat": image_format}, final_path=final)
        write_image(fields.uncertainty, folder.path(UNCERTAINTY_FILE), "float32")
        if moving is not None:
            write_image(resample(moving, fields.transform, fields.mean.grid, order=3), folder.path(names[-1]))
        return folder.commit()


@dataclass
class EnsembleResult:
    transform: DeformationFieldTransform  # the mean displacement field
    fields: EnsembleFields
    members: list                         # each member's RegistrationResult
    outputs: dict[str, Path]


def register_ensemble(fixed, moving, parameter_maps, members: int, *, out_dir=None, seed: int | None = None,
                      **options) -> EnsembleResult:
    """``members`` registrations (seeds seed, seed + 1, ...; ``options`` as ``register`` takes them), each
    into ``out_dir/member<i>/``; the mean field and the uncertainty map into ``out_dir``."""
    from .engine.inputs import as_image
    from .engine.registration import register, resolve_seed
    from .parameters import load_parameter_maps

    maps = load_parameter_maps(parameter_maps)
    seeds = member_seeds(resolve_seed(maps, seed), members)
    fixed_image = as_image(fixed, "fixed image", required=True)
    moving_image = as_image(moving, "moving image", required=True)
    results = [register(fixed, moving, maps, seed=s,
                        out_dir=member_folder(out_dir, i) if out_dir is not None else None, **options)
               for i, s in enumerate(seeds)]
    fields = ensemble_fields([r.transform for r in results], fixed_image.grid, options.get("device"))
    outputs = {}
    if out_dir is not None:
        inputs = {"fixed image": fixed, "moving image": moving, "parameter map": parameter_maps,
                  "fixed mask": options.get("fixed_mask"), "moving mask": options.get("moving_mask"),
                  "initial transform": options.get("initial_transform")}
        outputs = write_ensemble(out_dir, fields, moving_image.channel(0), inputs)
    return EnsembleResult(fields.transform, fields, results, outputs)

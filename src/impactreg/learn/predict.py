"""Prediction: a trained model applied to a pair in physical space, optional instance optimisation,
and elastix-format outputs.

Both images are sampled on the pair grid (the model grid centred on the fixed image), the network
gives a displacement u on that grid (fixed -> moving, T(p) = p + u(p)); instance optimisation refines
the network's field with Adam on the same loss for this pair only. The result is written as a
DeformationFieldTransform on the FIXED image's grid (u sampled linearly at its voxels, continued from
the border beyond the pair grid): TransformParameters.0.txt + DeformationFieldImage.0.mha, which
transformix reads, and the moving image resampled through it (result.0.mha).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..devices import torch_device

from ..errors import InputError
from ..image import Image, read_image, write_image
from ..transforms.deformation_field import DeformationFieldTransform
from ..warp import resample
from .cohort import PairFiles, load_pair
from .grid import field_transform
from .losses import RegistrationLoss
from .network import TrainedModel, load_model
from .settings import LearnSettings
from .train import _batch, network_field


@dataclass
class PredictResult:
    transform: DeformationFieldTransform  # fixed -> moving, on the fixed image's grid
    warped: Image | None  # the moving image resampled on the fixed grid (None when not asked for)
    losses: dict = field(default_factory=dict)  # loss before and after instance optimisation
    outputs: dict = field(default_factory=dict)
    seconds: float = 0.0


def instance_optimise(model: TrainedModel, batch: dict, field_: torch.Tensor, steps: int, learning_rate: float,
                      device, progress: bool = False) -> tuple[torch.Tensor, list[float]]:
    """Adam on the network's field (voxels) for this pair: the training loss without Dice."""
    settings = LearnSettings.from_dict({**model.settings.as_dict(), "dice_weight": 0.0})
    loss_fn = RegistrationLoss(settings, model.grid.dim, device)
    parameter = field_.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([parameter], lr=learning_rate)
    network = model.network
    fixed, moving = loss_fn.images(batch)
    fixed_vectors = loss_fn.fixed_vectors(fixed, batch["mask"])  # the fixed image's features, once
    values = []
    from tqdm import tqdm

    for _ in tqdm(range(steps), disable=not progress, leave=False, desc="instance optimisation"):
        ddf = network.displacement(parameter)
        terms = loss_fn(fixed, network.warp(moving, ddf), parameter, batch["mask"], fixed_vectors=fixed_vectors)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        values.append(float(terms["loss"].detach()))
    return parameter.detach(), values


def predict(model, fixed, moving, out_dir: str | os.PathLike | None = None, fixed_mask=None,
            instance_steps: int = 0, instance_learning_rate: float = 0.1, device="cpu", progress: bool = False,
            qc: bool = False, result_image: bool = True) -> PredictResult:
    """Register ``moving`` to ``fixed`` (paths or Images) with a trained model (a path or TrainedModel).
    ``result_image=False`` skips resampling the moving image (without ``out_dir`` only)."""
    start = time.perf_counter()
    device = torch_device(device)
    source = model
    model = load_model(model, device) if not isinstance(model, TrainedModel) else model.to(device)
    if instance_steps < 0:
        raise InputError(f"instance optimisation steps must be >= 0, got {instance_steps}")
    fixed_image = fixed if isinstance(fixed, Image) else read_image(fixed)
    moving_image = moving if isinstance(moving, Image) else read_image(moving)
    pair = load_pair(PairFiles("pair", fixed_image, moving_image, fixed_mask=fixed_mask), model.grid, False)
    batch = _batch([pair], device)
    network = model.network.eval()
    with torch.no_grad():
        field_ = network_field(network, batch, model.settings, device)
    losses = {}
    if instance_steps:
        field_, values = instance_optimise(model, batch, field_, instance_steps, instance_learning_rate, device, progress)
        losses = {"instance_first": values[0], "instance_last": values[-1]}
    with torch.no_grad():
        ddf = network.displacement(field_)[0]
    transform = field_transform(ddf, pair.grid, fixed_image.grid)
    warped = None
    if result_image or out_dir is not None:
        warped = resample(moving_image, transform, fixed_image.grid, order=3, device=device)
    result = PredictResult(transform, warped, losses, seconds=time.perf_counter() - start)
    if out_dir is not None:
        result.outputs = write_outputs(result, out_dir, fixed_image, moving_image, model, inputs={
            "fixed image": fixed, "moving image": moving, "fixed mask": fixed_mask, "model": source},
            qc=qc)
    return result


def write_outputs(result: PredictResult, out_dir, fixed: Image, moving: Image, model: TrainedModel, inputs: dict,
                  qc: bool = False) -> dict[str, Path]:
    from ..engine.outputs import StagedFolder
    from ..transforms.elastix_files import field_file_name, write_transform_file

    names = ["TransformParameters.0.txt", field_file_name("TransformParameters.0.txt"), "result.0.mha", "predict.json"]
    if qc:
        names += ["qc.png", "qc.html"]
    inputs = {k: v for k, v in inputs.items() if isinstance(v, (str, os.PathLike))}
    with StagedFolder(out_dir, names, inputs) as folder:
        write_transform_file(folder.path(names[0]), result.transform, fixed.grid,
                             final_path=folder.out / names[0])
        write_image(result.warped, folder.path("result.0.mha"))
        info = {"model_grid": model.grid.as_dict(), "settings": model.settings.as_dict(), **result.losses,
                "seconds": result.seconds}
        folder.path("predict.json").write_text(json.dumps(info, indent=2) + "\n")
        if qc:
            from ..qc import write_qc

            write_qc(fixed.channel(0), moving.channel(0), result.transform, folder.staging,
                     {"prediction time (s)": result.seconds, **result.losses})
        return folder.commit()

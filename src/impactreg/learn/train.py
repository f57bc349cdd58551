"""Training: AdamW on a cohort of pairs, seeded, checkpointed every N steps and resumable to the same state.

The data order of epoch e is a permutation drawn from a generator seeded with (seed, e), the network's
initial weights from ``seed``; a checkpoint holds the weights, the optimiser's state and the position in
the epoch, so an interrupted run resumed from its checkpoint ends with the same weights as an
uninterrupted one. After each epoch the validation pairs are registered and their Dice (labels) and
TRE (points) printed.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..devices import torch_device

from ..errors import InputError, ModelError
from ..evaluation import dice, mean_dice, target_registration_errors
from ..image import Image, read_image
from .cohort import PairData, PairFiles, load_pair
from .grid import ModelGrid, field_transform
from .losses import RegistrationLoss, one_hot
from .network import RegistrationNetwork, atomic_save, build_network, save_model
from .settings import LearnSettings

CHECKPOINT_FORMAT = "impactreg.learn.checkpoint"
FIXED_CACHE_VALUES = 100_000_000  # fixed images' IMPACT features kept between epochs: 400 MB of float32 at most


@dataclass
class TrainResult:
    model_path: Path | None
    history: list = field(default_factory=list)
    steps: int = 0
    finished: bool = True
    seconds: float = 0.0


def checkpoint_path(model_path: str | os.PathLike) -> Path:
    return Path(f"{model_path}.checkpoint")


def model_grid_for(pairs: list[PairFiles], settings: LearnSettings, spacing=None, size=None) -> ModelGrid:
    first = read_image(pairs[0].fixed).grid
    if size is not None:
        dim = first.dim
        size = tuple(int(v) for v in np.broadcast_to(np.asarray(size), (dim,)))
        if any(s % settings.total_stride for s in size):
            raise InputError(f"model grid size {size}: each size must be a multiple of {settings.total_stride} "
                             f"(the network's total stride)")
        s = np.broadcast_to(np.asarray(first.spacing if spacing is None else spacing, dtype=np.float64), (dim,))
        return ModelGrid(size, tuple(float(v) for v in s), tuple(float(v) for v in first.direction.ravel()))
    grids = [first] + [read_image(p.fixed).grid for p in pairs[1:]]
    return ModelGrid.covering(grids, spacing, settings.total_stride)


def split_pairs(pairs: list, fraction: float, seed: int) -> tuple[list, list]:
    """(training, validation): a seeded ``fraction`` of the pairs (at least one when fraction > 0 and
    there are two pairs or more) for validation."""
    if fraction <= 0 or len(pairs) < 2:
        return list(pairs), []
    count = min(len(pairs) - 1, max(1, int(round(fraction * len(pairs)))))
    order = np.random.default_rng(seed).permutation(len(pairs))
    chosen = set(order[:count].tolist())
    return [p for i, p in enumerate(pairs) if i not in chosen], [p for i, p in enumerate(pairs) if i in chosen]


def _labels_in(pairs: list[PairData]) -> tuple[int, ...]:
    values: set[int] = set()
    for p in pairs:
        for t in (p.fixed_labels, p.moving_labels):
            if t is not None:
                values |= set(torch.unique(t).long().tolist())
    return tuple(sorted(values - {0}))


def _batch(pairs: list[PairData], device) -> dict:
    stack = lambda name: torch.stack([getattr(p, name) for p in pairs]).to(device)  # noqa: E731
    batch = {k: stack(k) for k in ("fixed", "moving", "fixed_input", "moving_input", "mask")}
    if all(p.fixed_labels is not None for p in pairs):
        batch["fixed_labels"], batch["moving_labels"] = stack("fixed_labels"), stack("moving_labels")
    return batch


def network_field(network: RegistrationNetwork, batch: dict, settings: LearnSettings, device) -> torch.Tensor:
    """The network's output field (float32), autocast to bfloat16 on CUDA when mixed precision is on."""
    amp = settings.mixed_precision and torch.device(device).type == "cuda"
    context = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    with context:
        out = network(batch["moving_input"], batch["fixed_input"])
    return out.to(torch.float32)


def loss_terms(network, loss_fn: RegistrationLoss, batch: dict, field_: torch.Tensor,
               fixed_vectors: list[torch.Tensor] | None = None) -> dict:
    ddf = network.displacement(field_)
    fixed, moving = loss_fn.images(batch)
    warped = network.warp(moving, ddf)
    onehots = {}
    if loss_fn.settings.dice_weight > 0 and "fixed_labels" in batch:
        labels = loss_fn.settings.labels
        onehots = {"fixed_onehot": one_hot(batch["fixed_labels"], labels),
                   "warped_onehot": network.warp(one_hot(batch["moving_labels"], labels), ddf)}
    return loss_fn(fixed, warped, field_, batch["mask"], fixed_vectors=fixed_vectors, **onehots)


def fixed_vectors(loss_fn: RegistrationLoss, chosen: list[PairData], device, cache: dict) -> list | None:
    """IMPACT's features of the chosen pairs' fixed images (None for MI/LNCC), each pair's computed once
    and kept in ``cache`` (by pair id) while the cache holds under FIXED_CACHE_VALUES values."""
    if loss_fn.settings.similarity != "impact":
        return None
    parts = []
    for pair in chosen:
        vectors = cache.get(pair.id)
        if vectors is None:
            one = _batch([pair], device)
            vectors = loss_fn.fixed_vectors(loss_fn.images(one)[0], one["mask"])
            held = sum(v.numel() for kept in cache.values() for v in kept)
            if held + sum(v.numel() for v in vectors) <= FIXED_CACHE_VALUES:
                cache[pair.id] = vectors
        parts.append(vectors)
    return [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]


def validate(network: RegistrationNetwork, pairs: list[PairData], settings: LearnSettings, device) -> dict:
    """Mean Dice (labels, nearest) and mean TRE (points) of the validation pairs that have them."""
    dices, tres = [], []
    network.eval()
    with torch.no_grad():
        for pair in pairs:
            batch = _batch([pair], device)
            ddf = network.displacement(network_field(network, batch, settings, device))
            if pair.fixed_labels is not None:
                warped = network.warp(batch["moving_labels"], ddf, nearest=True)[0].cpu()
                scores = dice(Image(pair.fixed_labels, pair.grid), Image(warped, pair.grid), settings.labels or None)
                dices.append(mean_dice(scores))
            if pair.fixed_points is not None:
                transform = field_transform(ddf[0], pair.grid)
                tres.append(float(target_registration_errors(transform, pair.fixed_points, pair.moving_points).mean()))
    network.train()
    measures = {}
    if dices:
        measures["val_dice"] = float(np.nanmean(dices)) if not all(np.isnan(dices)) else float("nan")
    if tres:
        measures["val_tre_mm"] = float(np.mean(tres))
    return measures


def _save_checkpoint(path, network, optimizer, grid, settings, epoch, index, step, history, split) -> None:
    atomic_save({"format": CHECKPOINT_FORMAT, "grid": grid.as_dict(), "settings": settings.as_dict(),
                 "network": {k: v.detach().cpu() for k, v in network.state_dict().items()},
                 "optimizer": optimizer.state_dict(), "epoch": epoch, "index": index, "step": step,
                 "history": history, "split": split}, path)


def _load_checkpoint(path: Path, grid: ModelGrid, settings: LearnSettings, split: dict) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: an unreadable checkpoint ({type(exc).__name__}); delete it to start afresh") from None
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path}: not an impactreg training checkpoint; delete it or choose another model path")
    mine = {k: v for k, v in settings.as_dict().items() if k != "epochs"}
    theirs = {k: v for k, v in state["settings"].items() if k != "epochs"}
    if mine != theirs or ModelGrid.from_dict(state["grid"]) != grid or state["split"] != split:
        raise ModelError(f"{path}: the checkpoint was made with other settings, grid or cohort; resume with the same "
                         f"ones, or delete it (or pass --no-resume) to start afresh")
    return state


def train(pairs: list[PairFiles], model_path: str | os.PathLike, settings: LearnSettings | None = None,
          spacing=None, size=None, validation_fraction: float = 0.2, checkpoint_every: int = 50,
          resume: bool = True, max_steps: int | None = None, device="cpu", progress: bool = False,
          report: Callable[[str], None] | None = print) -> TrainResult:
    """Train a registration network on ``pairs`` and write it to ``model_path`` (one file).

    ``max_steps`` stops after that many optimisation steps in all (counting those before a resume),
    leaving a checkpoint and no model file: the run can be resumed."""
    start = time.perf_counter()
    settings = settings or LearnSettings()
    device = torch_device(device)
    if not pairs:
        raise InputError("the cohort has no pairs")
    model_path = Path(model_path)
    inputs = {str(Path(v).resolve()) for p in pairs for v in vars(p).values() if isinstance(v, Path)}
    if str(model_path.resolve()) in inputs:
        raise InputError(f"{model_path}: is one of the cohort's files; write the model elsewhere")
    grid = model_grid_for(pairs, settings, spacing, size)
    train_files, val_files = split_pairs(pairs, validation_fraction, settings.seed)
    data = [load_pair(p, grid) for p in train_files]
    val = [load_pair(p, grid) for p in val_files]
    if not settings.labels:
        settings.labels = _labels_in(data + val)
    split = {"train": [p.id for p in train_files], "validation": [p.id for p in val_files]}
    network = build_network(grid, settings).to(device)
    loss_fn = RegistrationLoss(settings, grid.dim, device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    ckpt = checkpoint_path(model_path)
    epoch, index, step, history = 0, 0, 0, []
    if resume and ckpt.is_file():
        state = _load_checkpoint(ckpt, grid, settings, split)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        epoch, index, step, history = state["epoch"], state["index"], state["step"], list(state["history"])
        if report:
            report(f"resumed from {ckpt}: epoch {epoch + 1}, step {step}")
    batches_per_epoch = math.ceil(len(data) / settings.batch_size)
    if report:
        report(f"training on {len(data)} pair(s), validating on {len(val)}; model grid {grid.size} at "
               f"{grid.spacing} mm; {settings.epochs} epoch(s) of {batches_per_epoch} step(s)")
    network.train()
    fixed_cache: dict = {}
    consistent = True  # False while a step is half done: an interruption then saves nothing
    save = lambda: _save_checkpoint(ckpt, network, optimizer, grid, settings, epoch, index, step, history, split)  # noqa: E731
    try:
        from tqdm import tqdm

        while epoch < settings.epochs:
            generator = torch.Generator().manual_seed(settings.seed * 100_003 + epoch)
            order = torch.randperm(len(data), generator=generator).tolist()
            sums: dict[str, float] = {}
            count = 0
            bar = tqdm(total=batches_per_epoch, initial=index, disable=not progress, leave=False,
                       desc=f"epoch {epoch + 1}/{settings.epochs}")
            while index < batches_per_epoch:
                if max_steps is not None and step >= max_steps:
                    bar.close()
                    save()
                    return TrainResult(None, history, step, False, time.perf_counter() - start)
                chosen = [data[i] for i in order[index * settings.batch_size:(index + 1) * settings.batch_size]]
                batch = _batch(chosen, device)
                consistent = False
                terms = loss_terms(network, loss_fn, batch, network_field(network, batch, settings, device),
                                   fixed_vectors(loss_fn, chosen, device, fixed_cache))
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                optimizer.step()
                index, step = index + 1, step + 1
                consistent = True
                values = {k: float(v.detach()) for k, v in terms.items()}
                count += 1
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()})
                bar.update(1)
                if checkpoint_every and step % checkpoint_every == 0:
                    save()
            bar.close()
            row = {"epoch": epoch + 1, "step": step, **{k: v / max(count, 1) for k, v in sums.items()}}
            if val:
                row.update(validate(network, val, settings, device))
            history.append(row)
            if report:
                report("epoch {epoch}: ".format(**row) + ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                                                   if k not in ("epoch", "step")))
            epoch, index = epoch + 1, 0
            save()
    except BaseException:
        if consistent and step > 0:
            save()
        raise
    path = save_model(model_path, network, grid, settings, history)
    ckpt.unlink(missing_ok=True)
    return TrainResult(path, history, step, True, time.perf_counter() - start)

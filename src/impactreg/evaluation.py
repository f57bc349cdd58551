"""Registration accuracy as the field measures it: TRE, Dice, HD95, Jacobian determinant
statistics and MAE. ``evaluate`` gathers them from a transform and the original images."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .engine.outputs import input_files, refuse_replacing_inputs
from .errors import ImageError, InputError
from .files import atomic_write_text
from .image import Image, read_image
from .points import read_points
from .warp import jacobian_determinant, map_points, resample
from .transforms import Transform
from .transforms.elastix_files import read_transform_file


def target_registration_errors(transform: Transform, fixed_points: np.ndarray, moving_points: np.ndarray) -> np.ndarray:
    """|T(p_fixed) - p_moving| in mm for corresponding world points (N, D)."""
    dims = {"fixed": fixed_points.shape[-1], "moving": moving_points.shape[-1]}
    if any(d != transform.dim for d in dims.values()):
        raise InputError(f"the fixed points are {dims['fixed']}D and the moving points {dims['moving']}D but the "
                         f"transform is {transform.dim}D; give {transform.dim}D points on both sides")
    if fixed_points.shape != moving_points.shape:
        raise InputError(f"{len(fixed_points)} fixed and {len(moving_points)} moving points: give corresponding point lists")
    return np.linalg.norm(map_points(transform, fixed_points) - moving_points, axis=1)


def dice(fixed_labels: Image, warped_labels: Image, labels=None) -> dict[int, float]:
    """Dice per label value between two label maps on the same grid (label 0 is background)."""
    a = fixed_labels.data[0].round().long()
    b = warped_labels.data[0].round().long()
    if labels is None:
        labels = sorted(set(torch.unique(a).tolist()) - {0})
    scores = {}
    for label in labels:
        x, y = a == label, b == label
        total = int(x.sum() + y.sum())
        scores[int(label)] = float(2 * (x & y).sum() / total) if total else float("nan")
    return scores


def mean_dice(scores: dict[int, float]) -> float:
    values = [v for v in scores.values() if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def hausdorff95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """Symmetric 95th-percentile surface distance in mm between two boolean masks (torch-order
    arrays) on one grid; ``spacing`` in x-y-z order. nan when either mask is empty."""
    from scipy import ndimage

    if not a.any() or not b.any():
        return float("nan")
    sampling = tuple(reversed([float(s) for s in spacing]))

    def surface(mask):
        return mask & ~ndimage.binary_erosion(mask, border_value=0)

    sa, sb = surface(a), surface(b)
    to_b = ndimage.distance_transform_edt(~sb, sampling=sampling)
    to_a = ndimage.distance_transform_edt(~sa, sampling=sampling)
    return float(np.percentile(np.concatenate([to_b[sa], to_a[sb]]), 95))


def jacobian_statistics(transform: Transform, grid, mask: torch.Tensor | None = None) -> dict[str, float]:
    """Folding and regularity of a transform on a grid: fraction of det J <= 0, min det J, std of log det J."""
    det = jacobian_determinant(transform, grid).data[0].double()
    if mask is not None:
        det = det[mask]
    det = det.reshape(-1)
    positive = det[det > 0]
    return {"folded_fraction": float((det <= 0).double().mean()), "jacobian_min": float(det.min()),
            "jacobian_max": float(det.max()),
            "log_jacobian_std": float(torch.log(positive).std()) if positive.numel() > 1 else float("nan")}


def mean_absolute_error(fixed: Image, warped: Image, mask: torch.Tensor | None = None) -> float:
    diff = (fixed.data[0].double() - warped.data[0].double()).abs()
    return float(diff[mask].mean() if mask is not None else diff.mean())


def _world_points(points, grid) -> np.ndarray:
    """World points from an array, or a point file (index files converted with ``grid``)."""
    if isinstance(points, np.ndarray):
        return points
    point_set = read_points(points)
    if point_set.kind == "index":
        if grid is None:
            raise InputError(f"{points}: holds voxel indices; give the image they index (--moving for moving points)")
        return grid.index_to_world(point_set.values)
    return point_set.values


def evaluate(transform_file: str | os.PathLike, fixed_points=None, moving_points=None, fixed_labels=None,
             moving_labels=None, fixed_image=None, moving_image=None, mask=None,
             out_json: str | os.PathLike | None = None) -> dict:
    """Every measure the inputs allow, for a TransformParameters file (fixed -> moving)."""
    tf = read_transform_file(transform_file)
    if out_json is not None:
        inputs = {"transform file": tf.chain, "fixed point file": fixed_points, "moving point file": moving_points,
                  "fixed label map": fixed_labels, "moving label map": moving_labels, "fixed image": fixed_image,
                  "moving image": moving_image, "mask": mask}
        refuse_replacing_inputs(Path(out_json).parent, [Path(out_json).name], input_files(inputs))
    transform, grid = tf.transform, tf.grid
    summary: dict = {"transform": str(tf.path)}
    mask_tensor = None
    if mask is not None:
        mask_image = read_image(mask) if not isinstance(mask, Image) else mask
        from .filters import resample_to_grid
        mask_tensor = resample_to_grid(mask_image, grid, order=0).data[0] > 0
        if not bool(mask_tensor.any()):
            raise ImageError(f"{mask}: the mask is empty on the transform's output grid")
    if (fixed_points is None) != (moving_points is None):
        raise InputError("TRE needs both --fixed-points and --moving-points")
    if fixed_points is not None:
        f = _world_points(fixed_points, grid)
        moving_grid = None
        if moving_image is not None:
            moving_grid = (moving_image if isinstance(moving_image, Image) else read_image(moving_image)).grid
        m = _world_points(moving_points, moving_grid)
        errors = target_registration_errors(transform, f, m)
        summary["tre"] = {"mean": float(errors.mean()), "std": float(errors.std()), "median": float(np.median(errors)),
                          "p90": float(np.percentile(errors, 90)), "max": float(errors.max()), "count": int(len(errors))}
    if (fixed_labels is None) != (moving_labels is None):
        raise InputError("Dice and HD95 need both --fixed-labels and --moving-labels")
    if fixed_labels is not None:
        fl = read_image(fixed_labels) if not isinstance(fixed_labels, Image) else fixed_labels
        ml = read_image(moving_labels) if not isinstance(moving_labels, Image) else moving_labels
        from .filters import resample_to_grid
        fl = resample_to_grid(fl, grid, order=0)
        warped = resample(ml, transform, grid, order=0)
        scores = dice(fl, warped)
        a, b = fl.data[0].round().long().numpy(), warped.data[0].round().long().numpy()
        hd = {label: hausdorff95(a == label, b == label, grid.spacing) for label in scores}
        summary["dice"] = {"mean": mean_dice(scores), "per_label": {str(k): v for k, v in scores.items()}}
        summary["hd95_mm"] = {"mean": float(np.nanmean(list(hd.values()))) if hd else float("nan"),
                              "per_label": {str(k): v for k, v in hd.items()}}
    summary["jacobian"] = jacobian_statistics(transform, grid, mask_tensor)
    if fixed_image is not None and moving_image is not None:
        fixed = read_image(fixed_image) if not isinstance(fixed_image, Image) else fixed_image
        moving = read_image(moving_image) if not isinstance(moving_image, Image) else moving_image
        from .filters import resample_to_grid
        fixed = resample_to_grid(fixed, grid, order=1)
        warped = resample(moving, transform, grid, order=tf.interpolation_order, default=tf.default_pixel_value)
        summary["mae"] = mean_absolute_error(fixed, warped, mask_tensor)
    if out_json is not None:
        atomic_write_text(out_json, json.dumps(summary, indent=2) + "\n")
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"transform: {summary['transform']}"]
    if "tre" in summary:
        t = summary["tre"]
        lines.append(f"TRE (mm):        mean {t['mean']:.3f}  median {t['median']:.3f}  90% {t['p90']:.3f}  max {t['max']:.3f}  (n={t['count']})")
    if "dice" in summary:
        lines.append(f"Dice:            mean {summary['dice']['mean']:.4f}  " +
                     "  ".join(f"{k}:{v:.3f}" for k, v in summary["dice"]["per_label"].items()))
        lines.append(f"HD95 (mm):       mean {summary['hd95_mm']['mean']:.3f}")
    j = summary["jacobian"]
    lines.append(f"Jacobian:        folded {100 * j['folded_fraction']:.3f} %  min {j['jacobian_min']:.4f}  "
                 f"max {j['jacobian_max']:.4f}  std log J {j['log_jacobian_std']:.4f}")
    if "mae" in summary:
        lines.append(f"MAE:             {summary['mae']:.4f}")
    return "\n".join(lines)

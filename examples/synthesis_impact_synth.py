"""IMPACT-Synth: the IMPACT loss as a perceptual term for a synthesis network (T1 -> T2-like).

A small 2D U-Net (MONAI) turns axial slices of the MNI152 T1 template into a T2-like image made from
its tissue maps (impactreg.synthetic.t2_like). It is trained twice from the same initial weights and
the same data order: with L1 alone, and with L1 + w x IMPACT-Synth, the IMPACT loss with a 2D feature
model run slice by slice on a slab of consecutive slices (the slab's statistics normalise it; a head
mask is resampled to each feature grid; the feature model's weights are frozen, gradients flow into
the synthesised slab only). Held-out slices (whole blocks of slices never seen in training) are scored
by MAE and SSIM inside the head.

    PYTHONPATH=src python examples/synthesis_impact_synth.py            # MIND 2D, a few minutes on a CPU
    python examples/synthesis_impact_synth.py --model SAM2.1/SAM2.1_Tiny --channels 3 \\
        --normalization imagenet       # a hub model (downloaded once), RGB replication; --layers picks layers

The MNI152 files come from the nilearn wheel or from $IMPACTREG_DATA/mni152.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from impactreg import IMPACT
from impactreg.demo import MNI, downsample, mni_folder
from impactreg.image import read_image
from impactreg.synthetic import t2_like


def load_volumes(spacing_mm: float, seed: int):
    """T1 and T2-like volumes (Z, Y, X) scaled to about [0, 1], and the head mask, padded to multiples of 4."""
    folder = mni_folder()
    t1, gm, wm = (downsample(read_image(folder / MNI[k]), spacing_mm) for k in ("t1", "gm", "wm"))
    t2 = t2_like(t1, gm, wm, seed)
    x, y = t1.data[0], t2.data[0]
    x, y = x / torch.quantile(x[x > 0], 0.995), y / torch.quantile(y[y > 0], 0.995)
    head = x > 0.08
    pad = [(-n) % 4 for n in x.shape[1:]]
    pad2d = (0, pad[1], 0, pad[0])
    return [F.pad(v.float(), pad2d) for v in (x, y, head.float())]


def split_slices(head: torch.Tensor, block: int, every: int):
    """Axial slices with enough head, cut into blocks of ``block`` slices; every ``every``-th block held out."""
    valid = [z for z in range(head.shape[0]) if float(head[z].mean()) > 0.1]
    blocks = [valid[i:i + block] for i in range(0, len(valid), block)]
    held = [z for k, b in enumerate(blocks) if k % every == every // 2 for z in b]
    train = [b for k, b in enumerate(blocks) if k % every != every // 2]
    return train, held


def network(seed: int) -> torch.nn.Module:
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    return UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(16, 32, 64), strides=(2, 2),
                num_res_units=1, norm="instance")


def ssim(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean SSIM (Gaussian window, sigma 1.5 voxels) of slices (N, 1, H, W) inside the mask."""
    from monai.metrics.regression import compute_ssim_and_cs

    s, _ = compute_ssim_and_cs(a, b, spatial_dims=2, kernel_size=(11, 11), kernel_sigma=(1.5, 1.5), data_range=1.0,
                               kernel_type="gaussian", k1=0.01, k2=0.03)
    m = mask[:, :, 5:-5, 5:-5]  # the SSIM map lacks half a window at each border
    return float((s * m).sum() / m.sum())


def train_and_score(perceptual_weight: float, data, args) -> dict:
    x, y, head, train_blocks, held = data
    net = network(args.seed)
    optimiser = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    perceptual = None
    if perceptual_weight > 0:
        perceptual = IMPACT(args.model, dimension=2, channels=args.channels, layers_mask=args.layers,
                            distance=args.distance, normalization=args.normalization, slice_axis=0)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        for k in torch.randperm(len(train_blocks), generator=generator).tolist():
            zs = train_blocks[k]
            source, target, mask = x[zs, None], y[zs, None], head[zs, None]
            synthetic = net(source)
            loss = F.l1_loss(synthetic * mask, target * mask)
            if perceptual is not None:  # the slab as one volume (1, 1, S, H, W), features slice by slice
                slab = lambda t: t.transpose(0, 1)[None]  # noqa: E731
                loss = loss + perceptual_weight * perceptual(slab(target), slab(synthetic), slab(mask))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    seconds = time.perf_counter() - start
    net.eval()
    with torch.no_grad():
        source, target, mask = x[held, None], y[held, None], head[held, None]
        synthetic = net(source).clamp(0, 1.5)
    mae = float(((synthetic - target).abs() * mask).sum() / mask.sum())
    return {"mae": mae, "ssim": ssim(synthetic * mask, target * mask, mask), "seconds": seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="T1 -> T2-like synthesis with L1 vs L1 + IMPACT-Synth")
    parser.add_argument("--spacing", type=float, default=2.0, help="voxel size of the volumes in mm")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weight", type=float, default=0.1, help="weight of the IMPACT-Synth term")
    parser.add_argument("--model", default="MIND/R1D2", help="2D feature model (MIND/R<r>D<d>, TorchScript, hub name)")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--layers", default="1")
    parser.add_argument("--distance", default="L1")
    parser.add_argument("--normalization", default="none")
    parser.add_argument("--block", type=int, default=6, help="slices per slab (and per held-out block)")
    args = parser.parse_args(argv)
    x, y, head = load_volumes(args.spacing, args.seed)
    train_blocks, held = split_slices(head, args.block, every=4)
    print(f"volumes {tuple(x.shape)} at {args.spacing:g} mm; {sum(map(len, train_blocks))} training slices in "
          f"{len(train_blocks)} slabs, {len(held)} held-out slices")
    data = (x, y, head, train_blocks, held)
    rows = {"L1": train_and_score(0.0, data, args),
            f"L1 + {args.weight:g} IMPACT-Synth ({args.model})": train_and_score(args.weight, data, args)}
    print(f"{'loss':<44} {'MAE':>8} {'SSIM':>8} {'train s':>8}")
    for name, r in rows.items():
        print(f"{name:<44} {r['mae']:8.4f} {r['ssim']:8.4f} {r['seconds']:8.1f}")
    print("(MAE in units of the T2's 99.5th percentile, inside the head, on held-out slices; times from this machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

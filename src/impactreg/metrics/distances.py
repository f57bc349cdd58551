"""Distances between feature vectors f, m of shape (N, K) (N samples, K channels); lower is better.

L1 = mean_k |f - m|; L2 = mean_k (f - m)^2; Cosine = -f.m / (|f| |m|);
L1Cosine = -cos(f, m) * mean_k exp(-0.1 |f_k - m_k|); DotProduct = -sum_k f_k m_k;
Dice = -2 sum_k f_k m_k / sum_k (f_k + m_k); all averaged over samples.
NCC = -mean_k ncc_k with ncc_k the normalised cross-correlation of channel k over the samples.
Plain torch expressions, so gradients are exact (autograd).
"""
from __future__ import annotations

import torch

EPS = 1e-8


def l1(f, m):
    return (f - m).abs().mean()


def l2(f, m):
    return ((f - m) ** 2).mean()


def cosine(f, m):
    return -(torch.nn.functional.cosine_similarity(f, m, dim=1, eps=EPS)).mean()


def l1_cosine(f, m):
    cos = torch.nn.functional.cosine_similarity(f, m, dim=1, eps=EPS)
    return -(cos * torch.exp(-0.1 * (f - m).abs()).mean(dim=1)).mean()


def dot_product(f, m):
    return -(f * m).sum(dim=1).mean()


def dice(f, m):
    return -(2 * (f * m).sum(dim=1) / ((f + m).sum(dim=1) + EPS)).mean()


def ncc(f, m):
    fc, mc = f - f.mean(dim=0), m - m.mean(dim=0)
    num = (fc * mc).sum(dim=0)
    den = torch.sqrt((fc * fc).sum(dim=0) * (mc * mc).sum(dim=0) + EPS)
    return -(num / den).mean()


DISTANCES = {"L1": l1, "L2": l2, "Cosine": cosine, "L1Cosine": l1_cosine, "DotProduct": dot_product,
             "Dice": dice, "NCC": ncc}

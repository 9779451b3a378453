"""Distances between two samples of vectors (no reference network needed)."""

from __future__ import annotations

from typing import Sequence

import torch


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance (Rabin et al. 2011) between samples ``x`` [N x D] and ``y`` [M x D]:
    the mean over random unit directions of the 1-D Wasserstein-1 distance of the projections, each
    computed exactly from quantiles (on a common grid of max(N, M) quantile levels)."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"sliced_wasserstein needs [N x D] and [M x D], got {tuple(x.shape)} and {tuple(y.shape)}")
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(x.shape[1], n_projections, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px, py = x.double().cpu() @ dirs, y.double().cpu() @ dirs
    m = max(px.shape[0], py.shape[0])
    levels = (torch.arange(m, dtype=torch.float64) + 0.5) / m
    qx = torch.quantile(px, levels, dim=0, interpolation="lower")
    qy = torch.quantile(py, levels, dim=0, interpolation="lower")
    return float((qx - qy).abs().mean())


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = (0.1, 0.3, 1.0, 3.0)) -> float:
    """Squared maximum mean discrepancy (Gretton et al. 2012), biased V-statistic, with a sum of RBF
    kernels exp(-||a - b||^2 / (2 h^2)) over ``bandwidths``. Zero iff the samples coincide in distribution
    (as the sample size grows)."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd_rbf needs [N x D] and [M x D], got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.double().cpu(), y.double().cpu()

    def k(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    return float(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())

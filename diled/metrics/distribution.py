"""Distances between two samples of vectors (no reference network needed)."""

from __future__ import annotations

import math
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


def kmeans(x: torch.Tensor, k: int, iters: int = 50, seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding; cluster index per row of ``x`` [N x D] -> [N]."""
    g = torch.Generator().manual_seed(seed)
    centers = x[torch.randint(len(x), (1,), generator=g)]
    for _ in range(1, k):
        d2 = torch.cdist(x, centers).min(1).values.pow(2)
        if float(d2.sum()) == 0:  # fewer distinct points than k
            break
        centers = torch.cat([centers, x[torch.multinomial(d2 / d2.sum(), 1, generator=g)]])
    for _ in range(iters):
        assign = torch.cdist(x, centers).argmin(1)
        moved = torch.stack([x[assign == j].mean(0) if bool((assign == j).any()) else centers[j]
                             for j in range(len(centers))])
        if torch.allclose(moved, centers):
            break
        centers = moved
    return torch.cdist(x, centers).argmin(1)


def mauve_score(p: torch.Tensor, q: torch.Tensor, num_clusters: int | None = None, scaling: float = 5.0,
                explained_variance: float = 0.9, seed: int = 0) -> float:
    """A MAUVE-style score (Pillutla et al. 2021) between feature samples ``p`` [N x D] (e.g. generated)
    and ``q`` [M x D] (e.g. held-out data), in (0, 1], 1 for identical distributions.

    As in MAUVE: the pooled features are reduced by PCA to ``explained_variance`` and quantised by k-means
    (``num_clusters`` default (N + M) / 10); with the cluster histograms P and Q and R = l P + (1 - l) Q,
    the divergence curve (exp(-c KL(Q || R)), exp(-c KL(P || R))) over l in (0, 1) is integrated.
    Not the ``mauve-text`` package: features, clustering and grid are ours, so values are comparable only
    with each other."""
    if p.dim() != 2 or q.dim() != 2 or p.shape[1] != q.shape[1] or min(len(p), len(q)) < 2:
        raise ValueError(f"mauve_score needs two [n x D] samples with n >= 2, got {tuple(p.shape)} and {tuple(q.shape)}")
    x = torch.cat([p, q]).double()
    x = x - x.mean(0)
    _, s, v = torch.linalg.svd(x, full_matrices=False)
    share = (s.pow(2) / s.pow(2).sum()).cumsum(0)
    dims = int((share < explained_variance).sum()) + 1
    x = (x @ v[:dims].T).float()
    k = num_clusters or max(2, len(x) // 10)
    labels = kmeans(x, k, seed=seed)
    hist_p = torch.bincount(labels[:len(p)], minlength=k).double() / len(p)
    hist_q = torch.bincount(labels[len(p):], minlength=k).double() / len(q)

    def kl(a, b):
        m = a > 0
        return float((a[m] * (a[m] / b[m]).log()).sum())

    points = [(0.0, 1.0), (1.0, 0.0)]
    for lam in torch.linspace(1e-6, 1 - 1e-6, 25).tolist():
        r = lam * hist_p + (1 - lam) * hist_q
        points.append((math.exp(-scaling * kl(hist_q, r)), math.exp(-scaling * kl(hist_p, r))))
    points.sort(key=lambda xy: (xy[0], -xy[1]))  # along the frontier: x up, y down
    return float(sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(points, points[1:])))

"""Small synthetic data sets with a known, multimodal distribution (for tests and the vector job)."""

from __future__ import annotations

import math

import torch


def gaussian_ring(n: int, modes: int = 8, radius: float = 2.0, std: float = 0.1, seed: int = 0,
                  dim: int = 2) -> torch.Tensor:
    """``n`` points [n x dim] from an equal mixture of ``modes`` isotropic Gaussians (std ``std``) whose
    means sit evenly on a circle of radius ``radius`` in the first two coordinates (the others are 0 +
    noise). The standard multimodal 2-D benchmark of generative models."""
    if n < 1 or modes < 1 or dim < 2:
        raise ValueError(f"gaussian_ring: need n >= 1, modes >= 1, dim >= 2; got n={n}, modes={modes}, dim={dim}")
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, modes, (n,), generator=g)
    angle = 2 * math.pi * k.float() / modes
    means = torch.zeros(n, dim)
    means[:, 0], means[:, 1] = radius * torch.cos(angle), radius * torch.sin(angle)
    return means + std * torch.randn(n, dim, generator=g)


def ring_mode_coverage(x: torch.Tensor, modes: int = 8, radius: float = 2.0, std: float = 0.1) -> tuple[int, float]:
    """(number of ring modes hit by at least one point within 3 std, fraction of points within 3 std of a mode)."""
    angle = 2 * math.pi * torch.arange(modes).float() / modes
    centres = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)
    d = torch.cdist(x[:, :2].float(), centres)
    near = d.min(dim=1)
    close = near.values < 3 * std
    return int(torch.unique(near.indices[close]).numel()), float(close.float().mean())

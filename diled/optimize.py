"""Latent-space optimisation of a predicted property (protein fitness): start from the latents of given
sequences, move them to where the codec's regressor predicts more, and decode the proposals.

Two searches, both within a ball of ``radius`` (in units of the typical latent spread, see
``latent_scale``) around each start, so that proposals stay near the data:

- ``gradient_ascent``: normalised gradient steps on the predicted value, projected onto the ball.
- ``sample_search``: ``candidates`` Gaussian perturbations of the start; the best predicted one wins.
"""

from __future__ import annotations

import torch


def latent_scale(z: torch.Tensor) -> float:
    """The typical spread of latents ``z`` [N x D]: the root of the summed per-dimension variances."""
    return float(z.var(0).sum().sqrt())


def gradient_ascent(predict, z_start: torch.Tensor, radius: float, steps: int = 50) -> torch.Tensor:
    """``steps`` normalised ascent steps of length ``radius / 10`` on ``predict(z)`` [N], each row kept
    within ``radius`` of its start."""
    if radius <= 0 or steps < 1:
        raise ValueError(f"need radius > 0 and steps >= 1, got {radius}, {steps}")
    z = z_start.detach().clone()
    step = radius / 10
    for _ in range(steps):
        z.requires_grad_(True)
        with torch.enable_grad():
            grad, = torch.autograd.grad(predict(z).sum(), z)
        with torch.no_grad():
            z = z + step * grad / grad.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            delta = z - z_start
            norm = delta.norm(dim=-1, keepdim=True)
            z = z_start + delta * (radius / norm).clamp(max=1.0)
    return z.detach()


@torch.no_grad()
def sample_search(predict, z_start: torch.Tensor, radius: float, candidates: int = 64,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """For each start, ``candidates`` points start + eps (Gaussian, |eps| about ``radius``, cut at it),
    the best by ``predict``."""
    if radius <= 0 or candidates < 1:
        raise ValueError(f"need radius > 0 and candidates >= 1, got {radius}, {candidates}")
    n, d = z_start.shape
    eps = torch.randn((n, candidates, d), generator=generator).to(z_start) * (radius / d ** 0.5)
    eps = eps * (radius / eps.norm(dim=-1, keepdim=True).clamp(min=1e-12)).clamp(max=1.0)
    points = z_start.unsqueeze(1) + eps
    scores = predict(points.reshape(n * candidates, d)).reshape(n, candidates)
    return points[torch.arange(n), scores.argmax(1)]

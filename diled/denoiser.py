"""The latent prior's network: an MLP with skip connections, ``MLPSkipNet(z_t, t) -> eps``.

It never sees the schedule or the loss (LatentDiffusion owns those); it maps a noisy latent and an
integer step to a noise prediction. Architecture as in DiLED's prior (after DiffAE's MLPSkipNet,
Preechakul et al. 2022): the input is concatenated into every hidden layer, each layer is
Linear -> LayerNorm -> scale by the time embedding ``h * (1 + cond)`` -> SiLU.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer steps (Vaswani et al. 2017; DDPM). ``t`` [N] -> [N x dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class MLPSkipNet(nn.Module):
    """eps_theta(z_t, t): ``z_t`` [N x D], ``t`` [N] int in 1..T -> eps [N x D].

    Args:
        latent_dim: D, the size of the latent vector.
        hidden: width of every hidden layer (paper: 2048).
        depth: number of hidden layers (paper: 20).
        time_dim: size of the sinusoidal time embedding and of its MLP.
        dropout: dropout after each hidden activation.
    """

    def __init__(self, latent_dim: int, hidden: int = 2048, depth: int = 20, time_dim: int = 128,
                 dropout: float = 0.0):
        super().__init__()
        for name, value in (("latent_dim", latent_dim), ("hidden", hidden), ("depth", depth), ("time_dim", time_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"MLPSkipNet: {name} must be a positive integer, got {value!r}")
        self.latent_dim, self.hidden, self.depth, self.time_dim, self.dropout = latent_dim, hidden, depth, time_dim, dropout
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        # Layer 0 sees z_t alone; every later layer sees [h, z_t] (the skip connection).
        self.layers = nn.ModuleList(
            nn.Linear(latent_dim if i == 0 else hidden + latent_dim, hidden) for i in range(depth))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(depth))
        self.time_proj = nn.ModuleList(nn.Linear(time_dim, hidden) for _ in range(depth))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden + latent_dim, latent_dim)

    def get_config(self) -> dict:
        return {"latent_dim": self.latent_dim, "hidden": self.hidden, "depth": self.depth,
                "time_dim": self.time_dim, "dropout": self.dropout}

    def forward(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if z_t.dim() != 2 or z_t.shape[1] != self.latent_dim:
            raise ValueError(f"MLPSkipNet expects z_t of shape [N x {self.latent_dim}], got {tuple(z_t.shape)}")
        t = t.reshape(-1).expand(z_t.shape[0]) if t.numel() == 1 else t
        # the network runs in its weights' dtype (bf16 under mixed precision) whatever the schedule's is
        z_t = z_t.to(self.out.weight.dtype)
        cond_all = self.time_mlp(timestep_embedding(t, self.time_dim).to(z_t.dtype))
        h = z_t
        for i, (layer, norm, proj) in enumerate(zip(self.layers, self.norms, self.time_proj)):
            h = layer(h if i == 0 else torch.cat([h, z_t], dim=-1))
            h = norm(h) * (1 + proj(cond_all))
            h = self.drop(nn.functional.silu(h))
        return self.out(torch.cat([h, z_t], dim=-1))

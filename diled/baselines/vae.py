"""The text-VAE baseline's parts (Bowman et al. 2016; Optimus, Li et al. 2020): a diagonal Gaussian
posterior q(z | x) = N(mu, diag(exp(logvar))) against the prior N(0, I), with the usual fixes for
posterior collapse as options: KL annealing (the weight rises linearly from 0) and free bits (Kingma et
al. 2016: each latent dimension's batch-mean KL counts at least ``free_bits`` nats).

    loss = mean_N[ L_rec(z) ] + beta(step) * sum_d max(mean_N KL_d, free_bits),   z ~ q(z | x)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch


@dataclass(frozen=True)
class VAEOptions:
    """beta: the KL weight after annealing. With a per-token reconstruction loss (the text codec's NLL is
    divided by the sentence length) beta ~ 1 / (tokens per sentence) is the ELBO per token.
    anneal_steps: training steps over which the weight rises linearly from 0 to beta (0: no annealing).
    free_bits: nats per latent dimension below which its KL is not penalised (0: off)."""

    beta: float = 1.0
    anneal_steps: int = 0
    free_bits: float = 0.0

    def __post_init__(self):
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or self.beta < 0:
            raise ValueError(f"vae.beta must be a number >= 0, got {self.beta!r}")
        if isinstance(self.anneal_steps, bool) or not isinstance(self.anneal_steps, int) or self.anneal_steps < 0:
            raise ValueError(f"vae.anneal_steps must be an integer >= 0, got {self.anneal_steps!r}")
        if isinstance(self.free_bits, bool) or not isinstance(self.free_bits, (int, float)) or self.free_bits < 0:
            raise ValueError(f"vae.free_bits must be a number >= 0, got {self.free_bits!r}")

    @classmethod
    def from_dict(cls, data: dict | None) -> "VAEOptions":
        data = dict(data or {})
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown vae option(s) {unknown}; valid: beta, anneal_steps, free_bits")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL( N(mu, exp(logvar)) || N(0, 1) ) per dimension: [N x D]."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def kl_weight(step: int, options: VAEOptions) -> float:
    """The annealed KL weight at training step ``step`` (counted from 1)."""
    if options.anneal_steps == 0:
        return float(options.beta)
    return float(options.beta) * min(1.0, step / options.anneal_steps)


def kl_term(kl: torch.Tensor, options: VAEOptions) -> torch.Tensor:
    """The penalised KL (a scalar) from per-dimension KLs [N x D], with free bits on the batch mean."""
    per_dim = kl.mean(0)
    if options.free_bits > 0:
        per_dim = per_dim.clamp(min=options.free_bits)
    return per_dim.sum()

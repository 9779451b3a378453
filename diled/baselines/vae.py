"""The text-VAE baseline's parts (Bowman et al. 2016; Optimus, Li et al. 2020): a diagonal Gaussian
posterior q(z | x) = N(mu, diag(exp(logvar))) against the prior N(0, I), with the usual fixes for
posterior collapse as options: KL annealing (the weight rises linearly from 0) and free bits (Kingma et
al. 2016: each latent dimension's batch-mean KL counts at least ``free_bits`` nats).

    loss = mean_N[ L_rec(z) ] + beta(step) * sum_d max(mean_N KL_d, free_bits),   z ~ q(z | x)

``VAE`` is that model on any DiLED codec: a ``DiLED`` subclass, so that it trains, saves, loads and
serves through the same code; a saved config with ``"objective": "vae"`` builds it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from diled.diffusion import LatentDiffusion, check_sampler_name
from diled.checks import check_keys
from diled.denoiser import ZeroLinear
from diled.model import DEFAULT_W, DiLED, slerp


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
        check_keys(data, [f.name for f in fields(cls)], "vae option(s)")
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


class VAE(DiLED):
    """The VAE baseline on a DiLED codec: the codec's encoder mean and a log-variance predicted from it
    (``vae_logvar``, starting at N(mu, I)) give q(z | x); the loss is the module docstring's; the prior is
    N(0, I) itself, so sampling decodes Gaussian noise and inversion / interpolation work on the means.

    The denoiser and diffusion are kept, frozen and unused, so that the model has DiLED's layout (the
    trainer, checkpoints and the comparison harness treat both alike). ``forward`` returns DiLED's dict:
    ``diff`` is the KL to N(0, I) (summed over dimensions), ``nelbo`` = rec + KL, ``t`` is 1.
    """

    objectives = ("vae",)

    def __init__(self, codec, denoiser: nn.Module, diffusion: LatentDiffusion, w: float = DEFAULT_W,
                 objective: str = "vae", vae: VAEOptions | dict | None = None,
                 prior_temperature: float = 1.0, sampling_eta: float = 0.0):
        super().__init__(codec, denoiser, diffusion, w=w, objective=objective,
                         prior_temperature=prior_temperature, sampling_eta=sampling_eta)
        self.vae = vae if isinstance(vae, VAEOptions) else VAEOptions.from_dict(vae)
        self.vae_logvar = ZeroLinear(self.latent_dim, self.latent_dim)
        self.register_buffer("vae_step", torch.zeros((), dtype=torch.long))  # for KL annealing; checkpointed

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "vae": self.vae.to_dict()}

    def forward(self, batch, t: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """z ~ N(mu, exp(logvar)), reconstruction + annealed, free-bits KL (``t`` is not used)."""
        batch = self.prepare_batch(batch)
        z0 = self.codec.encode(batch)
        logvar = self.vae_logvar(z0)
        z = z0 + (0.5 * logvar).exp() * torch.randn_like(z0)
        rec = self.codec.reconstruction_loss(batch, z)
        kl = gaussian_kl(z0, logvar)
        if self.training:
            self.vae_step += 1
        loss = rec.mean() + kl_weight(int(self.vae_step), self.vae) * kl_term(kl, self.vae)
        kl_sum = kl.sum(1)
        t = torch.ones(z0.shape[0], dtype=torch.long, device=z0.device)  # no diffusion step: reported as 1
        return self.outputs(loss, rec, kl_sum.detach(), (rec + kl_sum).detach().float(), t, z0, (batch, z))

    @torch.no_grad()
    def sample_latents(self, n: int, steps: int | None = None, sampler: str = "ddim", eta: float | None = None,
                       generator: torch.Generator | None = None, z_T: torch.Tensor | None = None,
                       condition=None, guidance_scale: float = 1.0, classifier=None,
                       prior_temperature: float | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """z ~ N(0, t^2 I), t = ``prior_temperature``, [n x D]: the VAE's prior needs no network (``steps``,
        ``eta``, ``noise`` are not used); it takes
        no condition (guidance steers a diffusion prior)."""
        check_sampler_name(sampler)
        if condition is not None:
            raise ValueError("the VAE baseline samples its N(0, I) prior: it cannot be guided toward a condition")
        return self.noise(n, generator, prior_temperature) if z_T is None else z_T

    @torch.no_grad()
    def invert(self, batch, steps: int | None = None) -> torch.Tensor:
        """A VAE's code is its mean."""
        return self.encode(batch)

    def _through_prior(self, z0: torch.Tensor, steps: int | None) -> torch.Tensor:
        return z0

    def _slerp_through_prior(self, za, zb, alphas, steps):
        return torch.cat([slerp(za, zb, s) for s in alphas])

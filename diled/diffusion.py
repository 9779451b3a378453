"""The latent diffusion process of DiLED: schedule buffers, the objective's diffusion terms, samplers.

Notation (docs/design.md section 1): ``z0`` is the encoder mean mu(x0), ``z1`` the first latent
``z1 = z0 + sqrt(beta_1) * eps'``, and ``z_t`` (t in 1..T) the noisy latent

    z_t = sqrt(abar_t) * z1 + sqrt(1 - abar_t) * eps,        abar_t = prod_{s <= t} alpha_s,

so z1 plays the part of DDPM's clean x_0 and ``betas[t - 1]`` is beta_t. The process holds no trainable
parameters: the denoiser ``eps_theta(z_t, t)`` is passed in (improved-diffusion's convention).

Samplers are free functions taking the full, explicit, descending step sequence (k-diffusion's
convention); there is no hidden call-order state. One update covers them all: the generalised DDIM step
from t to s < t (Song et al. 2021, arXiv:2010.02502, eq. 12), which is deterministic for eta = 0 and is
DDPM's ancestral step (posterior mean and variance) for eta = 1. ``abar_0 = 1`` stands for the clean end.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence, get_args

import numpy as np
import torch
from torch import nn

from diled.denoiser import prior_eps, self_conditioned
from diled.schedules import ScheduleName, check_num_steps, check_schedule_name, get_betas

SamplerName = Literal["ddim", "ddpm"]
SAMPLER_NAMES: tuple[str, ...] = get_args(SamplerName)
Spacing = Literal["quadratic", "uniform"]
SPACINGS: tuple[str, ...] = get_args(Spacing)


MAX_TEMPERATURE = 2.0


def check_temperature(value) -> float:
    """A sampling temperature (the scale of z_T): a number in (0, MAX_TEMPERATURE], else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TEMPERATURE:
        raise ValueError(f"prior_temperature must be a number in (0, {MAX_TEMPERATURE}], got {value!r}")
    return float(value)


def check_eta(value) -> float:
    """The DDIM sampler's eta (how much fresh noise each step adds; 0: deterministic, 1: DDPM's posterior
    variance): a number in [0, 1], else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"eta must be a number in [0, 1], got {value!r}")
    return float(value)


def check_sampler_name(name: str) -> str:
    if name not in SAMPLER_NAMES:
        raise ValueError(f"unknown sampler {name!r}; valid names: {', '.join(SAMPLER_NAMES)}")
    return name


class LatentDiffusion(nn.Module):
    """A Gaussian diffusion over latent vectors ``[N x D]`` with a named beta schedule.

    Buffers (float32, derived once from float64, indexed ``buf[t - 1]``): ``betas``, ``alphas``,
    ``alphas_cumprod``, ``rec_weights`` = 1 / (T * lambda_t) with the ELBO weight
    ``lambda_t = beta_t / (2 * alpha_t * (1 - abar_t))``.
    """

    _BUFFERS = ("betas", "alphas", "alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
                "lambdas", "rec_weights")

    def __init__(self, schedule: ScheduleName = "constant", T: int = 1000):
        super().__init__()
        self.schedule = check_schedule_name(schedule)
        self.T = check_num_steps(T)
        betas = get_betas(schedule, self.T)
        alphas = 1.0 - betas
        abar = np.cumprod(alphas)
        lambdas = betas / (2.0 * alphas * (1.0 - abar))
        self._f64 = {
            "betas": betas, "alphas": alphas, "alphas_cumprod": abar,
            "sqrt_alphas_cumprod": np.sqrt(abar), "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - abar),
            "lambdas": lambdas, "rec_weights": 1.0 / (self.T * lambdas),
        }
        for name in self._BUFFERS:
            # Not persistent: the config (schedule, T) determines them, the checkpoint need not carry them.
            # from_numpy: DeepSpeed's zero.Init (ZeRO-3 under bf16) turns torch.tensor's results into bf16
            self.register_buffer(name, torch.from_numpy(self._f64[name].astype(np.float32)), persistent=False)

    def _apply(self, fn, recurse=True):
        # model.to(bfloat16) (as DeepSpeed does for bf16) would round the schedule; keep it float32,
        # recomputed from the float64 source on whatever device the module moved to.
        super()._apply(fn, recurse)
        for name in self._BUFFERS:
            buf = self._buffers[name]
            if buf.dtype != torch.float32:
                self._buffers[name] = torch.tensor(self._f64[name], dtype=torch.float32, device=buf.device)
        return self

    def get_config(self) -> dict:
        return {"schedule": self.schedule, "T": self.T}

    def extra_repr(self) -> str:
        return f"schedule={self.schedule!r}, T={self.T}"

    # ----------------------------------------------------------------- per-step lookups
    def _at(self, buf: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``buf[t - 1]`` as [N x 1] for broadcasting against [N x D]."""
        return buf[t.long() - 1].unsqueeze(-1)

    def check_t(self, t: torch.Tensor) -> torch.Tensor:
        if t.dtype.is_floating_point:
            raise TypeError(f"t must be an integer tensor, got dtype {t.dtype}")
        if t.numel() and (int(t.min()) < 1 or int(t.max()) > self.T):
            raise ValueError(f"t must lie in 1..{self.T}, got values from {int(t.min())} to {int(t.max())}")
        return t

    def sample_t(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """t ~ U{1..T}: [n] int64."""
        return torch.randint(1, self.T + 1, (n,), device=device, generator=generator)

    @property
    def encoder_noise_std(self) -> float:
        """sqrt(beta_1): the encoding step's standard deviation, z1 = z0 + sqrt(beta_1) * eps'."""
        return math.sqrt(self._f64["betas"][0])

    def abar(self, t: int) -> float:
        """abar_t as a float64 scalar, with abar_0 = 1 (the clean end)."""
        return 1.0 if t == 0 else float(self._f64["alphas_cumprod"][t - 1])

    def rec_weight(self, t: torch.Tensor) -> torch.Tensor:
        """1 / (T * lambda_t): [N]. The reconstruction term's share at step t (docs/design.md section 1)."""
        return self.rec_weights[t.long() - 1]

    # ----------------------------------------------------------------- forward process
    def q_sample(self, z1: torch.Tensor, t: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """z_t = sqrt(abar_t) z1 + sqrt(1 - abar_t) eps: [N x D]."""
        eps = torch.randn_like(z1) if eps is None else eps
        return self._at(self.sqrt_alphas_cumprod, t) * z1 + self._at(self.sqrt_one_minus_alphas_cumprod, t) * eps

    def predict_start_from_noise(self, z_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """z1_hat = (z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t): [N x D]."""
        return (z_t - self._at(self.sqrt_one_minus_alphas_cumprod, t) * eps) / self._at(self.sqrt_alphas_cumprod, t)

    def q_posterior_mean_variance(self, z1: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor):
        """Mean [N x D] and variance [N x 1] of q(z_{t-1} | z_t, z1) for t >= 2 (DDPM eq. 7)."""
        abar_t = self._at(self.alphas_cumprod, t)
        abar_prev = self._at(self.alphas_cumprod, t - 1)
        beta_t, alpha_t = self._at(self.betas, t), self._at(self.alphas, t)
        mean = (abar_prev.sqrt() * beta_t * z1 + alpha_t.sqrt() * (1 - abar_prev) * z_t) / (1 - abar_t)
        return mean, beta_t * (1 - abar_prev) / (1 - abar_t)

    # ----------------------------------------------------------------- objective
    def training_losses(self, denoiser: nn.Module, z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor,
                        eps: torch.Tensor | None = None, cond: torch.Tensor | None = None,
                        z_self: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The prior's per-example terms of the DiLED loss (``cond``: class indices for a conditional prior;
        ``z_self``: a self-conditioned prior's earlier estimate of z1, zeros if None).

        Args:
            denoiser: eps_theta(z_t, t).
            z0: [N x D] encoder means mu(x0) (the alignment target at t == 1).
            z1: [N x D] first latents (DDPM's clean sample).
            t: [N] steps in 1..T.
            eps: [N x D] forward noise; drawn if None.
        Returns:
            ``diff`` [N]: ``mean_d ||eps - eps_theta(z_t, t)||^2`` where t >= 2 and
            ``(alpha_1 / beta_1) * mean_d ||z0 - z1_hat(z_t, 1)||^2`` (L_align) where t == 1;
            also ``z_t`` and ``eps_pred`` [N x D].
        """
        self.check_t(t)
        eps = torch.randn_like(z1) if eps is None else eps
        z_t = self.q_sample(z1, t, eps)
        eps_pred = prior_eps(denoiser, z_t, t, cond, z_self)
        l_diff = (eps - eps_pred).pow(2).mean(dim=-1)
        # At t == 1, abar_1 = alpha_1 and 1 - abar_1 = beta_1, so this is docs/design.md's
        # (z_t - sqrt(beta_1) eps_theta) / sqrt(alpha_1); both z0 (encoder) and eps_pred (prior) get gradient.
        z1_pred = self.predict_start_from_noise(z_t, t, eps_pred)
        a1, b1 = self._f64["alphas"][0], self._f64["betas"][0]
        l_align = (a1 / b1) * (z0 - z1_pred).pow(2).mean(dim=-1)
        return {"diff": torch.where(t == 1, l_align, l_diff), "z_t": z_t, "eps_pred": eps_pred}

    # ----------------------------------------------------------------- step sequences and samplers
    def timesteps(self, steps: int | None = None, spacing: Spacing = "quadratic") -> list[int]:
        """A descending step sequence from ~T to 1: all T steps if ``steps`` is None, else ``steps``
        of them (DDIM's sub-sequence, e.g. 10/20/50; fewer if rounding makes two coincide, at small T).

        ``spacing="quadratic"`` puts the steps at t ~ i^2, dense where the noise is low (Song et al. 2021,
        appendix D.2); with an exact eps on Gaussian data it halves to thirds the DDIM error of
        ``"uniform"`` for the constant schedule at 50 steps (tests/unit/test_diffusion.py).
        """
        if steps is None or steps == self.T:
            return list(range(self.T, 0, -1))
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= self.T:
            raise ValueError(f"steps must be an integer in 1..{self.T} (T), got {steps!r}")
        if spacing not in SPACINGS:
            raise ValueError(f"unknown spacing {spacing!r}; valid values: {', '.join(SPACINGS)}")
        if steps == 1:
            return [self.T]
        if spacing == "uniform":
            grid = np.linspace(1, self.T, steps)
        else:
            grid = np.linspace(1, np.sqrt(self.T), steps) ** 2
        seq = np.unique(np.clip(np.round(grid).astype(int), 1, self.T))
        return [int(s) for s in seq[::-1]]

    def ddim_sample(self, denoiser, z_T, steps: int | None = 50, eta: float = 0.0, generator=None):
        return ddim_sample(self, denoiser, z_T, self.timesteps(steps), eta=eta, generator=generator)

    def ddpm_sample(self, denoiser, z_T, generator=None):
        return ddpm_sample(self, denoiser, z_T, self.timesteps(None), generator=generator)

    def ddim_invert(self, denoiser, z1, steps: int | None = 50):
        return ddim_invert(self, denoiser, z1, self.timesteps(steps))


def _check_sequence(diffusion: LatentDiffusion, timesteps: Sequence[int]) -> list[int]:
    ts = [int(t) for t in timesteps]
    if not ts or any(a <= b for a, b in zip(ts, ts[1:])) or ts[-1] < 1 or ts[0] > diffusion.T:
        raise ValueError(f"timesteps must be strictly descending within 1..{diffusion.T}, got {list(timesteps)}")
    return ts


def _step_tensor(t: int, z: torch.Tensor) -> torch.Tensor:
    return torch.full((z.shape[0],), t, dtype=torch.long, device=z.device)


@torch.no_grad()
def ddim_step(diffusion: LatentDiffusion, eps: torch.Tensor, z_t: torch.Tensor, t: int, s: int,
              eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One generalised DDIM update z_t -> z_s (s < t, s = 0 the clean end) given eps_theta(z_t, t).

    sigma = eta * sqrt((1 - abar_s) / (1 - abar_t)) * sqrt(1 - abar_t / abar_s); eta = 1 is DDPM's
    ancestral step with the posterior variance, eta = 0 is deterministic.
    """
    abar_t, abar_s = diffusion.abar(t), diffusion.abar(s)
    z1_hat = (z_t - math.sqrt(1 - abar_t) * eps) / math.sqrt(abar_t)
    sigma = eta * math.sqrt((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s))
    z_s = math.sqrt(abar_s) * z1_hat + math.sqrt(max(1 - abar_s - sigma**2, 0.0)) * eps
    if sigma > 0:
        z_s = z_s + sigma * noise
    return z_s


def step_noise(n: int, dim: int, timesteps: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
    """The fresh noise ``ddim_sample`` with eta > 0 draws along ``timesteps``, drawn ahead: [S x n x dim] (S =
    len(timesteps) - 1: the last step, to the clean end, adds none), on the CPU, in the order the sampler
    would draw it from the same ``generator`` (so passing it gives the same samples as drawing on the way)."""
    return torch.stack([torch.randn((n, dim), generator=generator) for _ in range(len(timesteps) - 1)]) \
        if len(timesteps) > 1 else torch.zeros(0, n, dim)


@torch.no_grad()
def ddim_sample(diffusion: LatentDiffusion, denoiser: nn.Module, z_T: torch.Tensor, timesteps: Sequence[int],
                eta: float = 0.0, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021) from ``z_T`` [N x D] along descending ``timesteps`` down to z1 [N x D].
    With eta > 0 each step but the last adds fresh noise: drawn from ``generator`` on the way, or taken
    from ``noise`` [S x N x D] (``step_noise``; one request's rows stay its own inside a shared batch)."""
    ts = _check_sequence(diffusion, timesteps)
    eta = check_eta(eta)
    if noise is not None and eta > 0 and tuple(noise.shape) != (len(ts) - 1, *z_T.shape):
        raise ValueError(f"noise must be [{len(ts) - 1} x {z_T.shape[0]} x {z_T.shape[1]}] (steps - 1 x N x D), "
                         f"got {tuple(noise.shape)}")
    z, z1_hat = z_T, None
    for i, (t, s) in enumerate(zip(ts, ts[1:] + [0])):
        step = _step_tensor(t, z)
        eps = prior_eps(denoiser, z, step, z_self=z1_hat)
        if self_conditioned(denoiser):  # the next step reads this step's estimate of z1
            z1_hat = diffusion.predict_start_from_noise(z, step, eps)
        fresh = None
        if eta > 0 and s > 0:
            fresh = (torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype) if noise is None
                     else noise[i].to(z.device, z.dtype))
        z = ddim_step(diffusion, eps, z, t, s, eta=eta, noise=fresh)
    return z


@torch.no_grad()
def ddpm_sample(diffusion: LatentDiffusion, denoiser: nn.Module, z_T: torch.Tensor,
                timesteps: Sequence[int] | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2, posterior variance) over all T steps by default."""
    ts = diffusion.timesteps(None) if timesteps is None else timesteps
    return ddim_sample(diffusion, denoiser, z_T, ts, eta=1.0, generator=generator)


@torch.no_grad()
def ddim_invert(diffusion: LatentDiffusion, denoiser: nn.Module, z1: torch.Tensor,
                timesteps: Sequence[int]) -> torch.Tensor:
    """Deterministic DDIM inversion z1 -> z_T [N x D]: ``ddim_sample(eta=0)`` run backwards along the same
    descending ``timesteps``; each step s -> t uses eps_theta(z_s, t) in place of eps_theta(z_t, t)."""
    ts = _check_sequence(diffusion, timesteps)[::-1]
    z = z1
    z1_hat = z1  # a self-conditioned prior reads the estimate of z1: here first z1 itself
    for s, t in zip([0] + ts[:-1], ts):
        eps = prior_eps(denoiser, z, _step_tensor(t, z), z_self=z1_hat)
        abar_s, abar_t = diffusion.abar(s), diffusion.abar(t)
        z1_hat = (z - math.sqrt(1 - abar_s) * eps) / math.sqrt(abar_s)
        z = math.sqrt(abar_t) * z1_hat + math.sqrt(1 - abar_t) * eps
    return z


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation between rows of ``a`` and ``b`` [N x D] (Shoemake 1985); linear if parallel."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    out = (torch.sin((1 - alpha) * omega) / so) * a + (torch.sin(alpha * omega) / so) * b
    return torch.where(so.abs() < 1e-6, (1 - alpha) * a + alpha * b, out)

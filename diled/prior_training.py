"""Training a prior on a finished model's latents: the encoder run once over the data, the prior's terms
of the DiLED loss (``LatentDiffusion.training_losses``: L_diff, and L_align at t == 1) on the cached
latents, with an exponential moving average of the prior's weights (as diffusion models sample from;
Ho et al. 2020, Song et al. 2021).

One step costs only the prior's forward and backward, no codec, so on a CPU it takes many more steps
over many more latents than the prior gets inside the joint loop in the same time.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable, Literal

import torch
from torch import nn

from diled.denoiser import prior_eps, self_conditioned
from diled.diffusion import check_eta, check_temperature


@torch.no_grad()
def encode_all(model, examples: list, batch_size: int = 200, log: Callable[[str], None] | None = None) -> torch.Tensor:
    """The encoder means mu(x0) [N x D] of ``examples`` (raw, as ``model.encode`` takes them), in batches;
    ``log`` hears the progress about every fifth of the way."""
    model.eval()
    out, n = [], len(examples)
    marks = {min(n, -(-n * k // 5)) for k in range(1, 6)}
    for i in range(0, n, batch_size):
        out.append(model.encode(examples[i:i + batch_size]).float().cpu())
        done = min(i + batch_size, n)
        if log is not None and any(i < m <= done for m in marks):
            log(f"encoded {done:,}/{n:,} examples")
    return torch.cat(out)


TSampling = Literal["uniform", "log_uniform"]
T_SAMPLINGS = ("uniform", "log_uniform")


def sample_steps(n: int, T: int, how: TSampling, generator: torch.Generator) -> torch.Tensor:
    """``n`` steps in 1..T [n]: uniform, or log-uniform (t = floor(T^u) for u ~ U[0, 1), clamped), which
    puts half the draws below sqrt(T): where a latent much smaller than the unit noise still shows
    through it (the text latent's per-dimension scale is about 0.1: under the linear schedule with
    T = 200 its signal-to-noise ratio falls below 1 at about t = 14)."""
    if how == "uniform":
        return torch.randint(1, T + 1, (n,), generator=generator)
    if how == "log_uniform":
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return torch.floor(T ** u).long().clamp(1, T)
    raise ValueError(f"unknown t sampling {how!r}; valid: {', '.join(T_SAMPLINGS)}")


def train_prior(model, prior: nn.Module, z0: torch.Tensor, *, steps: int | None = None, seconds: float | None = None,
                batch_size: int = 256, lr: float = 3e-4, ema: float = 0.999, warmup: int = 200, seed: int = 0,
                t_sampling: TSampling = "uniform", log: Callable[[str], None] | None = None,
                log_every: int = 500, labels: torch.Tensor | None = None,
                drop_prob: float = 0.1) -> tuple[nn.Module, dict]:
    """Train ``prior`` (any prior of ``diled.denoiser``) on encoder means ``z0`` [N x D], taken into ``model``'s
    ``prior_space`` (if it has one), with its diffusion (z1 = z0 + sqrt(beta_1) eps', t drawn by ``sample_steps``), AdamW with a linear warm-up
    then cosine decay to 10%, for ``steps`` steps or ``seconds`` of wall time (the one given; with both,
    whichever ends first). Returns the EMA copy of the prior (decay ``ema``; 0: the raw weights) and a
    summary dict. ``labels`` [N] (class indices; -1: unlabelled) train a prior built with classes, each
    label replaced by the null class with probability ``drop_prob`` (classifier-free guidance). A
    self-conditioned prior gets, for a random half of each batch, its own gradient-free estimate of z1 as
    ``z_self`` (zeros for the other half), as it will read the last step's estimate when sampling."""
    if t_sampling not in T_SAMPLINGS:
        raise ValueError(f"unknown t sampling {t_sampling!r}; valid: {', '.join(T_SAMPLINGS)}")
    if steps is None and seconds is None:
        raise ValueError("train_prior needs steps or seconds")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not 0 <= ema < 1:
        raise ValueError(f"ema must be in [0, 1), got {ema!r}")
    if labels is not None:
        if not getattr(prior, "classes", None):
            raise ValueError(f"labels were given, but the {type(prior).__name__} was built without classes")
        if labels.shape != (len(z0),):
            raise ValueError(f"labels must be [N] = [{len(z0)}] class indices, got shape {tuple(labels.shape)}")
        if not 0 <= drop_prob <= 1:
            raise ValueError(f"drop_prob must be in [0, 1], got {drop_prob!r}")
        labels = labels.long()
    diffusion = model.diffusion
    space = getattr(model, "prior_space", None)
    z0 = z0 if space is None else space.to_prior(z0)
    gen = torch.Generator().manual_seed(seed)
    prior = prior.float().train()
    averaged = copy.deepcopy(prior).eval().requires_grad_(False)
    opt = torch.optim.AdamW(prior.parameters(), lr=lr, weight_decay=0.0)
    horizon = steps or 10**9
    start, step, losses = time.perf_counter(), 0, []
    while step < horizon and (seconds is None or time.perf_counter() - start < seconds):
        idx = torch.randint(len(z0), (batch_size,), generator=gen)
        z0_b = z0[idx]
        z1 = z0_b + diffusion.encoder_noise_std * torch.randn(z0_b.shape, generator=gen)
        t = sample_steps(batch_size, diffusion.T, t_sampling, gen)
        eps = torch.randn(z1.shape, generator=gen)
        cond = None
        if labels is not None:
            cond = torch.where(torch.rand(batch_size, generator=gen) < drop_prob, -1, labels[idx])
        z_self = None
        if self_conditioned(prior):  # half the batch sees the prior's own first estimate of z1, half zeros
            with torch.no_grad():
                z_t = diffusion.q_sample(z1, t, eps)
                first = diffusion.predict_start_from_noise(z_t, t, prior_eps(prior, z_t, t, cond))
                z_self = first * (torch.rand(batch_size, 1, generator=gen) < 0.5).to(first.dtype)
        loss = diffusion.training_losses(prior, z0_b, z1, t, eps=eps, cond=cond, z_self=z_self)["diff"].mean()
        # a cosine over the step budget; with a time budget only, the warm-up alone
        frac = step / horizon if steps else 0.0
        scale = min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            d = ema if step >= warmup else 0.0  # copy the weights during warm-up
            for a, p in zip(averaged.parameters(), prior.parameters()):
                a.lerp_(p, 1 - d)
        losses.append(float(loss.detach()))
        step += 1
        if log is not None and step % log_every == 0:
            log(f"prior step {step}: loss {sum(losses[-log_every:]) / log_every:.4f} "
                f"({time.perf_counter() - start:.0f} s)")
    prior.eval()
    summary = {"steps": step, "seconds": time.perf_counter() - start, "batch_size": batch_size, "lr": lr,
               "ema": ema, "t_sampling": t_sampling, "final_loss": sum(losses[-100:]) / max(1, len(losses[-100:])),
               "latents": len(z0), **({"classes": list(prior.classes), "drop_prob": drop_prob} if labels is not None else {})}
    return (averaged if ema > 0 else prior), summary


def choose_temperature(model, score: Callable[[torch.Tensor], float], candidates, n: int = 500, seed: int = 0,
                       repeats: int = 1, log: Callable[[str], None] | None = None, etas=None) -> dict:
    """The sampling temperature (the scale of z_T, ``DiLED.prior_temperature``) among ``candidates`` whose ``n``
    samples ``score`` (latents [n x D] -> a number, higher is better; e.g. MAUVE of their decodings against
    held-out data) rates best, averaged over ``repeats`` draws of the noise (seeds ``seed``, ``seed + 1``, ...).
    With ``etas``, every pair of a temperature and a DDIM eta (``DiLED.sampling_eta``) is a candidate; without,
    the model's eta stays. Within a draw every candidate scales the same noise (and, with eta > 0, adds the
    same fresh noise per step), so they differ only in their settings. Sets the model's temperature (and
    eta); returns ``{"temperature", "eta", "scores": {key: mean score}, "per_draw", "n"}``, keyed by the
    temperature (``"0.9"``), or with ``etas`` by both (``"0.9, eta 1.0"``); a single candidate is set without
    scoring (its score None)."""
    temps = [check_temperature(t) for t in candidates]
    if not temps:
        raise ValueError("choose_temperature needs at least one candidate temperature")
    if etas is not None and not etas:
        raise ValueError("etas, when given, needs at least one candidate eta")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    pairs = [(t, e) for e in ([None] if etas is None else [check_eta(e) for e in etas]) for t in temps]

    def key(t: float, e: float | None) -> str:
        return str(t) if e is None else f"{t}, eta {e}"

    per_draw: dict[str, list[float]] = {key(t, e): [] for t, e in pairs}
    for r in range(repeats if len(pairs) > 1 else 0):  # a single candidate is set, not scored
        draws = torch.Generator().manual_seed(seed + r)
        base = model.noise(n, draws, prior_temperature=1.0)
        after_base = draws.get_state()  # the steps' fresh noise (eta > 0) follows z_T's, as in sample_latents
        for t, e in pairs:
            z = model.sample_latents(n, z_T=base * t, eta=e, generator=torch.Generator().set_state(after_base))
            per_draw[key(t, e)].append(float(score(z)))
            if log is not None:
                log(f"temperature {key(t, e)}, draw {r + 1}/{repeats}: sample quality {per_draw[key(t, e)][-1]:.4f}")
    scores = {k: sum(v) / len(v) if v else None for k, v in per_draw.items()}
    best_t, best_e = max(pairs, key=lambda p: scores[key(*p)]) if len(pairs) > 1 else pairs[0]
    model.prior_temperature = best_t
    if best_e is not None:
        model.sampling_eta = best_e
    if log is not None:
        log(f"temperature {key(best_t, best_e)} chosen ({len(pairs)} tried, {repeats} x {n} samples each)"
            if len(pairs) > 1 else f"temperature {key(best_t, best_e)} set (the only candidate: not scored)")
    return {"temperature": best_t, "eta": model.sampling_eta, "scores": scores, "per_draw": per_draw, "n": n}

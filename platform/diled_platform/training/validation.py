"""Validation during training: the loss terms on the validation split with fixed draws, averaged over
all ranks, the latent scale, and how well the prior's samples match the validation latents
(``val_prior_fd``, the cheap generation metric a multi-objective sweep compares at every rung)."""

from __future__ import annotations

import torch

ACTIVE_DIM_THRESHOLD = 0.01  # Var_x[mu_d] above this counts as an active unit (Burda et al. 2016)


def active_dim_threshold(module) -> float:
    """Var_x[mu_d] above which latent dimension d counts as active. DiLED's objectives encode with a fixed
    noise, z1 = mu + sqrt(beta_1) eps: a dimension carries its input when its signal's variance exceeds
    that noise's, beta_1 (0.008 for the constant schedule, about Burda et al.'s 0.01; 1e-4 for the linear
    one, whose latents are correspondingly smaller). The VAE's noise is its own posterior's: Burda's 0.01."""
    if getattr(module, "objective", "diled") == "vae":
        return ACTIVE_DIM_THRESHOLD
    return float(module.diffusion.encoder_noise_std) ** 2


def all_reduce(x: torch.Tensor, op: str = "mean") -> torch.Tensor:
    """``x`` reduced over the ranks ("mean", "sum" or "min"); ``x`` itself outside a process group."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM)
    return x / dist.get_world_size() if op == "mean" else x


_STANDARD_OUTPUTS = {"loss", "rec", "diff", "nelbo", "t", "z0", "mu_abs"}


@torch.no_grad()
def evaluate(engine, batches: list[dict], seed: int) -> dict[str, float]:
    """Validation loss terms with fixed t and noise draws (a seeded RNG), averaged over all ranks: the
    training loss (depends on w), its reconstruction and prior terms, the w-free negative ELBO estimate
    ``val_nelbo`` (what sweeps compare), the latent scale (mean |mu|, the active latent dimensions) and
    ``val_prior_fd`` (``prior_fit``; not for the autoencoder objective, whose prior is not trained)."""
    module = engine.module
    module.eval()
    sums = torch.zeros(5, dtype=torch.float64)
    aux: dict[str, float] = {}
    z0s = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for batch in batches:
            out = module(batch)
            n = out["t"].shape[0]
            nelbo = out["nelbo"]  # the negative ELBO at the drawn t, whatever w (DiLED.forward)
            sums += torch.tensor([out["loss"].item() * n, out["rec"].sum().item(), out["diff"].sum().item(), n,
                                  nelbo.sum().item()], dtype=torch.float64)
            for name in [k for k in out if k not in _STANDARD_OUTPUTS]:  # codec terms, e.g. fitness_mse
                aux[name] = aux.get(name, 0.0) + out[name].float().sum().item()
            z0s.append(out["z0"].float().cpu())
    module.train()
    sums = all_reduce(sums, op="sum")
    metrics = {"val_loss": float(sums[0] / sums[3]), "val_rec": float(sums[1] / sums[3]),
               "val_diff": float(sums[2] / sums[3]), "val_nelbo": float(sums[4] / sums[3])}
    if aux:  # every rank evaluates the same model, so every rank has the same names
        names = sorted(aux)
        totals = all_reduce(torch.tensor([aux[k] for k in names], dtype=torch.float64), op="sum")
        metrics.update({f"val_{k}": float(v / sums[3]) for k, v in zip(names, totals)})
    if z0s:
        z0 = torch.cat(z0s).double()
        d = z0.shape[1]
        stats = torch.cat([z0.sum(0), z0.abs().sum(0), (z0.T @ z0).flatten()])
        stats = all_reduce(stats, op="sum")
        count = sums[3]
        mean = stats[:d] / count
        cov = stats[2 * d:].reshape(d, d) / count - torch.outer(mean, mean)
        metrics["mu_abs"] = float(stats[d:2 * d].sum() / (count * d))
        metrics["active_dims"] = int((cov.diagonal() > active_dim_threshold(module)).sum())
        if getattr(module, "objective", "diled") != "autoencoder":  # the autoencoder's prior is not trained
            # in eval mode and on a forked RNG: measuring must not change the training that follows
            module.eval()
            with torch.random.fork_rng(devices=[]):
                metrics["val_prior_fd"] = prior_fit(module, mean, cov, seed, count=int(count))
            module.train()
    return metrics


PRIOR_FIT_SAMPLES, PRIOR_FIT_STEPS = 512, 10


@torch.no_grad()
def prior_fit(module, mean: torch.Tensor, cov: torch.Tensor, seed: int, count: int | None = None) -> float:
    """How well the prior's samples match the validation latents: the Frechet distance between the
    Gaussian moments of ``PRIOR_FIT_SAMPLES`` DDIM-``PRIOR_FIT_STEPS`` prior samples and of the
    validation z1 = mu(x0) + sqrt(beta_1) eps' (``mean``, ``cov`` of mu, plus the encoding noise), in the
    coordinates that whiten the latter, per dimension (0: the same mean and covariance; a prior that
    ignores the data scores about 1 per dimension or more). Whitening makes it independent of the latent
    scale, so a run cannot win it by shrinking the latents. Cheap enough for every validation: 10 calls
    of the prior network. Every rank draws the same samples (under ZeRO-3 all ranks must run the prior).

    From fewer than 2 D validation latents (``count``) a D x D covariance is not estimated: it has no
    variance but the encoding noise's in the directions the few latents do not span, and whitening by it
    called every prior a misfit (the 512-d text latent from 128 validation latents scored 107 per
    dimension). Then the distance is the diagonal one, per dimension from its mean and variance alone
    (correlations not compared), and so are the prior samples' moments."""
    d = mean.shape[0]
    var_noise = module.diffusion.encoder_noise_std ** 2
    gen = torch.Generator().manual_seed(seed)
    z = module.sample_latents(PRIOR_FIT_SAMPLES, steps=PRIOR_FIT_STEPS, generator=gen).double().cpu()
    if count is not None and count < 2 * d:
        std_v = (cov.diagonal() + var_noise).clamp(min=1e-12).sqrt()
        s = (z - mean) / std_v
        fd = s.mean(0).pow(2) + (s.std(0) - 1).pow(2)    # the 1-d Frechet distance of each dimension
        return float(fd.mean())
    cov_v = cov + var_noise * torch.eye(d, dtype=cov.dtype)
    evals, evecs = torch.linalg.eigh(cov_v)
    whiten = evecs @ torch.diag(evals.clamp(min=1e-12).rsqrt()) @ evecs.T
    s = (z - mean) @ whiten
    mu_s = s.mean(0)
    cov_s = torch.cov(s.T)
    ev = torch.linalg.eigvalsh(cov_s).clamp(min=0)
    fd = mu_s.pow(2).sum() + ev.sum() + d - 2 * ev.sqrt().sum()
    return float(fd / d)

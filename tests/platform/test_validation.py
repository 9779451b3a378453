"""The validation metrics: which latent dimensions count as active, and how the prior's fit is measured."""

from types import SimpleNamespace

import torch

from diled import DiLED, LatentDiffusion, MLPSkipNet, VectorCodec
from diled.data.toy import gaussian_ring
from diled_platform.training.validation import ACTIVE_DIM_THRESHOLD, active_dim_threshold, evaluate, prior_fit


def model_with_latents(schedule: str, scales: list[float]) -> DiLED:
    """A tiny DiLED whose encoder mean is the first data coordinate times ``scales`` per dimension."""
    torch.manual_seed(0)
    model = DiLED(VectorCodec(data_dim=2, latent_dim=len(scales), hidden=8, depth=1),
                  MLPSkipNet(len(scales), hidden=8, depth=1, time_dim=8), LatentDiffusion(schedule, 200))
    model.codec.encode = lambda batch: batch["x"][:, :1] * torch.tensor(scales)
    return model


def test_active_dims_count_the_signal_above_the_encoding_noise():
    batches = [{"x": gaussian_ring(256, seed=s)} for s in range(2)]
    var_x0 = torch.cat([b["x"][:, 0] for b in batches]).var().item()
    scales = [1.0, (0.001 / var_x0) ** 0.5, 0.0]  # Var[mu_d]: Var[x0], 0.001, 0
    # the constant schedule encodes with variance beta_1 = 0.008: only the first dimension clears it
    constant = model_with_latents("constant", scales)
    assert abs(active_dim_threshold(constant) - 0.008) < 1e-12
    assert evaluate(SimpleNamespace(module=constant), batches, seed=0)["active_dims"] == 1
    # the linear schedule's beta_1 is 1e-4: a dimension with a tenth of the constant one's noise is active
    linear = model_with_latents("linear", scales)
    assert abs(active_dim_threshold(linear) - 1e-4) < 1e-12
    assert evaluate(SimpleNamespace(module=linear), batches, seed=0)["active_dims"] == 2
    # the VAE's posterior brings its own noise: Burda et al.'s fixed threshold
    assert active_dim_threshold(SimpleNamespace(objective="vae")) == ACTIVE_DIM_THRESHOLD


class GaussianPrior:
    """A stand-in for a trained model whose prior samples N(mean, cov) exactly (``prior_fit``'s view)."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor, noise_std: float):
        self.mean, self.chol = mean, torch.linalg.cholesky(cov)
        self.diffusion = SimpleNamespace(encoder_noise_std=noise_std)

    def sample_latents(self, n, steps=None, generator=None):
        eps = torch.randn(n, self.mean.shape[0], generator=generator, dtype=torch.float64)
        return self.mean + eps @ self.chol.T


def test_prior_fit_with_fewer_validation_latents_than_dimensions():
    # 256-d latents that vary in every direction (std 0.1 to 0.3), encoded with noise 0.01, and only 96
    # validation latents: their covariance has no variance in 160 directions but the noise's
    d, n, noise = 256, 96, 0.01
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    true_cov = basis @ torch.diag(torch.linspace(0.1, 0.3, d, dtype=torch.float64) ** 2) @ basis.T
    truth = GaussianPrior(torch.zeros(d, dtype=torch.float64), true_cov + noise ** 2 * torch.eye(d, dtype=torch.float64), noise)
    mu = truth.sample_latents(n, generator=g)
    mean, cov = mu.mean(0), torch.cov(mu.T)
    # the prior that samples the data's own distribution fits; one at twice the scale does not
    fit = prior_fit(truth, mean, cov, seed=0, count=n)
    wide = GaussianPrior(torch.zeros(d, dtype=torch.float64), 4 * true_cov, noise)
    assert fit < 0.5 < 1.0 < prior_fit(wide, mean, cov, seed=0, count=n), fit
    # whitening by the full 256-d estimate (no count) calls even the true prior a misfit by far
    assert prior_fit(truth, mean, cov, seed=0) > 20 * max(fit, 0.05)
    # with latents enough for the covariance (2 D or more), the full whitened distance, as before
    many = truth.sample_latents(4 * d, generator=g)
    full = prior_fit(truth, many.mean(0), torch.cov(many.T), seed=0, count=4 * d)
    assert full == prior_fit(truth, many.mean(0), torch.cov(many.T), seed=0) and full < 1.0

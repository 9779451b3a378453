"""The maths of LatentDiffusion: forward marginals, ELBO weights, the objective's terms, samplers."""

import math

import numpy as np
import pytest
import torch

from diled import LatentDiffusion, MLPSkipNet
from diled.diffusion import ddim_invert, ddim_sample, ddim_step, ddpm_sample
from diled.schedules import SCHEDULE_NAMES, get_betas


class GaussianOracle(torch.nn.Module):
    """The exact eps for z1 ~ N(0, s^2 I): E[eps | z_t] = sqrt(1 - abar_t) z_t / (abar_t s^2 + 1 - abar_t)."""

    def __init__(self, diffusion, s):
        super().__init__()
        self.diffusion, self.s = diffusion, s

    def forward(self, z_t, t):
        ab = torch.as_tensor(np.cumprod(1 - get_betas(self.diffusion.schedule, self.diffusion.T)))[t - 1, None]
        return ((1 - ab).sqrt() * z_t.double() / (ab * self.s**2 + 1 - ab)).to(z_t.dtype)


@pytest.mark.parametrize("schedule", SCHEDULE_NAMES)
def test_q_sample_matches_closed_form_mean_and_variance(schedule):
    d = LatentDiffusion(schedule, 1000)
    abar = np.cumprod(1 - get_betas(schedule, 1000))
    z1 = torch.tensor([[1.5, -0.7, 0.0]])
    n = 200_000
    torch.manual_seed(0)
    for t in (1, 10, 500, 1000):
        z_t = d.q_sample(z1.expand(n, 3), torch.full((n,), t))
        mean, var = z_t.double().mean(0), z_t.double().var(0)
        # standard errors: sqrt(var / n) <= 0.0023 for the mean, var * sqrt(2 / n) for the variance
        torch.testing.assert_close(mean, math.sqrt(abar[t - 1]) * z1[0].double(), atol=0.01, rtol=0)
        torch.testing.assert_close(var, torch.full((3,), 1 - abar[t - 1], dtype=torch.float64),
                                   rtol=0.02, atol=1e-6)


@pytest.mark.parametrize("schedule", SCHEDULE_NAMES)
def test_lambda_t_is_the_elbo_weight(schedule):
    """lambda_t ||eps - eps_hat||^2 (summed over d) is KL(q(z_{t-1} | z_t, z1) || p(z_{t-1} | z_t)) up to
    theta-free terms, for p with mean = the posterior mean at z1_hat and variance beta_t (DDPM eq. 8-12)."""
    T = 100
    d = LatentDiffusion(schedule, T)
    betas = get_betas(schedule, T)
    alphas = 1 - betas
    abar = np.cumprod(alphas)
    np.testing.assert_allclose(d.lambdas.double().numpy(), betas / (2 * alphas * (1 - abar)), rtol=1e-6)
    np.testing.assert_allclose(d.rec_weights.double().numpy(), 2 * alphas * (1 - abar) / (T * betas), rtol=1e-6)
    g = torch.Generator().manual_seed(0)
    z1, eps, eps_hat = (torch.randn(8, 5, generator=g, dtype=torch.float64) for _ in range(3))
    for step in (2, 3, 50, T):
        t = torch.full((8,), step)
        ab = float(abar[step - 1])
        z_t = math.sqrt(ab) * z1 + math.sqrt(1 - ab) * eps
        z1_hat = (z_t - math.sqrt(1 - ab) * eps_hat) / math.sqrt(ab)
        m_q, _ = d.q_posterior_mean_variance(z1, z_t, t)
        m_p, _ = d.q_posterior_mean_variance(z1_hat, z_t, t)
        kl_mean_term = (m_q - m_p).pow(2).sum(-1) / (2 * betas[step - 1])
        lam = betas[step - 1] / (2 * alphas[step - 1] * (1 - ab))
        # the buffers are float32: agreement to 5e-4 relative
        torch.testing.assert_close(kl_mean_term, lam * (eps - eps_hat).pow(2).sum(-1), rtol=5e-4, atol=1e-9)
    # t == 1: abar_1 = alpha_1, 1 - abar_1 = beta_1, so lambda_1 = 1 / (2 alpha_1)
    assert d.lambdas[0].item() == pytest.approx(1 / (2 * alphas[0]), rel=1e-6)


def test_align_term_is_the_eps_loss_when_the_target_is_z1():
    """(alpha_1 / beta_1) ||z1 - z1_hat||^2 == ||eps - eps_theta||^2: L_align lives on L_diff's scale."""
    torch.manual_seed(0)
    d = LatentDiffusion("constant", 1000)
    net = MLPSkipNet(4, hidden=16, depth=2, time_dim=8)
    z1, eps = torch.randn(6, 4), torch.randn(6, 4)
    t = torch.ones(6, dtype=torch.long)
    out = d.training_losses(net, z1, z1, t, eps=eps)
    torch.testing.assert_close(out["diff"], (eps - out["eps_pred"]).pow(2).mean(-1), rtol=1e-4, atol=1e-5)
    # and with a different target the term is exactly docs/design.md's formula
    z0 = torch.randn(6, 4)
    a1, b1 = 1 - 0.008, 0.008
    z_t = math.sqrt(a1) * z1 + math.sqrt(b1) * eps
    expected = (a1 / b1) * (z0 - (z_t - math.sqrt(b1) * net(z_t, t)) / math.sqrt(a1)).pow(2).mean(-1)
    torch.testing.assert_close(d.training_losses(net, z0, z1, t, eps=eps)["diff"], expected, rtol=1e-4, atol=1e-4)


def test_diff_term_for_t_at_least_two():
    torch.manual_seed(0)
    d = LatentDiffusion("linear", 50)
    net = MLPSkipNet(3, hidden=16, depth=2, time_dim=8)
    z0, z1, eps = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    t = torch.tensor([2, 7, 20, 49, 50])
    out = d.training_losses(net, z0, z1, t, eps=eps)
    z_t = d.q_sample(z1, t, eps)
    torch.testing.assert_close(out["diff"], (eps - net(z_t, t)).pow(2).mean(-1))


def test_t_out_of_range_is_refused():
    d = LatentDiffusion("constant", 10)
    net = MLPSkipNet(2, hidden=8, depth=1, time_dim=4)
    for bad in (torch.tensor([0]), torch.tensor([11])):
        with pytest.raises(ValueError, match=r"1\.\.10"):
            d.training_losses(net, torch.zeros(1, 2), torch.zeros(1, 2), bad)


def test_ddim_eta0_is_deterministic_and_uses_no_randomness():
    torch.manual_seed(0)
    d = LatentDiffusion("constant", 1000)
    net = MLPSkipNet(4, hidden=16, depth=2, time_dim=8)
    z_T = torch.randn(10, 4)
    torch.manual_seed(1)
    a = ddim_sample(d, net, z_T, d.timesteps(20))
    torch.manual_seed(2)
    b = ddim_sample(d, net, z_T, d.timesteps(20))
    assert torch.equal(a, b)


def test_eta1_step_is_ddpm_posterior():
    """The generalised DDIM step with eta = 1 and s = t - 1 has DDPM's posterior mean and variance."""
    d = LatentDiffusion("linear", 100)
    g = torch.Generator().manual_seed(0)
    z_t, eps, noise = (torch.randn(7, 3, generator=g, dtype=torch.float64) for _ in range(3))
    for t in (2, 10, 100):
        tt = torch.full((7,), t)
        z1_hat = d.predict_start_from_noise(z_t, tt, eps)
        mean, var = d.q_posterior_mean_variance(z1_hat, z_t, tt)
        got = ddim_step(d, eps, z_t, t, t - 1, eta=1.0, noise=noise)
        # the posterior uses the float32 buffers, ddim_step float64 scalars: agreement to ~1e-4
        torch.testing.assert_close(got, mean + var.sqrt() * noise, rtol=5e-4, atol=5e-4)
    # and the last step (t = 1 -> clean end) returns the prediction z1_hat, adding no noise
    tt = torch.ones(7, dtype=torch.long)
    torch.testing.assert_close(ddim_step(d, eps, z_t, 1, 0, eta=1.0, noise=noise),
                               d.predict_start_from_noise(z_t, tt, eps), rtol=5e-4, atol=5e-4)


@pytest.mark.parametrize("schedule", SCHEDULE_NAMES)
def test_inversion_then_sampling_returns_z1(schedule):
    """With the exact eps of Gaussian data, DDIM inversion (100 quadratic steps) followed by DDIM sampling on
    the same steps returns z1 to within 0.1 in every coordinate (data std 0.5; DDIM is first order: the
    error halves when the steps double), and 0.015 in mean absolute error."""
    d = LatentDiffusion(schedule, 1000)
    net = GaussianOracle(d, 0.5)
    z1 = 0.5 * torch.randn(2048, 4, generator=torch.Generator().manual_seed(1))
    ts = d.timesteps(100)
    z_T = ddim_invert(d, net, z1, ts)
    back = ddim_sample(d, net, z_T, ts)
    err = (back - z1).abs()
    assert err.max() < 0.1 and err.mean() < 0.015, (err.max().item(), err.mean().item())
    # ... and the codes look like the prior's N(0, I)
    assert abs(z_T.std().item() - 1) < 0.05
    err200 = (ddim_sample(d, net, ddim_invert(d, net, z1, d.timesteps(200)), d.timesteps(200)) - z1).abs().max()
    assert err200 < 0.6 * err.max()


def test_quadratic_spacing_beats_uniform_for_the_constant_schedule():
    d = LatentDiffusion("constant", 1000)
    net = GaussianOracle(d, 0.5)
    z1 = 0.5 * torch.randn(2048, 4, generator=torch.Generator().manual_seed(1))
    errs = {}
    for spacing in ("quadratic", "uniform"):
        ts = d.timesteps(50, spacing)
        errs[spacing] = (ddim_sample(d, net, ddim_invert(d, net, z1, ts), ts) - z1).abs().mean().item()
    assert errs["quadratic"] < 0.6 * errs["uniform"], errs


def test_samplers_with_the_exact_eps_reach_the_data_distribution():
    """From z_T ~ N(0, I) both samplers end near N(0, 0.5^2): std within 5% for DDPM over all T steps and
    DDIM over 100 steps (DDIM's discretisation shrinks the std slightly; measured 0.48)."""
    d = LatentDiffusion("constant", 1000)
    net = GaussianOracle(d, 0.5)
    z_T = torch.randn(4096, 2, generator=torch.Generator().manual_seed(3))
    ddim = ddim_sample(d, net, z_T, d.timesteps(100))
    ddpm = ddpm_sample(d, net, z_T, generator=torch.Generator().manual_seed(4))
    assert abs(ddim.std().item() - 0.5) < 0.025
    assert abs(ddpm.std().item() - 0.5) < 0.025
    assert ddim.mean().abs() < 0.03 and ddpm.mean().abs() < 0.03


def _reference_loop(d, net, z_T, ts, eta, noises):
    """The generalised DDIM loop written again from the formulas, in float64 numpy."""
    abar = np.concatenate([[1.0], np.cumprod(1 - get_betas(d.schedule, d.T))])
    z = z_T.double().numpy()
    for i, (t, s) in enumerate(zip(ts, ts[1:] + [0])):
        eps = net(torch.tensor(z, dtype=torch.float32), torch.full((z.shape[0],), t)).detach().double().numpy()
        z1_hat = (z - np.sqrt(1 - abar[t]) * eps) / np.sqrt(abar[t])
        sigma = eta * np.sqrt((1 - abar[s]) / (1 - abar[t]) * (1 - abar[t] / abar[s]))
        z = np.sqrt(abar[s]) * z1_hat + np.sqrt(1 - abar[s] - sigma**2) * eps + sigma * noises[i]
    return z


def test_full_loop_golden_numbers():
    """A seeded full sampling loop matches a float64 re-implementation and numbers recorded when the
    sampler was written (guards against silent changes of the sampler or the schedules)."""
    torch.manual_seed(0)
    net = MLPSkipNet(3, hidden=16, depth=2, time_dim=8)
    d = LatentDiffusion("constant", 50)
    z_T = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))

    ts = d.timesteps(10)
    ddim = ddim_sample(d, net, z_T, ts)
    np.testing.assert_allclose(ddim.double().numpy(), _reference_loop(d, net, z_T, ts, 0.0, [0] * len(ts)),
                               rtol=1e-4, atol=1e-4)

    ts = d.timesteps(None)
    ddpm = ddpm_sample(d, net, z_T, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    noises = [torch.randn(4, 3, generator=g).double().numpy() for _ in ts[:-1]] + [0]
    np.testing.assert_allclose(ddpm.double().numpy(), _reference_loop(d, net, z_T, ts, 1.0, noises),
                               rtol=1e-4, atol=1e-4)

    assert ddim.sum().item() == pytest.approx(GOLDEN_DDIM_SUM, abs=1e-4)
    assert ddim.abs().sum().item() == pytest.approx(GOLDEN_DDIM_ABS_SUM, abs=1e-4)
    assert ddpm.sum().item() == pytest.approx(GOLDEN_DDPM_SUM, abs=1e-4)
    assert ddpm.abs().sum().item() == pytest.approx(GOLDEN_DDPM_ABS_SUM, abs=1e-4)


# Recorded with torch 2.13.0 (CPU) once the loop above agreed with the float64 reference.
GOLDEN_DDIM_SUM = -9.21762752532959
GOLDEN_DDIM_ABS_SUM = 13.364336967468262
GOLDEN_DDPM_SUM = -13.829741477966309
GOLDEN_DDPM_ABS_SUM = 17.968732833862305


def test_timesteps():
    d = LatentDiffusion("constant", 1000)
    assert d.timesteps(None) == list(range(1000, 0, -1))
    for n in (10, 20, 50):
        ts = d.timesteps(n)
        assert len(ts) == n and ts[0] == 1000 and ts[-1] == 1 and ts == sorted(ts, reverse=True)
    with pytest.raises(ValueError, match="1001"):
        d.timesteps(1001)
    with pytest.raises(ValueError, match="'cubic'"):
        d.timesteps(10, "cubic")
    with pytest.raises(ValueError, match="descending"):
        ddim_sample(d, None, torch.zeros(1, 2), [1, 5])


def test_schedule_buffers_stay_float32_under_bfloat16():
    d = LatentDiffusion("constant", 1000).to(torch.bfloat16)
    assert d.alphas_cumprod.dtype == torch.float32
    assert d.alphas_cumprod[-1].item() == pytest.approx(0.992**1000, rel=1e-5)
    assert not dict(d.state_dict())  # no parameters, nothing persistent


def test_schedule_is_float32_even_where_torch_tensor_makes_bf16(monkeypatch):
    # DeepSpeed's zero.Init (ZeRO-3 under bf16) wraps torch.tensor so that floating results become bf16
    made = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: made(*a, **k).to(torch.bfloat16))
    d = LatentDiffusion("constant", 1000)
    assert d.sqrt_one_minus_alphas_cumprod.dtype == torch.float32
    assert d.sqrt_one_minus_alphas_cumprod[0].item() == pytest.approx(math.sqrt(0.008), rel=1e-6)


def test_a_bf16_prior_trains_against_the_float32_schedule():
    torch.manual_seed(0)
    d = LatentDiffusion("constant", 1000)
    net = MLPSkipNet(latent_dim=4, hidden=16, depth=2, time_dim=8).to(torch.bfloat16)
    z1 = torch.randn(6, 4, dtype=torch.bfloat16)
    out = d.training_losses(net, z1, z1, torch.tensor([1, 2, 10, 100, 500, 1000]))
    assert out["eps_pred"].dtype == torch.bfloat16 and torch.isfinite(out["diff"]).all()
    out["diff"].mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.bfloat16 for p in net.parameters())

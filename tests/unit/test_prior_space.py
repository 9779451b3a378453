"""The prior's coordinates (``diled.prior_space``): latents standardised for the prior, mapped at the model's
boundary, so that sampling, inversion, editing and the prior's training terms all meet the prior where it works."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from diled import DiLED, LatentDiffusion, MLPSkipNet, VectorCodec
from diled.diffusion import ddim_invert, ddim_sample
from diled.prior_space import PriorSpace
from diled.schedules import get_betas


def test_fit_centres_and_scales_to_the_spread_and_maps_back_exactly():
    g = torch.Generator().manual_seed(0)
    z = 3.0 + 0.1 * torch.randn(4000, 6, generator=g)
    space = PriorSpace.fit(z, spread=0.5)
    u = space.to_prior(z)
    assert u.mean(0).abs().max() < 1e-5 and float(u.std()) == pytest.approx(0.5, rel=1e-4)
    torch.testing.assert_close(space.from_prior(u), z)
    identity = PriorSpace()
    assert identity.dim is None and identity.get_config() == {} and identity.to_prior(z) is z


@pytest.mark.parametrize("make, match", [
    (lambda: PriorSpace(torch.zeros(2, 3), 1.0), r"center must be a finite vector \[D\], got shape \(2, 3\)"),
    (lambda: PriorSpace([0.0, float("nan")], 1.0), "center must be a finite vector"),
    (lambda: PriorSpace([0.0, 1.0], 0.0), "scale must be a finite number > 0, got 0.0"),
    (lambda: PriorSpace.fit(torch.zeros(5, 2), spread=-1), "spread must be a finite number > 0, got -1"),
    (lambda: PriorSpace.fit(torch.zeros(1, 2)), r"N >= 2, got shape \(1, 2\)"),
    (lambda: PriorSpace.from_config({"center": [0.0], "scale": 1.0, "shift": 2}), "exactly the keys center and scale"),
    (lambda: DiLED(VectorCodec(3, 3, hidden=8, depth=1), MLPSkipNet(3, hidden=16, depth=2, time_dim=8),
                   LatentDiffusion("linear", 10), prior_space=PriorSpace([0.0, 1.0], 1.0)), "prior_space has 2 numbers, the latent 3"),
])
def test_bad_spaces_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


class UnitGaussianEps(nn.Module):
    """The exact noise prediction for u ~ N(0, I) under ``diffusion``: u_t ~ N(0, I), E[eps | u_t] = sqrt(1 - abar_t) u_t."""

    def __init__(self, dim: int, diffusion: LatentDiffusion):
        super().__init__()
        self.latent_dim = dim
        self.abar = torch.as_tensor(np.cumprod(1 - get_betas(diffusion.schedule, diffusion.T)), dtype=torch.float32)

    def forward(self, z_t, t):
        return (1 - self.abar[t - 1, None]).sqrt() * z_t


def model_with_space(center, scale, schedule="linear_wide"):
    torch.manual_seed(0)
    diffusion = LatentDiffusion(schedule, 200)
    return DiLED(VectorCodec(len(center), len(center), hidden=8, depth=1), UnitGaussianEps(len(center), diffusion),
                 diffusion, w=1.0, prior_space=PriorSpace(center, scale))


def test_samples_come_back_in_the_latents_coordinates():
    """A prior that is exact for N(0, I) in its coordinates gives latents centred on the space's center with
    its scale as their spread: the model maps the prior's samples back (without the map: mean 0, spread 1)."""
    center = torch.tensor([2.0, -1.0, 0.5])
    model = model_with_space(center, 0.1)
    z = model.sample_latents(4000, steps=50, eta=1.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), center, atol=0.01, rtol=0)
    torch.testing.assert_close(z.std(0), torch.full((3,), 0.1), atol=0.01, rtol=0)


def test_inversion_editing_and_interpolation_run_in_the_prior_coordinates():
    center = torch.tensor([2.0, -1.0, 0.5])
    model = model_with_space(center, 0.1).eval()
    x = [[2.05, -1.1, 0.45], [1.9, -0.95, 0.6]]
    z0 = model.encode(x)
    ts = model._steps(20)
    codes = model.invert(x, steps=20)
    torch.testing.assert_close(codes, ddim_invert(model.diffusion, model.denoiser, model.prior_space.to_prior(z0), ts))
    # the codes are sampled back in the prior's coordinates and mapped back into latents
    back = model.prior_space.from_prior(ddim_sample(model.diffusion, model.denoiser, codes, ts))
    torch.testing.assert_close(model.reconstruct_latents(x, via="inversion", steps=20), back)
    torch.testing.assert_close(model.interpolate_latents(x[0], x[1], num=3, steps=20)[[0, -1]], back)
    assert (back - z0).abs().max() < 0.05  # near the inputs (DDIM's round trip at 20 steps), not near 0
    edited = model.edit_latents(x, condition=None, strength=0.5, steps=20)
    half = [t for t in ts if t <= 100]
    torch.testing.assert_close(edited, model.prior_space.from_prior(ddim_sample(
        model.diffusion, model.denoiser, ddim_invert(model.diffusion, model.denoiser, model.prior_space.to_prior(z0), half), half)))


def test_a_space_is_saved_with_the_model_and_read_back(tmp_path):
    center = torch.tensor([2.0, -1.0, 0.5])
    model = DiLED(VectorCodec(3, 3, hidden=8, depth=1), MLPSkipNet(3, hidden=16, depth=2, time_dim=8),
                  LatentDiffusion("linear_wide", 50), w=1.0, prior_space=PriorSpace(center, 0.25))
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["prior_space"]["scale"] == 0.25 and config["diffusion"]["schedule"] == "linear_wide"
    loaded = DiLED.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(loaded.prior_space.center, center)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    torch.testing.assert_close(loaded.sample_latents(5, steps=10, generator=g()), model.sample_latents(5, steps=10, generator=g()))
    # a model saved without one has none
    plain = DiLED(VectorCodec(3, 3, hidden=8, depth=1), MLPSkipNet(3, hidden=16, depth=2, time_dim=8),
                  LatentDiffusion("linear", 50), w=1.0)
    plain.save_pretrained(tmp_path / "p")
    assert "prior_space" not in json.loads((tmp_path / "p" / "config.json").read_text())
    assert DiLED.from_pretrained(tmp_path / "p").prior_space.dim is None


def test_the_prior_terms_of_the_loss_read_the_prior_coordinates():
    """The joint loss of a model with a space equals the loss of the same prior on latents mapped by hand."""
    center = torch.tensor([2.0, -1.0, 0.5])
    model = DiLED(VectorCodec(3, 3, hidden=8, depth=1), MLPSkipNet(3, hidden=16, depth=2, time_dim=8),
                  LatentDiffusion("linear_wide", 50), w=1.0, prior_space=PriorSpace(center, 0.25))
    batch = [[2.0, -1.0, 0.4], [2.2, -0.9, 0.6]]
    t = torch.tensor([1, 30])
    torch.manual_seed(5)
    out = model(batch, t=t)
    torch.manual_seed(5)
    z0 = model.encode(batch)
    z1 = z0 + model.diffusion.encoder_noise_std * torch.randn_like(z0)
    space = model.prior_space
    eps = torch.randn_like(z1)  # training_losses draws eps after z1, from the same stream
    want = model.diffusion.training_losses(model.denoiser, space.to_prior(z0), space.to_prior(z1), t, eps=eps)["diff"]
    torch.testing.assert_close(out["diff"], want)


def test_linear_wide_ends_near_pure_noise_at_the_text_presets_T():
    betas = get_betas("linear_wide", 200)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.05)
    assert np.prod(1 - betas) < 0.01 < np.prod(1 - get_betas("linear", 200))

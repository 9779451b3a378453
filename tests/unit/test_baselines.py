"""The VAE baseline objective: its loss, annealing, free bits, sampling from N(0, I), persistence."""

import math

import pytest
import torch

from diled import DiLED, LatentDiffusion, MLPSkipNet, VectorCodec
from diled.baselines.vae import VAE, VAEOptions, gaussian_kl, kl_term, kl_weight
from diled.data.toy import gaussian_ring
from diled.training import infinite_batches, train


def tiny_vae(**vae):
    torch.manual_seed(0)
    codec = VectorCodec(data_dim=2, latent_dim=3, hidden=16, depth=1)
    return VAE(codec, MLPSkipNet(3, hidden=16, depth=2, time_dim=8), LatentDiffusion("constant", 10), vae=vae)


def test_gaussian_kl_known_values():
    assert gaussian_kl(torch.zeros(1, 4), torch.zeros(1, 4)).abs().max() == 0  # q = prior
    # KL(N(1, 1) || N(0, 1)) = 1/2; KL(N(0, e) || N(0, 1)) = (e - 1 - 1) / 2
    assert torch.allclose(gaussian_kl(torch.ones(1, 1), torch.zeros(1, 1)), torch.tensor([[0.5]]))
    assert torch.allclose(gaussian_kl(torch.zeros(1, 1), torch.ones(1, 1)), torch.tensor([[(math.e - 2) / 2]]))


def test_annealing_and_free_bits():
    opts = VAEOptions(beta=0.5, anneal_steps=10, free_bits=0.25)
    assert [kl_weight(s, opts) for s in (0, 5, 10, 20)] == [0.0, 0.25, 0.5, 0.5]
    assert kl_weight(3, VAEOptions(beta=0.5)) == 0.5
    kl = torch.tensor([[0.1, 1.0], [0.1, 3.0]])          # batch means 0.1 and 2.0
    assert kl_term(kl, opts).item() == pytest.approx(0.25 + 2.0)
    assert kl_term(kl, VAEOptions()).item() == pytest.approx(2.1)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="vae.beta"):
        VAEOptions(beta=-1)
    with pytest.raises(ValueError, match="unknown vae option.*'gamma'"):
        VAEOptions.from_dict({"gamma": 1})
    with pytest.raises(ValueError, match="objective 'vae'"):
        DiLED(VectorCodec(2, 3), MLPSkipNet(3, 8, 1), LatentDiffusion("constant", 10), vae={"beta": 1})
    with pytest.raises(ValueError, match="objective 'vae' is trained by diled.baselines.VAE, not DiLED"):
        DiLED(VectorCodec(2, 3), MLPSkipNet(3, 8, 1), LatentDiffusion("constant", 10), objective="vae")
    with pytest.raises(ValueError, match="objective 'diled' is trained by diled.DiLED, not VAE"):
        VAE(VectorCodec(2, 3), MLPSkipNet(3, 8, 1), LatentDiffusion("constant", 10), objective="diled")


def test_a_config_that_names_the_vae_builds_the_vae_class():
    config = tiny_vae(beta=0.5).get_config()
    assert config["objective"] == "vae" and config["vae"]["beta"] == 0.5
    built = DiLED.from_config(config)
    assert type(built) is VAE and built.vae == VAEOptions(beta=0.5)
    config.pop("vae")
    assert type(DiLED.from_config({**config, "objective": "diled"})) is DiLED


def test_vae_loss_is_reconstruction_plus_weighted_kl():
    model = tiny_vae(beta=0.5, anneal_steps=4)
    x = {"x": gaussian_ring(16)}
    out = model(x)                                          # training step 1: weight 0.125
    assert int(model.vae_step) == 1
    kl = out["diff"]
    assert out["loss"].item() == pytest.approx(out["rec"].mean().item() + 0.125 * kl.mean().item(), rel=1e-5)
    assert torch.allclose(out["nelbo"], out["rec"] + kl)
    model.eval()
    model(x)
    assert int(model.vae_step) == 1                         # evaluation does not advance the annealing


def test_vae_trains_freezes_the_prior_and_samples_without_it(tmp_path):
    model = tiny_vae(beta=1.0, anneal_steps=50)
    assert not any(p.requires_grad for p in model.denoiser.parameters())
    x = gaussian_ring(2000)
    hist = train(model, infinite_batches(x, 64), 300, lr=3e-3, log_every=100)
    assert hist[-1]["rec"] < hist[0]["rec"]
    calls = []
    model.denoiser.register_forward_hook(lambda *a: calls.append(1))
    samples = torch.tensor(model.generate(64, seed=0))
    assert samples.shape == (64, 2) and not calls               # z ~ N(0, I), decoded
    mid = model.interpolate({"x": x[:1]}, {"x": x[1:2]}, num=4)
    assert len(mid) == 4 and not calls
    model.save_pretrained(tmp_path / "vae")
    back = DiLED.from_pretrained(tmp_path / "vae")
    assert type(back) is VAE and back.objective == "vae" and back.vae == model.vae and int(back.vae_step) == 300
    assert torch.equal(back.encode({"x": x[:5]}), model.encode({"x": x[:5]}))

"""DiLED's public API and the joint objective's gradient paths."""

import json

import pytest
import torch

from diled import DiLED, LatentDiffusion, MLPSkipNet, VectorCodec
from diled.data.toy import gaussian_ring


def tiny(schedule="constant", T=10, w=1.0, latent_dim=3, seed=0):
    torch.manual_seed(seed)
    codec = VectorCodec(data_dim=2, latent_dim=latent_dim, hidden=16, depth=1)
    return DiLED(codec, MLPSkipNet(latent_dim, hidden=16, depth=2, time_dim=8), LatentDiffusion(schedule, T), w=w)


def grads(module):
    return [p.grad for p in module.parameters()]


def nonzero(module):
    gs = grads(module)
    return all(g is not None for g in gs) and sum(g.abs().sum().item() for g in gs) > 0


def test_forward_returns_the_documented_dict():
    model = tiny()
    out = model({"x": gaussian_ring(8)})
    assert out["loss"].shape == () and out["rec"].shape == (8,) and out["diff"].shape == (8,)
    assert out["t"].shape == (8,) and out["t"].dtype == torch.long
    assert int(out["t"].min()) >= 1 and int(out["t"].max()) <= 10


def test_prepare_batch_collates_raw_examples_and_follows_the_weights_dtype():
    model = tiny()
    x = gaussian_ring(4)
    ready = model.prepare_batch(list(x))  # raw examples go through codec.collate
    assert ready["x"].dtype == torch.float32 and torch.equal(ready["x"], model.codec.collate(list(x))["x"])
    model.to(torch.float64)
    assert model.prepare_batch({"x": x})["x"].dtype == torch.float64
    ids = {"x": x.double(), "index": torch.arange(4)}
    assert model.prepare_batch(ids)["index"].dtype == torch.long  # integer tensors keep their dtype


def test_loss_is_exactly_the_design_formula():
    model = tiny(schedule="linear", T=20, w=3.0)
    x = {"x": gaussian_ring(6)}
    t = torch.tensor([1, 2, 5, 10, 19, 20])
    torch.manual_seed(1)
    out = model(x, t=t)
    d = model.diffusion
    lam = d.betas[t - 1] / (2 * d.alphas[t - 1] * (1 - d.alphas_cumprod[t - 1]))
    expected = (out["rec"] / (20 * lam)).mean() + 3.0 * out["diff"].mean()
    torch.testing.assert_close(out["loss"], expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(out["t"], t)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_encoder_and_decoder_get_gradient_at_every_t(schedule):
    """The reconstruction term is split over the T steps: whatever t is drawn, both halves of the codec learn."""
    T = 10
    model = tiny(schedule=schedule, T=T)
    x = {"x": gaussian_ring(4)}
    for step in range(1, T + 1):
        model.zero_grad()
        model(x, t=torch.full((4,), step))["loss"].backward()
        assert nonzero(model.codec.encoder), f"encoder got no gradient at t={step}"
        assert nonzero(model.codec.decoder), f"decoder got no gradient at t={step}"
        assert nonzero(model.denoiser), f"prior got no gradient at t={step}"


def test_align_term_at_t1_reaches_encoder_and_prior():
    """At t == 1 the alignment term alone (with z1 detached, so no path through the noised latent) still
    sends gradient to the encoder, through its target mu(x0), and to the prior."""
    model = tiny()
    batch = {"x": gaussian_ring(4)}
    z0 = model.codec.encode(batch)
    z1 = (z0 + model.diffusion.encoder_noise_std * torch.randn_like(z0)).detach()
    t = torch.ones(4, dtype=torch.long)
    model.diffusion.training_losses(model.denoiser, z0, z1, t)["diff"].mean().backward()
    assert nonzero(model.codec.encoder)
    assert nonzero(model.denoiser)
    assert all(p.grad is None for p in model.codec.decoder.parameters())


def test_t_argument_is_validated():
    model = tiny(T=10)
    with pytest.raises(ValueError, match=r"1\.\.10"):
        model({"x": gaussian_ring(2)}, t=torch.tensor([0, 3]))


def test_mismatched_latent_size_names_both_sizes():
    codec = VectorCodec(data_dim=2, latent_dim=3)
    with pytest.raises(ValueError, match="codec.latent_dim=3.*denoiser.latent_dim=5"):
        DiLED(codec, MLPSkipNet(5, hidden=8, depth=1), LatentDiffusion("constant", 10))


def test_bad_w_is_refused():
    with pytest.raises(ValueError, match="w .*-1"):
        tiny(w=-1)


def test_encode_generate_reconstruct_interpolate():
    model = tiny()
    x = gaussian_ring(5)
    assert model.encode({"x": x}).shape == (5, 3)
    assert model.encode(x.tolist()).shape == (5, 3)  # raw examples are collated
    a, b = model.generate(4, steps=5, seed=7), model.generate(4, steps=5, seed=7)
    assert len(a) == 4 and a == b and model.generate(4, steps=5, seed=8) != a
    assert len(model.generate(2, sampler="ddpm", seed=0)) == 2
    with pytest.raises(ValueError, match="'ancestral'.*ddim, ddpm"):
        model.generate(2, sampler="ancestral")
    rec = model.reconstruct({"x": x})
    assert len(rec) == 5 and len(rec[0]) == 2
    assert len(model.reconstruct({"x": x}, via="inversion", steps=5)) == 5
    with pytest.raises(ValueError, match="'nope'"):
        model.reconstruct({"x": x}, via="nope")
    mid = model.interpolate(x[0].tolist(), x[1].tolist(), num=4, via="latent")
    assert len(mid) == 4
    # linear interpolation in latent space: the ends are the reconstructions of the inputs
    torch.testing.assert_close(torch.tensor(mid[0]), torch.tensor(rec[0]))
    torch.testing.assert_close(torch.tensor(mid[-1]), torch.tensor(rec[1]))
    assert len(model.interpolate(x[0].tolist(), x[1].tolist(), num=3, steps=5)) == 3


def test_save_pretrained_round_trip(tmp_path):
    model = tiny(schedule="cosine", T=20, w=2.5)
    with torch.no_grad():  # make the weights differ from a fresh init with the same seed
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = model.save_pretrained(tmp_path / "m")
    assert sorted(f.name for f in path.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["diffusion"] == {"schedule": "cosine", "T": 20} and config["w"] == 2.5
    loaded = DiLED.from_pretrained(path)
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    x = {"x": gaussian_ring(3)}
    torch.testing.assert_close(model.encode(x), loaded.encode(x))
    assert model.generate(3, steps=5, seed=0) == loaded.generate(3, steps=5, seed=0)


def test_from_pretrained_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory.*nowhere"):
        DiLED.from_pretrained(tmp_path / "nowhere")
    path = tiny().save_pretrained(tmp_path / "m")
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        DiLED.from_pretrained(path)


def test_from_config_rejects_unknown_keys_and_codecs():
    config = tiny().get_config()
    with pytest.raises(ValueError, match="'lr'"):
        DiLED.from_config({**config, "lr": 1e-3})
    with pytest.raises(ValueError, match="unknown codec 'audio'"):
        DiLED.from_config({**config, "codec": {"name": "audio"}})
    with pytest.raises(ValueError, match="unknown noise schedule 'quadratic'"):
        DiLED.from_config({**config, "diffusion": {"schedule": "quadratic", "T": 10}})


def test_a_codec_must_implement_the_protocol():
    from diled.codecs.base import Codec

    class Half(Codec):
        name = "half"

        def encode(self, batch):
            return batch["x"]

    with pytest.raises(TypeError, match="abstract"):
        Half()

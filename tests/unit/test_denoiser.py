import pytest
import torch

from diled import MLPSkipNet
from diled.denoiser import timestep_embedding


def test_shapes_and_skip_connections():
    net = MLPSkipNet(latent_dim=6, hidden=16, depth=4, time_dim=8)
    assert net.layers[0].in_features == 6
    assert all(layer.in_features == 16 + 6 for layer in net.layers[1:])  # z_t concatenated into every layer
    assert net.out.in_features == 16 + 6
    out = net(torch.randn(5, 6), torch.tensor([1, 2, 3, 4, 5]))
    assert out.shape == (5, 6)


def test_time_embedding_changes_the_output():
    torch.manual_seed(0)
    net = MLPSkipNet(latent_dim=4, hidden=16, depth=2, time_dim=8)
    z = torch.randn(3, 4)
    a = net(z, torch.full((3,), 1))
    b = net(z, torch.full((3,), 700))
    assert (a - b).abs().max() > 1e-3


def test_time_scales_the_hidden_state_not_shifts_it():
    # With every time projection zeroed, cond = 0 and h * (1 + cond) = h: t must not matter at all.
    torch.manual_seed(0)
    net = MLPSkipNet(latent_dim=4, hidden=16, depth=2, time_dim=8)
    for proj in net.time_proj:
        torch.nn.init.zeros_(proj.weight)
        torch.nn.init.zeros_(proj.bias)
    z = torch.randn(3, 4)
    torch.testing.assert_close(net(z, torch.full((3,), 1)), net(z, torch.full((3,), 999)))


def test_sinusoidal_embedding():
    e = timestep_embedding(torch.tensor([0, 5]), 8)
    assert e.shape == (2, 8)
    torch.testing.assert_close(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert timestep_embedding(torch.tensor([3]), 7).shape == (1, 7)


def test_bad_input_shape_names_the_expected_size():
    net = MLPSkipNet(latent_dim=4, hidden=8, depth=1, time_dim=4)
    with pytest.raises(ValueError, match=r"\[N x 4\].*\(2, 5\)"):
        net(torch.randn(2, 5), torch.tensor([1, 2]))


def test_bad_size_is_refused():
    with pytest.raises(ValueError, match="depth.*0"):
        MLPSkipNet(latent_dim=4, depth=0)


# ----------------------------------------------------------------- the slot transformer and the registry
def test_slot_transformer_shapes_and_that_it_starts_as_identity_blocks():
    from diled import SlotTransformer

    torch.manual_seed(0)
    net = SlotTransformer(latent_dim=12, slots=3, hidden=16, depth=2, heads=2, time_dim=8)
    z = torch.randn(5, 12)
    assert net(z, torch.tensor([1, 2, 3, 4, 5])).shape == (5, 12)
    # adaLN-Zero: every block's gates start at zero, so the blocks pass their input through unchanged
    h, c = torch.randn(2, 3, 16), torch.randn(2, 16)
    torch.testing.assert_close(net.blocks[0](h, c), h)


def test_slot_transformer_mixes_slots_and_depends_on_t():
    from diled import SlotTransformer

    torch.manual_seed(0)
    net = SlotTransformer(latent_dim=8, slots=4, hidden=16, depth=2, heads=2, time_dim=8)
    for block in net.blocks:  # open the gates (trained blocks are not the identity)
        torch.nn.init.normal_(block.mod.weight, std=0.5)
    z = torch.randn(2, 8)
    base = net(z, torch.tensor([3, 3]))
    moved = z.clone()
    moved[:, :2] += 1.0                                   # change slot 0 only
    out = net(moved, torch.tensor([3, 3]))
    assert (out[:, 2:] - base[:, 2:]).abs().max() > 1e-4  # other slots' outputs see it (attention)
    assert (net(z, torch.tensor([150, 150])) - base).abs().max() > 1e-4


def test_priors_refuse_bad_shapes_arguments_and_a_condition():
    from diled import SlotTransformer, build_prior

    with pytest.raises(ValueError, match="slots=5 must divide latent_dim=12"):
        SlotTransformer(latent_dim=12, slots=5)
    with pytest.raises(ValueError, match="heads=3 must divide hidden=16"):
        SlotTransformer(latent_dim=12, slots=3, hidden=16, heads=3)
    with pytest.raises(ValueError, match="unknown prior 'unet'; valid names: mlp_skip, slot_transformer"):
        build_prior({"name": "unet", "latent_dim": 4})
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['slots'\] for prior 'mlp_skip'"):
        build_prior({"name": "mlp_skip", "latent_dim": 4, "slots": 2})
    for net in (MLPSkipNet(4, hidden=8, depth=1, time_dim=4), build_prior({"name": "slot_transformer",
                                                                           "latent_dim": 4, "slots": 2, "hidden": 8,
                                                                           "heads": 2, "time_dim": 4})):
        with pytest.raises(ValueError, match="built without a condition"):
            net(torch.randn(2, 4), torch.tensor([1, 1]), cond=torch.tensor([0, 1]))
        with pytest.raises(ValueError, match=r"expects z_t of shape \[N x 4\]"):
            net(torch.randn(2, 5), torch.tensor([1, 1]))


def test_a_model_with_the_slot_prior_saves_and_loads_it_by_name(tmp_path):
    import json

    from diled import DiLED, LatentDiffusion, SlotTransformer, VectorCodec

    torch.manual_seed(0)
    model = DiLED(VectorCodec(data_dim=2, latent_dim=4, hidden=8, depth=1),
                  SlotTransformer(4, slots=2, hidden=8, depth=1, heads=2, time_dim=4), LatentDiffusion("linear", 10))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["denoiser"]["name"] == "slot_transformer" and config["denoiser"]["slots"] == 2
    loaded = DiLED.from_pretrained(tmp_path)
    assert isinstance(loaded.denoiser, SlotTransformer)
    z, t = torch.randn(3, 4), torch.tensor([1, 5, 9])
    torch.testing.assert_close(loaded.denoiser(z, t), model.eval().denoiser(z, t))
    # a config saved before priors had names (no "name") is the MLP
    del config["denoiser"]["name"]
    config["denoiser"] = {"latent_dim": 4, "hidden": 8, "depth": 1, "time_dim": 4}
    assert isinstance(DiLED.from_config(config).denoiser, MLPSkipNet)


def test_a_prior_trained_post_hoc_learns_the_latents_distribution():
    """A 2-d latent on two separated blobs: a prior fitted on the cached latents samples both blobs;
    the untrained one does not."""
    from diled import DiLED, LatentDiffusion, VectorCodec, build_prior
    from diled.prior_training import train_prior

    torch.manual_seed(0)
    model = DiLED(VectorCodec(data_dim=2, latent_dim=2, hidden=8, depth=1),
                  MLPSkipNet(2, hidden=8, depth=1, time_dim=4), LatentDiffusion("linear", 50))
    g = torch.Generator().manual_seed(0)
    z0 = torch.cat([torch.randn(500, 2, generator=g) * 0.1 + 2, torch.randn(500, 2, generator=g) * 0.1 - 2])
    prior = build_prior({"name": "mlp_skip", "latent_dim": 2, "hidden": 64, "depth": 3, "time_dim": 16})
    trained, summary = train_prior(model, prior, z0, steps=1500, batch_size=128, lr=2e-3, ema=0.99, warmup=50)
    assert summary["steps"] == 1500
    model.denoiser = trained
    z = model.sample_latents(400, steps=50, generator=torch.Generator().manual_seed(1))
    near = torch.cdist(z, torch.tensor([[2.0, 2.0], [-2.0, -2.0]])).min(1).values
    assert (near < 0.5).float().mean() > 0.8             # untrained: 0.005
    assert 0.3 < (z[:, 0] > 0).float().mean() < 0.7      # both blobs, not one
    with pytest.raises(ValueError, match="needs steps or seconds"):
        train_prior(model, prior, z0)


def test_a_self_conditioned_slot_prior_reads_its_estimate_and_is_saved_with_the_flag(tmp_path):
    from diled import DiLED, LatentDiffusion, SlotTransformer, VectorCodec
    from diled.denoiser import prior_eps, self_conditioned

    torch.manual_seed(0)
    net = SlotTransformer(8, slots=2, hidden=16, depth=1, heads=2, time_dim=8, self_condition=True)
    for block in net.blocks:  # adaLN-Zero starts every block as the identity: open the gates to see z_self
        torch.nn.init.normal_(block.mod.weight, std=0.1)
    z, t = torch.randn(3, 8), torch.tensor([1, 5, 9])
    assert self_conditioned(net) and not self_conditioned(SlotTransformer(8, slots=2, hidden=16, heads=2))
    # no estimate is zeros (what training shows it), and an estimate changes the prediction
    torch.testing.assert_close(prior_eps(net, z, t), net(z, t, z_self=torch.zeros(3, 8)))
    assert not torch.allclose(net(z, t, z_self=torch.randn(3, 8)), net(z, t, z_self=torch.zeros(3, 8)))
    with pytest.raises(ValueError, match=r"z_self must have z_t's shape \(3, 8\), got \(3, 4\)"):
        net(z, t, z_self=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="built without self_condition, but z_self was given"):
        SlotTransformer(8, slots=2, hidden=16, heads=2)(z, t, z_self=z)
    with pytest.raises(ValueError, match="self_condition must be true or false, got 'yes'"):
        SlotTransformer(8, slots=2, hidden=16, heads=2, self_condition="yes")
    model = DiLED(VectorCodec(data_dim=2, latent_dim=8, hidden=8, depth=1), net, LatentDiffusion("linear", 10))
    model.save_pretrained(tmp_path)
    loaded = DiLED.from_pretrained(tmp_path)
    assert loaded.denoiser.get_config()["self_condition"] is True
    assert loaded.generate(2, steps=5, seed=0) == model.generate(2, steps=5, seed=0)
    # a prior built without it saves no flag, so configs saved before it load unchanged
    assert "self_condition" not in SlotTransformer(8, slots=2, hidden=16, heads=2).get_config()


class _Recorder(torch.nn.Module):
    """A self-conditioned stand-in prior that records the estimate each call receives."""
    self_condition = True

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, z_t, t, z_self=None):
        self.seen.append(z_self.clone())
        return 0.5 * z_t + 0.1 * z_self


def test_samplers_pass_a_self_conditioned_prior_the_last_steps_estimate():
    from diled import LatentDiffusion
    from diled.diffusion import ddim_invert, ddim_sample

    diffusion = LatentDiffusion("linear", 20)
    prior = _Recorder()
    z_T = torch.randn(4, 3)
    ts = diffusion.timesteps(5)
    ddim_sample(diffusion, prior, z_T, ts, eta=1.0, generator=torch.Generator().manual_seed(0))
    assert len(prior.seen) == len(ts) and torch.equal(prior.seen[0], torch.zeros(4, 3))
    # the second call reads the estimate of z1 made from the first call's eps at the first step
    eps0 = 0.5 * z_T
    expected = diffusion.predict_start_from_noise(z_T, torch.full((4,), ts[0]), eps0)
    torch.testing.assert_close(prior.seen[1], expected)
    prior.seen.clear()
    z1 = torch.randn(4, 3)
    ddim_invert(diffusion, prior, z1, ts)
    assert len(prior.seen) == len(ts) and torch.equal(prior.seen[0], z1)   # inversion starts from z1 itself


def test_train_prior_self_conditions_half_of_each_batch_and_guidance_passes_the_estimate_on():
    from diled import DiLED, LatentDiffusion, SlotTransformer, VectorCodec
    from diled.guidance import CFGPrior
    from diled.prior_training import train_prior

    torch.manual_seed(0)
    model = DiLED(VectorCodec(data_dim=2, latent_dim=4, hidden=8, depth=1),
                  SlotTransformer(4, slots=2, hidden=8, depth=1, heads=2, time_dim=4), LatentDiffusion("linear", 10))
    prior = SlotTransformer(4, slots=2, hidden=8, depth=1, heads=2, time_dim=4, self_condition=True,
                            classes=["a", "b"])
    calls = []
    prior.register_forward_hook(lambda m, args, kwargs, out: calls.append(kwargs.get("z_self")), with_kwargs=True)
    z0 = torch.randn(64, 4) * 0.1
    trained, summary = train_prior(model, prior, z0, steps=3, batch_size=16, ema=0.0, warmup=1,
                                   labels=torch.randint(0, 2, (64,)))
    assert summary["steps"] == 3 and len(calls) == 6   # per step: the gradient-free estimate, then the loss
    first, second = calls[0], calls[1]
    assert torch.equal(first, torch.zeros(16, 4))
    kept = (second != 0).any(1)
    assert 0 < int(kept.sum()) < 16                      # some rows read the estimate, the others zeros
    calls.clear()
    guided = CFGPrior(trained, cond=1, scale=2.0)
    assert guided.self_condition
    model.denoiser = trained
    model.sample_latents(3, steps=4, sampler="ddim", generator=torch.Generator().manual_seed(0), condition="b",
                         guidance_scale=2.0)
    assert len(calls) == 4 and torch.equal(calls[0], torch.zeros(6, 4)) and (calls[1] != 0).any()

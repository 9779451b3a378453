"""The sampling temperature (the scale of z_T): saved with the model, used by every sampling path, chosen
among candidates by a score (``choose_temperature``) and by the prior stage on a staged folder."""

import json
import types

import pytest
import torch

from diled import DiLED, LatentDiffusion, MLPSkipNet, VectorCodec
from diled.diffusion import ddim_sample, step_noise
from diled.guidance import model_weights_sha256
from diled.prior_training import choose_temperature


def tiny(seed=0, **kwargs):
    torch.manual_seed(seed)
    codec = VectorCodec(data_dim=2, latent_dim=3, hidden=16, depth=1)
    return DiLED(codec, MLPSkipNet(3, hidden=16, depth=2, time_dim=8), LatentDiffusion("linear", 10), w=1.0, **kwargs)


def test_the_temperature_scales_the_starting_noise_and_is_saved_with_the_model(tmp_path):
    model = tiny(prior_temperature=0.7)
    base = torch.randn(4, 3, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(model.noise(4, torch.Generator().manual_seed(5)), base * 0.7)
    torch.testing.assert_close(model.noise(4, torch.Generator().manual_seed(5), prior_temperature=1.0), base)
    # generate and sample_latents start from that noise; an explicit z_T is taken as given
    z = model.sample_latents(4, steps=5, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(z, model.sample_latents(4, steps=5, z_T=base * 0.7))
    colder = model.sample_latents(4, steps=5, generator=torch.Generator().manual_seed(5), prior_temperature=0.5)
    torch.testing.assert_close(colder, model.sample_latents(4, steps=5, z_T=base * 0.5))
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["sampling"] == {"prior_temperature": 0.7, "eta": 0.0}
    loaded = DiLED.from_pretrained(tmp_path / "m")
    assert loaded.prior_temperature == 0.7
    assert loaded.generate(3, steps=5, seed=1) == model.generate(3, steps=5, seed=1)


def test_a_config_without_sampling_loads_at_temperature_one_and_bad_values_are_named():
    config = tiny().get_config()
    config.pop("sampling")
    assert DiLED.from_config(config).prior_temperature == 1.0
    with pytest.raises(ValueError, match=r"unknown DiLED config key\(s\) \['tempo'\] in sampling"):
        DiLED.from_config({**config, "sampling": {"tempo": 1}})
    for bad in (0, -1, 2.5, True, "0.9"):
        with pytest.raises(ValueError, match=r"prior_temperature must be a number in \(0, 2.0\], got"):
            tiny(prior_temperature=bad)
        with pytest.raises(ValueError, match="temperature must be"):
            tiny().generate(2, steps=3, prior_temperature=bad)


def test_the_sampling_eta_is_saved_with_the_model_and_used_by_ddim_unless_a_call_sets_its_own(tmp_path):
    model = tiny(sampling_eta=1.0)
    ts = model._steps(5)
    base = torch.randn(4, 3, generator=torch.Generator().manual_seed(5))
    # fresh noise at every step, drawn after z_T from the same generator
    z = model.sample_latents(4, steps=5, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(z, ddim_sample(model.diffusion, model.denoiser, base, ts, eta=1.0,
                                              generator=_after(5, base.shape)))
    deterministic = model.sample_latents(4, steps=5, generator=torch.Generator().manual_seed(5), eta=0.0)
    torch.testing.assert_close(deterministic, model.sample_latents(4, steps=5, z_T=base, eta=0.0))
    assert not torch.allclose(z, deterministic)
    # the steps' noise drawn ahead (what Serve does for each request of a shared batch) gives the same samples
    g = torch.Generator().manual_seed(5)
    z_T = model.noise(4, g)
    noise = step_noise(4, 3, ts, g)
    assert noise.shape == (len(ts) - 1, 4, 3)
    torch.testing.assert_close(model.sample_latents(4, steps=5, z_T=z_T, noise=noise), z)
    with pytest.raises(ValueError, match=r"noise must be \[4 x 4 x 3\]"):
        model.sample_latents(4, steps=5, z_T=z_T, noise=noise[:2])
    # DDPM is eta 1 whatever the model's DDIM eta
    assert tiny(sampling_eta=0.3).default_eta("ddpm") == 1.0 and tiny(sampling_eta=0.3).default_eta() == 0.3
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["sampling"] == {"prior_temperature": 1.0, "eta": 1.0}
    loaded = DiLED.from_pretrained(tmp_path / "m")
    assert loaded.sampling_eta == 1.0 and loaded.generate(3, steps=5, seed=1) == model.generate(3, steps=5, seed=1)
    # a folder saved before eta was a setting (sampling holds the temperature only) samples deterministically
    config = model.get_config()
    config["sampling"] = {"prior_temperature": 0.9}
    assert DiLED.from_config(config).sampling_eta == 0.0
    for bad in (-0.1, 1.5, True, "1"):
        with pytest.raises(ValueError, match=r"eta must be a number in \[0, 1\], got"):
            tiny(sampling_eta=bad)
        with pytest.raises(ValueError, match=r"eta must be a number in \[0, 1\], got"):
            model.generate(2, steps=3, eta=bad)


def _after(seed, shape):
    """A generator seeded ``seed`` that has drawn a tensor of ``shape`` (z_T) already."""
    g = torch.Generator().manual_seed(seed)
    torch.randn(shape, generator=g)
    return g


def test_choose_temperature_takes_the_best_scored_candidate_from_the_same_noise():
    model = tiny()
    seen = []
    target = model.sample_latents(50, z_T=model.noise(50, torch.Generator().manual_seed(3), prior_temperature=0.8)).std()

    def score(z):
        seen.append(z)
        return -float((z.std() - target).abs())

    out = choose_temperature(model, score, [1.0, 0.8, 0.6], n=50, seed=3)
    assert out["temperature"] == 0.8 and model.prior_temperature == 0.8 and out["scores"]["0.8"] == 0.0
    assert out["scores"]["1.0"] < 0 and out["scores"]["0.6"] < 0 and len(seen) == 3
    # averaged over draws: the second draw (seed 4) is scored too, and the mean decides
    again = choose_temperature(model, score, [1.0, 0.8, 0.6], n=50, seed=3, repeats=2)
    assert len(seen) == 9 and again["per_draw"]["0.8"][0] == 0.0 and len(again["per_draw"]["0.8"]) == 2
    assert again["scores"]["0.8"] == sum(again["per_draw"]["0.8"]) / 2
    with pytest.raises(ValueError, match="at least one candidate"):
        choose_temperature(model, score, [])
    with pytest.raises(ValueError, match="temperature must be"):
        choose_temperature(model, score, [0.9, 3.0])
    with pytest.raises(ValueError, match="repeats must be a positive integer, got 0"):
        choose_temperature(model, score, [0.9], repeats=0)


def test_choose_temperature_with_etas_takes_the_best_pair():
    model = tiny()
    # the samples of (0.8, eta 1) from seed 3: z_T, then the steps' noise, from one generator
    target = model.sample_latents(50, eta=1.0, generator=torch.Generator().manual_seed(3), prior_temperature=0.8)

    def score(z):
        return -float((z - target).abs().mean())

    out = choose_temperature(model, score, [1.0, 0.8], n=50, seed=3, etas=[0.0, 1.0])
    assert set(out["scores"]) == {"1.0, eta 0.0", "0.8, eta 0.0", "1.0, eta 1.0", "0.8, eta 1.0"}
    assert (out["temperature"], out["eta"]) == (0.8, 1.0) and out["scores"]["0.8, eta 1.0"] == 0.0
    assert (model.prior_temperature, model.sampling_eta) == (0.8, 1.0)
    # without etas the model's eta stays as it is
    assert choose_temperature(model, score, [0.8], n=50, seed=3)["eta"] == 1.0 and model.sampling_eta == 1.0
    with pytest.raises(ValueError, match="at least one candidate eta"):
        choose_temperature(model, score, [0.8], etas=[])
    with pytest.raises(ValueError, match=r"eta must be a number in \[0, 1\], got 2"):
        choose_temperature(model, score, [0.8], etas=[0.0, 2])


class QualityPrefers:
    """A data type stand-in whose sample quality is highest for samples of the spread a temperature gives."""
    name = "toy"

    def __init__(self, model, temperature):
        self.target = model.sample_latents(500, z_T=model.noise(500, torch.Generator().manual_seed(1),
                                                                prior_temperature=temperature)).std()

    def sample_quality(self, model, z, seed=0):
        return -float((z.std() - self.target).abs())


def test_the_prior_stage_chooses_the_temperature_of_a_staged_folder_leaving_its_weights(tmp_path):
    from diled_platform.config import PriorStageConfig
    from diled_platform.training.prior_stage import RECORD, run_prior_stage

    model = tiny()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    (folder / RECORD).write_text(json.dumps({"steps": 100, "prior": "earlier"}))
    weights = model_weights_sha256(folder)
    cfg = types.SimpleNamespace(prior_stage=PriorStageConfig(temperatures=[1.0, 0.9, 0.8]),
                                run=types.SimpleNamespace(seed=0), model=None)
    record = run_prior_stage(cfg, QualityPrefers(model, 0.9), folder)   # seed 0 + 1: the datatype's seed
    assert record["temperature"]["temperature"] == 0.9 and record["steps"] == 100
    assert json.loads((folder / RECORD).read_text()) == record
    assert DiLED.from_pretrained(folder).prior_temperature == 0.9
    assert model_weights_sha256(folder) == weights    # only config.json and the record changed
    # done: a second run does not choose again
    assert run_prior_stage(cfg, None, folder) == record


def test_a_temperature_only_stage_rewrites_the_folder_with_the_chosen_temperature(tmp_path):
    from diled_platform.config import PriorStageConfig
    from diled_platform.training.prior_stage import run_prior_stage

    model = tiny()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    cfg = types.SimpleNamespace(prior_stage=PriorStageConfig(temperatures=[1.0, 0.8]),
                                run=types.SimpleNamespace(seed=0), model=None)
    record = run_prior_stage(cfg, QualityPrefers(model, 0.8), folder)
    assert record["steps"] == 0 and record["temperature"]["temperature"] == 0.8
    assert DiLED.from_pretrained(folder).prior_temperature == 0.8
    assert (tmp_path / "model.joint").is_dir()   # the folder before the stage, kept beside it


def test_temperatures_in_a_config_are_checked():
    from diled_platform.config import ConfigError, PriorStageConfig

    assert not PriorStageConfig().active and PriorStageConfig(temperatures=[0.9]).active
    with pytest.raises(ConfigError, match=r"prior_stage.temperatures\[1\] must be a number in \(0, 2\], got 0"):
        PriorStageConfig(temperatures=[0.9, 0]).validate()
    PriorStageConfig(temperatures=[0.9], etas=[0, 1.0]).validate()
    with pytest.raises(ConfigError, match=r"prior_stage.etas\[1\] must be a number in \[0, 1\], got 1.5"):
        PriorStageConfig(temperatures=[0.9], etas=[0.0, 1.5]).validate()
    assert PriorStageConfig(etas=[1.0]).active     # temperature 1 with eta 1: set, not scored


def test_a_single_candidate_is_set_without_scoring(tmp_path):
    """temperatures [] with etas [1.0] (how a run turns the preset's choice off) sets temperature 1 and eta 1
    without sampling: the data type is never asked."""
    from diled_platform.config import PriorStageConfig
    from diled_platform.training.prior_stage import run_prior_stage

    model = tiny(prior_temperature=0.7)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    cfg = types.SimpleNamespace(prior_stage=PriorStageConfig(temperatures=[], etas=[1.0]),
                                run=types.SimpleNamespace(seed=0), model=None)
    record = run_prior_stage(cfg, None, folder)
    assert record["temperature"]["scores"] == {"1.0, eta 1.0": None} and record["temperature"]["n"] == 500
    loaded = DiLED.from_pretrained(folder)
    assert (loaded.prior_temperature, loaded.sampling_eta) == (1.0, 1.0)
    assert run_prior_stage(cfg, None, folder) == record


class PrefersSamplesOf:
    """A data type stand-in whose sample quality is highest (0) for exactly the samples that a temperature and
    eta give from the noise of one of ``seeds``."""
    name = "toy"

    def __init__(self, model, temperature, eta, seeds, n=500):
        self.refs = [model.sample_latents(n, eta=eta, generator=torch.Generator().manual_seed(s),
                                          prior_temperature=temperature) for s in seeds]

    def sample_quality(self, model, z, seed=0):
        return max(-float((z - ref).abs().mean()) for ref in self.refs)


def test_a_folder_chosen_over_other_candidates_is_chosen_again_with_the_etas(tmp_path):
    """A staged folder whose temperature was chosen before etas were candidates gets the pair chosen: the
    choice records its candidates, and only config.json and the record change."""
    from diled_platform.config import PriorStageConfig
    from diled_platform.training.prior_stage import RECORD, run_prior_stage

    model = tiny()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    (folder / RECORD).write_text(json.dumps({"steps": 100, "prior": "earlier",
                                             "temperature": {"temperature": 1.0, "scores": {"1.0": 0.1, "0.9": 0.0}}}))
    weights = model_weights_sha256(folder)
    cfg = types.SimpleNamespace(prior_stage=PriorStageConfig(temperatures=[1.0, 0.9], etas=[0.0, 1.0]),
                                run=types.SimpleNamespace(seed=0), model=None)

    record = run_prior_stage(cfg, PrefersSamplesOf(model, 0.9, 1.0, seeds=(1, 2)), folder)  # the stage's draws: seed + 1, + 2
    assert set(record["temperature"]["scores"]) == {"1.0, eta 0.0", "0.9, eta 0.0", "1.0, eta 1.0", "0.9, eta 1.0"}
    assert (record["temperature"]["temperature"], record["temperature"]["eta"]) == (0.9, 1.0)
    loaded = DiLED.from_pretrained(folder)
    assert (loaded.prior_temperature, loaded.sampling_eta) == (0.9, 1.0)
    assert model_weights_sha256(folder) == weights
    assert run_prior_stage(cfg, None, folder) == record    # chosen over these candidates: not again


def test_serve_bounds_the_prior_temperature_as_the_library_does():
    """The request schema keeps its own copy of the bound (it does not import torch): the two must agree."""
    from diled.diffusion import MAX_TEMPERATURE
    from diled_platform.serving.schema import MAX_TEMPERATURE as SERVED

    assert SERVED == MAX_TEMPERATURE

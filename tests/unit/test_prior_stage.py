"""The prior stage's options on a tiny model without Ray: a conditional prior (classifier-free guidance)
trained on the data type's labels, and a value guide on its values."""

import types

import pytest
import torch

from diled import DiLED, LatentDiffusion, MLPSkipNet, VectorCodec


class TwoClusters:
    """A data type stand-in: 2-D points in two clusters, labelled by cluster, valued by their first number."""
    name = "toy"

    def __init__(self, n=2000):
        g = torch.Generator().manual_seed(0)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        self.x = 0.3 * torch.randn(n, 2, generator=g)
        self.x[:, 0] += torch.where(self.labels == 1, 1.5, -1.5)

    def training_examples(self):
        return [row.tolist() for row in self.x]

    def training_labels(self):
        return ["left", "right"], self.labels.tolist()

    def training_values(self):
        return "height", [float(v) for v in self.x[:, 0]]


def stage_config(**stage):
    from diled_platform.config import PriorStageConfig

    return types.SimpleNamespace(prior_stage=PriorStageConfig(**stage), run=types.SimpleNamespace(seed=0),
                                 model=types.SimpleNamespace(latent_dim=2))


def identity_model(tmp_path):
    """A tiny model; the tests hand the stage the clusters themselves as the latents (``encode_all``)."""
    torch.manual_seed(0)
    codec = VectorCodec(2, 2, hidden=8, depth=1)
    model = DiLED(codec, MLPSkipNet(2, hidden=32, depth=2, time_dim=16), LatentDiffusion("linear", 100), w=1.0)
    return model, model.save_pretrained(tmp_path / "model")


def test_a_conditional_stage_prior_is_guided_classifier_free(tmp_path, monkeypatch):
    from diled_platform.training import prior_stage

    model, folder = identity_model(tmp_path)
    data = TwoClusters()
    import diled.prior_training as pt

    monkeypatch.setattr(pt, "encode_all", lambda m, examples, log=None: data.x.clone())
    record = prior_stage.run_prior_stage(
        stage_config(steps=1200, batch_size=256, lr=2e-3, ema=0.99, conditional=True, cond_drop=0.2,
                     prior={"name": "mlp_skip", "hidden": 64, "depth": 3, "time_dim": 32}), data, folder)
    assert record["prior"]["classes"] == ["left", "right"]
    staged = DiLED.from_pretrained(folder)
    assert staged.conditions == ["left", "right"]
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    right = staged.sample_latents(300, steps=50, generator=g(), condition="right", guidance_scale=3.0)
    left = staged.sample_latents(300, steps=50, generator=g(), condition="left", guidance_scale=3.0)
    assert float((right[:, 0] > 0).float().mean()) > 0.9 and float((left[:, 0] < 0).float().mean()) > 0.9


def test_a_value_guide_from_the_stage(tmp_path, monkeypatch):
    from diled.guidance import LatentRegressor
    from diled_platform.training import prior_stage

    model, folder = identity_model(tmp_path)
    data = TwoClusters()
    import diled.prior_training as pt

    monkeypatch.setattr(pt, "encode_all", lambda m, examples, log=None: data.x.clone())
    record = prior_stage.run_prior_stage(stage_config(guide_steps=300, guide="value"), data, folder)
    assert record["guide"]["kind"] == "value" and record["guide"]["with_value"] == 2000
    staged = DiLED.from_pretrained(folder)
    assert isinstance(staged.guide, LatentRegressor) and staged.guide.value == "height"


def test_conditional_needs_stage_steps():
    from diled_platform.config import ConfigError, PriorStageConfig

    with pytest.raises(ConfigError, match="prior_stage.conditional .* needs prior_stage.steps > 0"):
        PriorStageConfig(conditional=True).validate()
    with pytest.raises(ConfigError, match=r"prior_stage.cond_drop must be in \[0, 1\], got 1.5"):
        PriorStageConfig(steps=5, conditional=True, cond_drop=1.5).validate()


class TwoMoods(TwoClusters):
    """The clusters as texts: "left" points are complaints, "right" ones praise (the latents stay the points)."""
    judges_text = True

    def training_examples(self):
        words = {0: ["awful delay", "lost my bag", "worst crew"], 1: ["great flight", "thanks so much", "lovely crew"]}
        return [f"{words[int(c)][i % 3]} today" for i, c in enumerate(self.labels)]


def test_a_class_guide_of_a_text_data_type_gets_a_judge_of_its_outputs(tmp_path, monkeypatch):
    from diled.editing import JUDGE_DIR, load_judge
    from diled_platform.training import prior_stage

    model, folder = identity_model(tmp_path)
    data = TwoMoods()
    import diled.prior_training as pt

    monkeypatch.setattr(pt, "encode_all", lambda m, examples, log=None: data.x.clone())
    record = prior_stage.run_prior_stage(stage_config(guide_steps=200), data, folder)
    assert record["judge"]["classes"] == ["left", "right"] and record["judge"]["fitted_on"] == 2000
    judge = load_judge(folder)
    assert judge.classes == ("left", "right")
    right, left = judge.probability(["thanks so much today", "worst crew today"], "right")
    assert right > 0.9 and left < 0.1
    # it judges outputs, not latents: saved without pickle, and a folder without one has none
    assert sorted(p.name for p in (folder / JUDGE_DIR).iterdir()) == ["judge.json", "judge.safetensors"]
    assert load_judge(tmp_path) is None
    # a folder staged before judges existed gets one when the stage runs again; its weights stay
    import json
    import shutil

    weights = (folder / "model.safetensors").read_bytes()
    shutil.rmtree(folder / JUDGE_DIR)
    old = {k: v for k, v in json.loads((folder / prior_stage.RECORD).read_text()).items() if k != "judge"}
    (folder / prior_stage.RECORD).write_text(json.dumps(old))
    again = prior_stage.run_prior_stage(stage_config(guide_steps=200), data, folder)
    assert again["judge"]["classes"] == ["left", "right"] and load_judge(folder).classes == ("left", "right")
    assert json.loads((folder / prior_stage.RECORD).read_text())["judge"] == again["judge"]
    assert (folder / "model.safetensors").read_bytes() == weights
    # points, not prose: a guide but no judge
    _, other = identity_model(tmp_path / "points")
    assert "judge" not in prior_stage.run_prior_stage(stage_config(guide_steps=50), TwoClusters(), other)


class TwoLabels(TwoClusters):
    """The clusters with a second label, "vertical" (the sign of the second number; the latents stay the points)."""

    def further_labels(self):
        return {"vertical": (["down", "up"], (self.x[:, 1] > 0).long().tolist())}


def test_a_further_label_gets_its_own_guide_that_composes_with_the_first(tmp_path, monkeypatch):
    """A class guide for the data type's labels and one for each further label, saved as ``guides/<label>``
    and loaded with the model (its conditions listed after the first label's); a folder staged before further
    labels gets theirs when the stage runs again, its weights unchanged; a data type without them gets none."""
    import json
    import shutil

    from diled.guidance import ComposedPrior, LatentClassifier
    from diled_platform.training import prior_stage

    model, folder = identity_model(tmp_path)
    data = TwoLabels()
    import diled.prior_training as pt

    monkeypatch.setattr(pt, "encode_all", lambda m, examples, log=None: data.x.clone())
    record = prior_stage.run_prior_stage(stage_config(guide_steps=300), data, folder)
    assert record["guides"]["vertical"]["classes"] == ["down", "up"] and record["guides"]["vertical"]["steps"] == 300
    assert record["guides"]["vertical"]["final_loss"] < record["guides"]["vertical"]["chance_loss"]
    staged = DiLED.from_pretrained(folder)
    assert isinstance(staged.guides["vertical"], LatentClassifier) and staged.conditions == ["left", "right", "down", "up"]
    assert isinstance(staged.guided_prior(["right", "up"], 2.0), ComposedPrior)
    weights = (folder / "model.safetensors").read_bytes()
    shutil.rmtree(folder / "guides")
    old = {k: v for k, v in json.loads((folder / prior_stage.RECORD).read_text()).items() if k != "guides"}
    (folder / prior_stage.RECORD).write_text(json.dumps(old))
    assert DiLED.from_pretrained(folder).guides == {}
    again = prior_stage.run_prior_stage(stage_config(guide_steps=300), data, folder)
    assert again["guides"]["vertical"]["classes"] == ["down", "up"] and "vertical" in DiLED.from_pretrained(folder).guides
    assert (folder / "model.safetensors").read_bytes() == weights
    _, other = identity_model(tmp_path / "one")
    assert "guides" not in prior_stage.run_prior_stage(stage_config(guide_steps=50), TwoClusters(), other)


def test_a_stage_prior_on_standardised_latents_under_its_own_schedule(tmp_path, monkeypatch):
    """Latents far from the unit scale of the noise (two clusters of spread 0.015 around 3): the stage's fresh
    prior works on them standardised (spread 1) under linear_wide; both are saved with the model, its samples
    come back as latents of the clusters, and the guide (trained in the same coordinates) steers them."""
    from diled_platform.training import prior_stage

    model, folder = identity_model(tmp_path)
    data = TwoClusters()
    small = 3.0 + 0.01 * data.x
    import diled.prior_training as pt

    monkeypatch.setattr(pt, "encode_all", lambda m, examples, log=None: small.clone())
    record = prior_stage.run_prior_stage(
        stage_config(steps=1500, batch_size=256, lr=2e-3, ema=0.99, spread=1.0, schedule="linear_wide", guide_steps=300,
                     prior={"name": "mlp_skip", "hidden": 64, "depth": 3, "time_dim": 32}), data, folder)
    assert record["diffusion"] == {"schedule": "linear_wide", "T": 100} and record["spread"] == 1.0
    staged = DiLED.from_pretrained(folder)
    assert staged.diffusion.schedule == "linear_wide"
    assert float(staged.prior_space.scale) == pytest.approx(float((small - small.mean(0)).std()), rel=1e-5)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    z = staged.sample_latents(400, steps=50, eta=1.0, generator=g())
    first = (z[:, 0] - 3.0) / 0.01  # back in the clusters' units: about -1.5 or +1.5
    assert float(((first.abs() - 1.5).abs() < 0.75).float().mean()) > 0.8, first[:10]
    assert 0.25 < float((first > 0).float().mean()) < 0.75
    right = staged.sample_latents(400, steps=50, eta=1.0, generator=g(), condition="right", guidance_scale=3.0)
    assert float(((right[:, 0] - 3.0) > 0).float().mean()) > 0.9


def test_spread_and_schedule_are_for_a_fresh_stage_prior():
    from diled_platform.config import ConfigError, PriorStageConfig

    with pytest.raises(ConfigError, match="prior_stage.spread and .schedule are for a fresh prior"):
        PriorStageConfig(steps=5, spread=1.0).validate()
    with pytest.raises(ConfigError, match="prior_stage.spread must be >= 0"):
        PriorStageConfig(steps=5, spread=-1.0, prior={"name": "mlp_skip"}).validate()

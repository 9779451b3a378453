"""Guided generation and editing in latent space (diled.guidance): a conditional prior trained post hoc on
labelled latents and mixed classifier-free, and a classifier on noisy latents guiding an unconditional
prior. The latents are two clusters, class "left" around x = -1.5 and "right" around x = +1.5."""

import pytest
import torch

from diled import DiLED, LatentDiffusion, MLPSkipNet, SlotTransformer, VectorCodec
from diled.guidance import LatentClassifier, train_classifier
from diled.prior_training import train_prior

CLASSES = ["left", "right"]


def clusters(n=2000, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    z0 = 0.3 * torch.randn(n, 2, generator=g)
    z0[:, 0] += torch.where(labels == 1, 1.5, -1.5)
    return z0, labels


def model_with(prior):
    torch.manual_seed(0)
    return DiLED(VectorCodec(2, 2, hidden=8, depth=1), prior, LatentDiffusion("linear", 100), w=1.0).eval()


@pytest.fixture(scope="module")
def conditional():
    z0, labels = clusters()
    model = model_with(MLPSkipNet(2, hidden=64, depth=3, time_dim=32, classes=CLASSES))
    model.denoiser, _ = train_prior(model, model.denoiser, z0, steps=1500, batch_size=256, lr=2e-3, ema=0.99,
                                    warmup=50, labels=labels, drop_prob=0.2)
    return model


def share_right(z):
    return float((z[:, 0] > 0).float().mean())


def test_classifier_free_guidance_steers_toward_the_class(conditional):
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    free = conditional.sample_latents(400, steps=50, generator=g())
    assert 0.3 < share_right(free) < 0.7  # no condition: the null class, both clusters
    for scale in (1.0, 3.0):
        assert share_right(conditional.sample_latents(400, steps=50, generator=g(), condition="right",
                                                      guidance_scale=scale)) > 0.95
        assert share_right(conditional.sample_latents(400, steps=50, generator=g(), condition=0,
                                                      guidance_scale=scale)) < 0.05
    # no batch-coupled layers: a seed's samples do not depend on how many are drawn with them
    z_T = torch.randn(8, 2, generator=g())
    four = conditional.sample_latents(4, steps=20, z_T=z_T[:4], condition="right", guidance_scale=3.0)
    eight = conditional.sample_latents(8, steps=20, z_T=z_T, condition="right", guidance_scale=3.0)
    torch.testing.assert_close(four, eight[:4])


def test_guided_editing_moves_inputs_across_and_strength_zero_keeps_them(conditional):
    z0, labels = clusters(200, seed=1)
    left = z0[labels == 0]
    decoder_inputs = conditional.codec.decode_mean(left)  # inputs whose encodings we edit
    model = conditional
    model.codec.encode = lambda batch: left  # the codec is not what is tested: its latents are the clusters'
    try:
        edited = model.edit_latents(decoder_inputs.tolist(), "right", strength=0.8, guidance_scale=3.0, steps=50)
        assert share_right(edited) > 0.9
        kept = model.edit_latents(decoder_inputs.tolist(), "right", strength=0.0)
        torch.testing.assert_close(kept, left)
        weak = model.edit_latents(decoder_inputs.tolist(), "right", strength=0.05, guidance_scale=3.0, steps=50)
        assert share_right(weak) < 0.2  # a little noise: the inputs stay where they were
        with pytest.raises(ValueError, match="strength must be a number in"):
            model.edit_latents(decoder_inputs.tolist(), "right", strength=1.5)
    finally:
        del model.codec.encode


def test_classifier_guidance_steers_an_unconditional_prior(tmp_path):
    z0, labels = clusters()
    model = model_with(MLPSkipNet(2, hidden=64, depth=3, time_dim=32))
    model.denoiser, _ = train_prior(model, model.denoiser, z0, steps=1500, batch_size=256, lr=2e-3, ema=0.99,
                                    warmup=50)
    classifier = LatentClassifier(2, CLASSES, hidden=64, depth=2, time_dim=32)
    summary = train_classifier(classifier, model.diffusion, z0, labels, steps=800, lr=3e-3)
    assert summary["final_loss"] < summary["chance_loss"]
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert share_right(model.sample_latents(400, steps=50, generator=g(), condition="right", classifier=classifier,
                                            guidance_scale=3.0)) > 0.9
    assert share_right(model.sample_latents(400, steps=50, generator=g(), condition="left", classifier=classifier,
                                            guidance_scale=3.0)) < 0.1
    with pytest.raises(ValueError, match="has no classes"):
        model.sample_latents(2, condition="right")

    # saved beside the model, tied to its weights: loaded with it, the default guide of an unconditional prior
    from diled.guidance import guidable_classes, save_guide

    folder = model.save_pretrained(tmp_path / "m")
    save_guide(classifier, folder, {"steps": 800})
    loaded = DiLED.from_pretrained(folder)
    assert loaded.guide is not None and loaded.guide.classes == CLASSES
    assert guidable_classes(loaded) == loaded.conditions == CLASSES
    assert not any(k.startswith("guide") for k in loaded.state_dict())
    torch.testing.assert_close(loaded.sample_latents(6, steps=20, generator=g(), condition="right", guidance_scale=3.0),
                               model.sample_latents(6, steps=20, generator=g(), condition="right",
                                                    classifier=classifier, guidance_scale=3.0))
    # editing until the guide is convinced: each input keeps the mildest setting that moves it across
    from diled.editing import edit_until

    z0_test, labels_test = clusters(200, seed=2)
    left = z0_test[labels_test == 0]
    left[:10, 0] = -0.2  # ten inputs near the boundary: a mild edit should do for them
    model.codec.encode = lambda batch: left  # the codec is not what is tested: its latents are the clusters'
    model.guide = classifier  # edit_until's default judge
    try:
        inputs = model.codec.decode_mean(left).tolist()
        settings = [(0.3, 1.0), (0.8, 3.0)]
        z, taken = edit_until(model, inputs, "right", settings, until=0.5, steps=50)
        strong = model.edit_latents(inputs, "right", strength=0.8, guidance_scale=3.0, steps=50, classifier=classifier)
        assert share_right(z) > 0.85 and len(taken) == len(left) and set(taken) <= {0, 1}
        mild = torch.tensor(taken) == 0
        assert mild[:10].float().mean() > 0.5  # most near-boundary inputs stop at the mild setting
        torch.testing.assert_close(z[~mild], strong[~mild])  # the rest keep the strong one
        # the mild edits moved less than the strong setting would have
        assert (z[mild] - left[mild]).norm(dim=-1).mean() < (strong[mild] - left[mild]).norm(dim=-1).mean()
        with pytest.raises(ValueError, match="until must be a probability in"):
            edit_until(model, inputs, "right", settings, until=1.0)
        with pytest.raises(ValueError, match=r"settings must be a non-empty list of \(strength, guidance_scale\)"):
            edit_until(model, inputs, "right", [])
        with pytest.raises(ValueError, match="unknown condition 'up'"):
            edit_until(model, inputs, "up", settings)
    finally:
        del model.codec.encode
    model.guide = None
    with pytest.raises(ValueError, match="judges the edits with a class guide"):
        edit_until(model, [[0.0, 0.0]], "right", [(0.5, 1.0)])

    model.denoiser.out.bias.data += 1  # other weights: the guide no longer belongs to them
    model.save_pretrained(folder)
    with pytest.raises(ValueError, match="was trained for a model whose weights have SHA-256"):
        DiLED.from_pretrained(folder)


def test_conditions_are_checked_and_classes_are_saved(conditional, tmp_path):
    with pytest.raises(ValueError, match=r"unknown condition 'up'; this model knows \['left', 'right'\]"):
        conditional.generate(2, condition="up")
    with pytest.raises(ValueError, match="class name or an index in 0..1"):
        conditional.generate(2, condition=2)
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        conditional.generate(2, condition="left", guidance_scale=-1)
    with pytest.raises(ValueError, match="built without a condition"):
        MLPSkipNet(2, hidden=8, depth=1)(torch.zeros(1, 2), torch.ones(1, dtype=torch.long), torch.zeros(1))
    with pytest.raises(ValueError, match="classes must be distinct"):
        SlotTransformer(4, slots=2, hidden=8, depth=1, heads=2, classes=["a", "a"])
    loaded = DiLED.from_pretrained(conditional.save_pretrained(tmp_path / "m"))
    assert loaded.denoiser.classes == CLASSES
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    torch.testing.assert_close(loaded.sample_latents(5, steps=10, generator=g(), condition="left", guidance_scale=2.0),
                               conditional.sample_latents(5, steps=10, generator=g(), condition="left",
                                                          guidance_scale=2.0))


def test_a_slot_transformer_takes_classes_too():
    prior = SlotTransformer(4, slots=2, hidden=16, depth=1, heads=2, time_dim=16, classes=CLASSES)
    z, t = torch.randn(3, 4), torch.tensor([1, 5, 9])
    nn_out = prior(z, t, torch.tensor([0, 1, -1]))
    assert nn_out.shape == (3, 4)
    torch.testing.assert_close(prior(z, t), prior(z, t, torch.tensor([-1, -1, -1])))  # no cond: the null class


def test_value_guidance_steers_toward_at_least_y_and_saves_with_the_model(tmp_path):
    """A regressor on noisy latents (a value: z's first number, plus noise) guides an unconditional prior toward
    ">= y": most guided samples reach y where few unguided ones do; saved as the model's guide, it is what
    ``conditions`` lists, and a class condition is refused by name."""
    from diled.conditions import at_least
    from diled.guidance import LatentRegressor, guidable_classes, save_guide, train_regressor

    z0, _ = clusters()
    values = z0[:, 0] + 0.1 * torch.randn(len(z0), generator=torch.Generator().manual_seed(1))
    model = model_with(MLPSkipNet(2, hidden=64, depth=3, time_dim=32))
    model.denoiser, _ = train_prior(model, model.denoiser, z0, steps=1500, batch_size=256, lr=2e-3, ema=0.99,
                                    warmup=50)
    regressor = LatentRegressor(2, "height", hidden=64, depth=2, time_dim=32)
    summary = train_regressor(regressor, model.diffusion, z0, values, steps=800, lr=3e-3)
    assert summary["final_nll"] < summary["constant_nll"] - 0.3
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain = model.sample_latents(400, steps=50, generator=g())
    guided = model.sample_latents(400, steps=50, generator=g(), condition=">= 1.5", classifier=regressor,
                                  guidance_scale=3.0)
    assert float((plain[:, 0] >= 1.5).float().mean()) < 0.35 < 0.7 < float((guided[:, 0] >= 1.5).float().mean())
    assert at_least(">= 1.5") == 1.5 and at_least(" >=-2e-1") == -0.2 and at_least("right") is None
    with pytest.raises(ValueError, match="needs a value guide"):
        model.sample_latents(2, condition=">= 1")

    folder = model.save_pretrained(tmp_path / "m")
    save_guide(regressor, folder, summary)
    loaded = DiLED.from_pretrained(folder)
    assert isinstance(loaded.guide, LatentRegressor) and loaded.conditions == [">= y (height at least y)"]
    assert guidable_classes(loaded) == []  # a value guide has no class to guide a report's class section toward
    torch.testing.assert_close(loaded.sample_latents(6, steps=20, generator=g(), condition=">=1.5", guidance_scale=3.0),
                               model.sample_latents(6, steps=20, generator=g(), condition=">=1.5",
                                                    classifier=regressor, guidance_scale=3.0))
    with pytest.raises(ValueError, match=r"unknown condition 'right'; this model's guide takes a value condition"):
        loaded.check_condition("right")
    loaded.check_condition(">= 0.5")


def test_judged_editing_keeps_per_input_the_closest_edit_the_judge_accepts(conditional):
    from diled.editing import edit_judged

    z0, labels = clusters(200, seed=4)
    left = z0[labels == 0]
    left[:10, 0] = -0.2  # ten inputs near the boundary: a mild edit should do for them
    model = conditional
    model.codec.encode = lambda batch: left  # latents in, latents out: the codec is not what is tested
    model.codec.decode = lambda z, **options: z.tolist()
    judge = lambda outputs, condition: torch.sigmoid(8 * torch.tensor(outputs)[:, 0] * (1 if condition == "right" else -1))  # noqa: E731
    closeness = lambda outputs, inputs: (-(torch.tensor(outputs) - torch.tensor(inputs)).norm(dim=-1)).tolist()  # noqa: E731
    settings = [(0.0, 0.0), (0.3, 1.0), (0.8, 3.0)]
    inputs = left.tolist()
    try:
        chosen = edit_judged(model, inputs, "right", judge, closeness, settings=settings, accept=0.8, steps=50)
        candidates = [model.edit(inputs, "right", strength=s, guidance_scale=g, steps=50) for s, g in settings]
        assert len(chosen.outputs) == len(inputs) and share_right(torch.tensor(chosen.outputs)) > 0.85
        for i, (output, index, accepted) in enumerate(zip(chosen.outputs, chosen.settings, chosen.accepted)):
            assert output == candidates[index][i]
            p = [float(judge([c[i]], "right")[0]) for c in candidates]
            d = [float(closeness([c[i]], [inputs[i]])[0]) for c in candidates]
            ok = [j for j in range(len(settings)) if p[j] >= 0.8]
            # the closest accepted candidate, else the closest of all
            assert accepted == bool(ok) and d[index] == max(d[j] for j in (ok or range(len(settings))))
        assert sum(j == 1 for j in chosen.settings[:10]) > 5  # near the boundary, the mild edit does
        assert chosen.settings.count(2) > len(inputs) / 2  # far from it, only the strong one does
        heard = []
        none = edit_judged(model, inputs, "right", lambda o, c: [0.0] * len(o), closeness, settings=settings,
                           progress=lambda done, total: heard.append((done, total)))
        assert none.outputs == inputs and set(none.settings) == {0} and not any(none.accepted)
        assert heard == [(1, 3), (2, 3), (3, 3)]  # each setting done, in order
        # an edit that moves an input further than min_similarity allows is not taken, however convincing
        near = edit_judged(model, inputs, "right", judge, closeness, settings=settings, min_similarity=-1.0, steps=50)
        for i, (index, accepted) in enumerate(zip(near.settings, near.accepted)):
            assert not accepted or float(closeness([candidates[index][i]], [inputs[i]])[0]) >= -1.0
        assert sum(near.accepted) < sum(chosen.accepted)
        with pytest.raises(ValueError, match="accept must be a probability in"):
            edit_judged(model, inputs, "right", judge, closeness, accept=1.0)
        with pytest.raises(ValueError, match=r"settings must be a non-empty list of \(strength, guidance_scale\)"):
            edit_judged(model, inputs, "right", judge, closeness, settings=[])
        with pytest.raises(ValueError, match="the judge gave 1 probabilities"):
            edit_judged(model, inputs, "right", lambda o, c: [1.0], closeness, settings=settings)
        with pytest.raises(ValueError, match="unknown condition 'up'"):
            edit_judged(model, inputs, "up", judge, closeness, settings=settings)
    finally:
        del model.codec.encode, model.codec.decode


def quadrants(n=2000, seed=0):
    """Latents in four clusters: x's sign is one label (left / right), y's another (down / up)."""
    g = torch.Generator().manual_seed(seed)
    horizontal, vertical = torch.randint(0, 2, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)
    z0 = 0.3 * torch.randn(n, 2, generator=g)
    z0[:, 0] += torch.where(horizontal == 1, 1.5, -1.5)
    z0[:, 1] += torch.where(vertical == 1, 1.5, -1.5)
    return z0, horizontal, vertical


def test_conditions_of_two_labels_compose_and_their_guides_save_with_the_model(tmp_path):
    """Two class guides (left/right, down/up) on an unconditional prior over four clusters: one condition fills
    its half of the plane, the two composed fill their quadrant; the second guide saved as a further label
    (``guides/vertical``) loads with the model, and bad compositions are refused by name. Then a prior trained
    with the first label's classes (classifier-free) composes with the second label's guide."""
    from diled.guidance import ComposedPrior, save_guide

    z0, horizontal, vertical = quadrants()
    model = model_with(MLPSkipNet(2, hidden=64, depth=3, time_dim=32))
    model.denoiser, _ = train_prior(model, model.denoiser, z0, steps=1500, batch_size=256, lr=2e-3, ema=0.99,
                                    warmup=50)
    guides = {}
    for name, labels, classes in (("horizontal", horizontal, CLASSES), ("vertical", vertical, ["down", "up"])):
        guides[name] = LatentClassifier(2, classes, hidden=64, depth=2, time_dim=32)
        train_classifier(guides[name], model.diffusion, z0, labels, steps=800, lr=3e-3)
    model.guide, model.guides = guides["horizontal"], {"vertical": guides["vertical"]}
    assert model.conditions == ["left", "right", "down", "up"]
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731

    def quadrant_share(condition, scale=3.0):
        z = model.sample_latents(400, steps=50, generator=g(), condition=condition, guidance_scale=scale)
        return float(((z[:, 0] > 0) & (z[:, 1] > 0)).float().mean())

    # one label fills its half of the plane, so about half of it is the upper right quadrant; both fill it
    assert 0.35 < quadrant_share("right") < 0.65 and 0.35 < quadrant_share("up") < 0.65
    assert quadrant_share(["right", "up"]) > 0.85 and quadrant_share(["left", "up"]) < 0.05
    assert 0.35 < quadrant_share(["right", "up"], [3.0, 0.0]) < 0.65  # scale 0: that condition is dropped
    assert isinstance(model.guided_prior(["right", "up"]), ComposedPrior)
    for bad, match in ((["left", "right"], "'left' and 'right' are of the same label"),
                       ([], "a non-empty list of single conditions"), (["up", ["right"]], "non-empty list of single"),
                       (["north", "up"], r"unknown condition 'north'; this model knows \['left', 'right', 'down', 'up'\]")):
        with pytest.raises(ValueError, match=match):
            model.sample_latents(2, condition=bad)
    with pytest.raises(ValueError, match=r"guidance_scale: one number for all conditions or one per condition \(2\)"):
        model.sample_latents(2, condition=["right", "up"], guidance_scale=[1.0])
    with pytest.raises(ValueError, match="guidance_scale must be a number"):
        model.sample_latents(2, condition="right", guidance_scale=[1.0, 2.0])

    folder = model.save_pretrained(tmp_path / "m")
    save_guide(guides["horizontal"], folder)
    save_guide(guides["vertical"], folder, {"steps": 800}, label="vertical")
    loaded = DiLED.from_pretrained(folder)
    assert list(loaded.guides) == ["vertical"] and loaded.conditions == model.conditions
    torch.testing.assert_close(loaded.sample_latents(6, steps=20, generator=g(), condition=["up", "left"]),
                               model.sample_latents(6, steps=20, generator=g(), condition=["up", "left"]))
    with pytest.raises(ValueError, match="a guide's label is a name"):
        save_guide(guides["vertical"], folder, label="../up")

    conditional = model_with(MLPSkipNet(2, hidden=64, depth=3, time_dim=32, classes=CLASSES))
    conditional.denoiser, _ = train_prior(conditional, conditional.denoiser, z0, steps=1500, batch_size=256, lr=2e-3,
                                          ema=0.99, warmup=50, labels=horizontal, drop_prob=0.2)
    conditional.guides = {"vertical": guides["vertical"]}  # its latents are the same four clusters
    z = conditional.sample_latents(400, steps=50, generator=g(), condition=["right", "up"], guidance_scale=3.0)
    assert float(((z[:, 0] > 0) & (z[:, 1] > 0)).float().mean()) > 0.85


def test_a_composition_shares_one_unconditional_pass_and_adds_what_each_guidance_adds():
    """Each guided prior's ``shift`` is its prediction less the unconditional one, so a composition of its
    parts equals their own predictions combined; and composed guides run the prior once per call, not once
    per part and once more."""
    from diled.guidance import (AtLeastGuidedPrior, CFGPrior, ClassifierGuidedPrior, ComposedPrior, LatentRegressor)
    from diled.denoiser import prior_eps

    torch.manual_seed(0)
    diffusion = LatentDiffusion("linear", 100)
    conditional = MLPSkipNet(2, hidden=16, depth=2, time_dim=8, classes=CLASSES).eval()
    plain = MLPSkipNet(2, hidden=16, depth=2, time_dim=8).eval()
    classifier = LatentClassifier(2, ["down", "up"], hidden=16, depth=2, time_dim=8)
    regressor = LatentRegressor(2, "fitness", hidden=16, depth=2, time_dim=8)
    z_t, t = torch.randn(5, 2), torch.randint(1, 101, (5,))
    for prior, part in ((conditional, CFGPrior(conditional, 1, 3.0)), (conditional, CFGPrior(conditional, 0, 1.0)),
                        (plain, ClassifierGuidedPrior(plain, classifier, diffusion, 1, 2.0)),
                        (plain, AtLeastGuidedPrior(plain, regressor, diffusion, 0.5, 2.0))):
        with torch.no_grad():
            eps_u = prior_eps(prior, z_t, t)
            torch.testing.assert_close(part.shift(z_t, t, None, eps_u), part(z_t, t) - eps_u, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(ComposedPrior(prior, [part])(z_t, t), part(z_t, t), atol=1e-5, rtol=1e-4)
    calls = []
    plain.register_forward_hook(lambda *_: calls.append(1))
    composed = ComposedPrior(plain, [ClassifierGuidedPrior(plain, classifier, diffusion, 1, 2.0),
                                     AtLeastGuidedPrior(plain, regressor, diffusion, 0.5, 2.0)])
    with torch.no_grad():
        composed(z_t, t)
    assert len(calls) == 1

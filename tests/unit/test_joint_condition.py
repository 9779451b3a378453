"""Classifier-free guidance trained in the joint loss: a batch's "cond" (class indices) reaches a prior built
with classes through ``DiLED.forward``, each dropped to the null class with probability ``cond_drop``
(``diled.conditions.training_condition``). The data: two clusters in 2-D, "left" around x = -1.5 and
"right" around x = +1.5."""

import pytest
import torch

from diled import DiLED, LatentDiffusion, MLPSkipNet, VectorCodec
from diled.conditions import NULL, training_condition

CLASSES = ["left", "right"]


def clusters(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    x = 0.3 * torch.randn(n, 2, generator=g)
    x[:, 0] += torch.where(labels == 1, 1.5, -1.5)
    return x, labels


def model(objective="diled"):
    torch.manual_seed(0)
    prior = MLPSkipNet(2, hidden=64, depth=3, time_dim=32, classes=CLASSES)
    return DiLED(VectorCodec(2, 2, hidden=32, depth=2), prior, LatentDiffusion("linear", 100), w=1.0,
                 objective=objective)


def test_training_condition_drops_with_its_probability_and_needs_classes():
    cond = torch.tensor([0, 1, 1, 0, -1])
    prior = MLPSkipNet(2, hidden=8, depth=1, time_dim=8, classes=CLASSES)
    with pytest.raises(ValueError, match=r"class indices \('cond'\) but the MLPSkipNet prior was built without classes"):
        training_condition(MLPSkipNet(2, hidden=8, depth=1, time_dim=8), cond, 0.1)
    assert training_condition(prior, None, 0.1) is None  # no labels in the batch: the null class
    assert torch.equal(training_condition(prior, cond, 0.0), cond)
    assert torch.equal(training_condition(prior, cond, 1.0), torch.full_like(cond, NULL))
    torch.manual_seed(0)
    dropped = training_condition(prior, torch.zeros(20_000, dtype=torch.long), 0.25)
    assert 0.23 < float((dropped == NULL).float().mean()) < 0.27
    with pytest.raises(ValueError, match=r"drop probability must be in \[0, 1\], got 1.5"):
        training_condition(prior, cond, 1.5)


@pytest.mark.parametrize("objective", ["diled", "prior_only"])
def test_the_batch_condition_reaches_the_class_rows_and_a_dropped_one_the_null_row(objective):
    x, labels = clusters(64, seed=0)
    grads = {}
    for drop in (0.0, 1.0, None):
        m = model(objective)
        m.cond_drop = 0.0 if drop is None else drop
        m.zero_grad()
        batch = {"x": x} if drop is None else {"x": x, "cond": labels}
        m(batch)["loss"].backward()
        grads[drop] = m.denoiser.class_embedding.table.weight.grad.abs().sum(1)  # rows: left, right, null
    assert (grads[0.0][:2] > 0).all() and grads[0.0][2] == 0  # every label kept
    assert (grads[1.0][:2] == 0).all() and grads[1.0][2] > 0  # every label dropped
    assert (grads[None][:2] == 0).all() and grads[None][2] > 0  # no labels: the null class, as if all dropped


def test_joint_training_with_dropped_labels_gives_guidable_and_unguided_samples():
    """Codec and conditional prior trained together (the DiLED loss, labels dropped with p = 0.2): guided
    samples decode into their class's cluster, unguided ones (the null class) into both."""
    x, labels = clusters(4000, seed=1)
    m = model()
    m.cond_drop = 0.2
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(600):
        idx = torch.randint(len(x), (128,), generator=g)
        loss = m({"x": x[idx], "cond": labels[idx]})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()

    def right(condition=None, scale=1.0):
        z = m.sample_latents(400, steps=50, generator=torch.Generator().manual_seed(0), condition=condition,
                             guidance_scale=scale)
        return float((m.codec.decode_mean(z)[:, 0] > 0).float().mean())

    assert 0.25 < right() < 0.75
    assert right("right", 2.0) > 0.9 and right("left", 2.0) < 0.1

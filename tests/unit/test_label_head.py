"""The text codec's label head: a classifier of the data's labels on the noisy latent, trained jointly."""

import numpy as np
import pytest
import torch

from diled import DiLED, LatentDiffusion, MLPSkipNet
from diled.codecs.text import TextCodec, train_bpe
from diled.codecs._text_labels import check_label_head

POSITIVE = ["what a great film, i loved it.", "a warm, funny and moving story.", "best service in years.",
            "a clever script with sharp dialogue."]
NEGATIVE = ["the movie was bad and boring.", "it drags on far too long.", "my bag was lost on the way home.",
            "the acting is wooden and the plot is thin."]
HEAD = {"classes": ["negative", "positive"], "weight": 2.0, "noise": 0.05}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return str(train_bpe((POSITIVE + NEGATIVE) * 5, 300, tmp_path_factory.mktemp("tok")))


def make_model(tokenizer_dir, label_head=HEAD):
    torch.manual_seed(0)
    codec = TextCodec(latent_dim=8, tokenizer=tokenizer_dir, max_length=24, label_head=label_head, encoder_layers=2,
                      encoder_trainable_layers=0,
                      decoder_config={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 32})
    return DiLED(codec, MLPSkipNet(8, hidden=16, depth=1, time_dim=8), LatentDiffusion("linear", 50))


def examples():
    return ([{"text": t, "label": "positive"} for t in POSITIVE] + [{"text": t, "label": "negative"} for t in NEGATIVE]
            + [{"text": "the flight left on time.", "label": "neutral"}, {"text": "no label here.", "label": None}])


@pytest.mark.parametrize("options, names", [
    ({"classes": ["a"]}, "classes"), ({"classes": ["a", "a"]}, "classes"), ({"classes": "ab"}, "classes"),
    ({"classes": ["a", "b"], "weight": 0}, "weight"), ({"classes": ["a", "b"], "noise": -1}, "noise"),
    ({"classes": ["a", "b"], "weight": True}, "weight"), ({"classes": ["a", "b"], "wieght": 1}, "wieght"),
    (["a", "b"], "mapping")])
def test_bad_options_are_named(options, names):
    with pytest.raises(ValueError, match=names):
        check_label_head(options)
    assert check_label_head({"classes": ["a", "b"]}) == {"classes": ["a", "b"], "weight": 1.0, "noise": 0.1}


def test_labels_collate_and_the_term_joins_the_loss(tokenizer_dir):
    model = make_model(tokenizer_dir)
    batch = model.codec.collate(examples())
    assert batch["label"].tolist() == [1] * 4 + [0] * 4 + [-1, -1]  # neutral and missing labels add nothing
    assert "label" not in model.codec.collate(POSITIVE)  # plain texts: no labels, no term
    # labels are matched by their text: a user's integer label column works with classes ["0", "1"]
    from diled.codecs._text_labels import LabelHead
    assert LabelHead(8, ["0", "1"]).targets([1, 0, None, 2, "1"]).tolist() == [1, 0, -1, -1, 1]
    columns = {"x": np.array([e["text"] for e in examples()], dtype=object),
               "label": np.array([e["label"] or "" for e in examples()], dtype=object)}
    assert model.codec.collate_columns(columns)["label"].tolist() == batch["label"].tolist()
    t = torch.full((10,), 3)
    torch.manual_seed(1)
    out = model(batch, t=t)
    ce = out["label_ce"]
    assert ce.shape == (10,) and (ce[:8] > 0).all() and (ce[8:] == 0).all()
    torch.manual_seed(1)
    plain = model({k: v for k, v in batch.items() if k != "label"}, t=t)
    assert "label_ce" not in plain
    torch.testing.assert_close(out["loss"], plain["loss"] + 2.0 * ce.mean())
    out["loss"].backward(retain_graph=True)
    assert model.codec.label_head.linear.weight.grad.abs().sum() > 0
    # the term's gradient reaches the encoder's projection (the encoder learns to set the classes apart)
    model.zero_grad()
    ce.mean().backward()
    assert model.codec.to_latent.weight.grad.abs().sum() > 0


def test_training_sets_the_classes_apart_and_the_head_saves(tokenizer_dir, tmp_path):
    model = make_model(tokenizer_dir)
    batch = model.codec.collate(examples())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for step in range(60):
        ce = model(batch)["label_ce"][:8].mean()
        first = ce.item() if first is None else first
        opt.zero_grad()
        ce.backward()
        opt.step()
    assert ce.item() < 0.5 * first
    model.eval()
    z = model.encode([e["text"] for e in examples()[:8]])
    assert model.codec.label_head.predict(z) == ["positive"] * 4 + ["negative"] * 4
    loaded = DiLED.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.codec.get_config()["label_head"] == HEAD
    torch.testing.assert_close(loaded.codec.label_head.linear.weight, model.codec.label_head.linear.weight)
    assert loaded.codec.label_head.predict(loaded.encode(POSITIVE)) == ["positive"] * 4
    # a codec without a head saves no such key (older folders and configs mean what they meant)
    assert "label_head" not in make_model(tokenizer_dir, label_head=None).codec.get_config()

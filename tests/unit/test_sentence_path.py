"""The text codec's sentence path (a summary of the whole latent the decoder reads besides the slots) and
slot dropout (training hides slots from the decoder)."""

import pytest
import torch

from diled import DiLED, LatentDiffusion, MLPSkipNet
from diled.codecs.text import TextCodec, train_bpe
from diled.codecs._text_sentence import check_sentence_options, drop_slots

TEXTS = ["what a great film, i loved it.", "the movie was bad and boring.", "best service in years.",
         "my bag was lost on the way home."]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return str(train_bpe(TEXTS * 5, 300, tmp_path_factory.mktemp("tok")))


def make_model(tokenizer_dir, **options):
    torch.manual_seed(0)
    codec = TextCodec(latent_dim=12, tokenizer=tokenizer_dir, max_length=24, encoder_layers=2,
                      encoder_trainable_layers=0, latent_slots=3, slot_tokens=4,
                      decoder_config={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 32}, **options)
    return DiLED(codec, MLPSkipNet(12, hidden=16, depth=1, time_dim=8), LatentDiffusion("linear", 50))


@pytest.mark.parametrize("width, p, slots, name", [
    (-1, 0.0, 3, "sentence_latent"), (True, 0.0, 3, "sentence_latent"), (2.5, 0.0, 3, "sentence_latent"),
    (4, 1.0, 3, "slot_dropout"), (4, -0.1, 3, "slot_dropout"), (4, "0.3", 3, "slot_dropout"),
    (4, 0.3, 1, "latent_slots")])
def test_bad_options_are_named(width, p, slots, name):
    with pytest.raises(ValueError, match=name):
        check_sentence_options(width, p, slots)
    assert check_sentence_options(4, 0.3, 3) == (4, 0.3, 0)


@pytest.mark.parametrize("after, p, message", [(-1, 0.3, "slot_dropout_after must be"), (2.0, 0.3, "got 2.0"),
                                               (True, 0.3, "got True"), (5, 0.0, "needs slot_dropout > 0")])
def test_bad_slot_dropout_after_is_named(after, p, message):
    with pytest.raises(ValueError, match=message):
        check_sentence_options(4, p, 3, after)
    assert check_sentence_options(4, 0.3, 3, 5) == (4, 0.3, 5)


def test_drop_slots_hides_whole_slots_only():
    torch.manual_seed(0)
    z, missing = torch.randn(200, 12), torch.full((4,), 7.0)
    out = drop_slots(z, 3, 0.5, missing).view(200, 3, 4)
    hidden = (out == 7.0).all(-1)
    kept = (out == z.view(200, 3, 4)).all(-1)
    assert (hidden | kept).all() and 0.35 < hidden.float().mean() < 0.65  # each slot whole: hidden or kept
    assert torch.equal(drop_slots(z, 3, 0.0, missing), z)


def test_the_decoder_reads_the_sentence_path_and_training_hides_slots(tokenizer_dir):
    model = make_model(tokenizer_dir, sentence_latent=4, slot_dropout=0.5).eval()
    codec = model.codec
    batch = codec.collate(TEXTS)
    z = model.encode(TEXTS)
    cache, n_mem = codec._memory_cache(z)
    assert n_mem == 4  # three slots and the sentence position
    ids, mask = batch["dec_ids"][:, :-1], batch["dec_mask"][:, :-1]
    logits = codec.decoder_logits(ids, mask, z)
    torch.testing.assert_close(codec.decoder_logits(ids, mask, z), logits)  # evaluation hides nothing
    # the path is read: changing only its summary's weights changes the logits
    with torch.no_grad():
        codec.sentence.to_embedding.weight.normal_()
    changed = codec.decoder_logits(ids, mask, z)
    assert not torch.allclose(changed, logits)
    codec.train()
    torch.manual_seed(3)
    dropped = [codec.decoder_logits(ids, mask, z) for _ in range(4)]
    assert any(not torch.allclose(d, changed) for d in dropped)
    codec.eval()
    # generation reads z the way teacher forcing does: the first greedy token is the logits' argmax
    first = [seq[0] for seq in codec.decode_ids(z, strategy="greedy", max_new_tokens=3)]
    assert first == changed[:, 0].argmax(-1).tolist()


def test_slot_dropout_starts_after_its_steps_and_needs_the_loop_to_count(tokenizer_dir, tmp_path):
    from diled.training import train

    model = make_model(tokenizer_dir, sentence_latent=4, slot_dropout=0.5, slot_dropout_after=2)
    codec = model.codec.train()
    batch = codec.collate(TEXTS)
    z = model.encode(TEXTS).detach()
    ids, mask = batch["dec_ids"][:, :-1], batch["dec_mask"][:, :-1]
    with pytest.raises(RuntimeError, match="set_training_step"):  # a loop that does not say the step
        codec.decoder_logits(ids, mask, z)
    codec.eval()
    reference = codec.decoder_logits(ids, mask, z)
    codec.train()
    codec.decoder.eval()  # the decoder's own dropout off: only slot dropout can differ from evaluation
    for step in (1, 2):  # the first two steps see every slot: the same logits as evaluation
        codec.set_training_step(step)
        torch.testing.assert_close(codec.decoder_logits(ids, mask, z), reference)
    codec.set_training_step(3)
    torch.manual_seed(3)
    assert any(not torch.allclose(codec.decoder_logits(ids, mask, z), reference) for _ in range(4))
    # the library's loop says the step; the option is saved and loads
    batches = iter([batch] * 3)
    train(model, batches, steps=3)
    assert codec.training_step == 3
    loaded = DiLED.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.codec.get_config()["slot_dropout_after"] == 2


def test_a_label_head_reads_the_summary_and_the_model_saves(tokenizer_dir, tmp_path):
    head = {"classes": ["negative", "positive"], "weight": 1.0, "noise": 0.0}
    model = make_model(tokenizer_dir, sentence_latent=4, slot_dropout=0.3, label_head=head)
    codec = model.codec
    assert codec.label_head.linear.in_features == 4
    labels = ["positive", "negative", "positive", "negative"]
    batch = codec.collate([{"text": t, "label": y} for t, y in zip(TEXTS, labels)])
    out = model(batch)
    out["label_ce"].mean().backward()
    assert codec.sentence.summary.weight.grad.abs().sum() > 0  # the head's loss shapes the summary
    assert codec.missing_slot.requires_grad
    model.eval()
    z = model.encode(TEXTS)
    assert codec.label_features(z).shape == (4, 4)
    assert set(codec.predict_labels(z)) <= {"negative", "positive"} and len(codec.predict_labels(z)) == 4
    loaded = DiLED.from_pretrained(model.save_pretrained(tmp_path / "m")).eval()
    config = loaded.codec.get_config()
    assert config["sentence_latent"] == 4 and config["slot_dropout"] == 0.3
    ids, mask = batch["dec_ids"][:, :-1], batch["dec_mask"][:, :-1]
    torch.testing.assert_close(loaded.codec.decoder_logits(ids, mask, z), codec.decoder_logits(ids, mask, z))
    # a codec without them saves neither key (older folders and configs mean what they meant)
    plain = make_model(tokenizer_dir).codec
    assert "sentence_latent" not in plain.get_config() and plain.sentence is None
    assert plain._memory_cache(z)[1] == 3
    with pytest.raises(ValueError, match="label_head"):
        plain.predict_labels(z)

"""The bert decoder kind: a BERT checkpoint (the offline MiniLM) warm-starts a causal decoder."""

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from diled import DiLED, LatentDiffusion, MLPSkipNet
from diled.codecs.text import TextCodec, default_encoder_path, train_bpe

SENTENCES = [
    "a three-hour cinema master class.", "the movie was bad and boring.", "what a great film, i loved it.",
    "self-driving cars just seem lazy.", "i just don't trust my life in their hands.",
    "the acting is wooden and the plot is thin.", "a warm, funny and moving story.",
    "the flight was late again and nobody told us.",
]
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def make_codec(**kw):
    torch.manual_seed(0)
    args = dict(latent_dim=8, decoder_kind="bert", decoder_layers=1, encoder_layers=1, encoder_trainable_layers=0,
                max_length=20, decoder_config=NO_DROPOUT)
    args.update(kw)
    return TextCodec(**args)


def test_warm_start_loads_the_checkpoint_and_uses_its_wordpiece_vocabulary():
    codec = make_codec(decoder_layers=2)
    reference = AutoModel.from_pretrained(default_encoder_path())
    for ours, theirs in [(codec.decoder.bert.encoder.layer[1].attention.self.query.weight,
                          reference.encoder.layer[1].attention.self.query.weight),
                         (codec.decoder.bert.embeddings.word_embeddings.weight, reference.embeddings.word_embeddings.weight)]:
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert len(codec.decoder.bert.encoder.layer) == 2 and codec.n_layer == 2
    # the output matrix is the input embedding (tied), so the warm start reaches the logits too
    assert codec.decoder.cls.predictions.decoder.weight is codec.decoder.bert.embeddings.word_embeddings.weight
    batch = codec.collate(["The movie was great."])
    tok = codec.tokenizer
    assert batch["dec_ids"][0, 0] == tok.cls_token_id and batch["dec_ids"][0, -1] == tok.sep_token_id
    assert tok.decode(batch["dec_ids"][0, 1:-1]) == "the movie was great."  # uncased WordPiece
    random = make_codec(decoder_layers=2, decoder_init="random")
    assert not torch.equal(random.decoder.bert.encoder.layer[1].attention.self.query.weight,
                           reference.encoder.layer[1].attention.self.query.weight)


def test_the_decoder_is_causal_and_the_latent_reaches_it():
    codec = make_codec().eval()
    batch = codec.collate(SENTENCES[:3])
    ids, mask = batch["dec_ids"][:, :-1], batch["dec_mask"][:, :-1]
    z = torch.randn(3, 8)
    with torch.no_grad():
        base = codec.decoder_logits(ids, mask, z)
        changed = ids.clone()
        changed[:, 4] = 2000  # a later token: positions before it must not move
        after = codec.decoder_logits(changed, mask, z)
        torch.testing.assert_close(after[:, :4], base[:, :4], rtol=0, atol=1e-5)
        assert (after[:, 4:] - base[:, 4:]).abs().max() > 1e-3
        assert (codec.decoder_logits(ids, mask, torch.randn(3, 8)) - base).abs().max() > 1e-4
        # KV-cache decoding matches teacher forcing on its own output
        out = codec.decode_ids(z, max_new_tokens=6)
        assert all(len(seq) <= 6 for seq in out)


def test_invalid_bert_decoder_options_are_named():
    with pytest.raises(ValueError, match="decoder_layers must be -1 or in 1..6"):
        make_codec(decoder_layers=7)
    with pytest.raises(ValueError, match="decoder_kind must be one of causal_lm, gpt2, bert"):
        make_codec(decoder_kind="t5")
    with pytest.raises(ValueError, match="decoder_init"):
        make_codec(decoder_init="warm")


def _reconstruction_after(codec, steps: int) -> float:
    batch = codec.collate(SENTENCES)
    opt = torch.optim.Adam([p for p in codec.parameters() if p.requires_grad], lr=1e-3)
    codec.train()
    for _ in range(steps):
        loss = codec.reconstruction_loss(batch, codec.encode(batch)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    codec.eval()
    with torch.no_grad():
        return float(codec.reconstruction_loss(batch, codec.encode(batch)).mean())


def test_the_warm_start_learns_reconstruction_faster_than_a_random_decoder_of_the_same_shape():
    warm = _reconstruction_after(make_codec(), steps=30)
    cold = _reconstruction_after(make_codec(decoder_init="random"), steps=30)
    assert warm < 0.8 * cold, (warm, cold)


def test_save_and_load_round_trip_the_bert_decoder_and_its_tokenizer(tmp_path):
    codec = make_codec()
    model = DiLED(codec, MLPSkipNet(8, hidden=16, depth=2, time_dim=8), LatentDiffusion("constant", 100), w=1.0).eval()
    model.save_pretrained(tmp_path / "m")
    loaded = DiLED.from_pretrained(tmp_path / "m").eval()
    assert loaded.codec.decoder_kind == "bert" and type(loaded.codec.decoder).__name__ == "BertLMHeadModel"
    batch = codec.collate(SENTENCES[:2])
    with torch.no_grad():
        z = codec.encode(batch)
        torch.testing.assert_close(loaded.codec.encode(batch), z, rtol=0, atol=1e-6)
        torch.testing.assert_close(loaded.codec.decoder_logits(batch["dec_ids"], batch["dec_mask"], z),
                                   codec.decoder_logits(batch["dec_ids"], batch["dec_mask"], z), rtol=0, atol=1e-5)
    assert loaded.codec.decode(z) == codec.decode(z)


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    """A small cased byte-level BPE trained on the test sentences (with capitals and a handle)."""
    texts = SENTENCES + ["The Movie Was Great!", "@united My Flight Is Late Again"]
    return str(train_bpe(texts * 5, 350, tmp_path_factory.mktemp("bpe")))


def test_a_transplanted_vocabulary_keeps_the_pretrained_layers_and_starts_from_wordpiece_means(bpe):
    codec = make_codec(tokenizer=bpe)
    reference = AutoModel.from_pretrained(default_encoder_path())
    wordpiece = AutoTokenizer.from_pretrained(default_encoder_path())
    torch.testing.assert_close(codec.decoder.bert.encoder.layer[0].attention.self.query.weight,
                               reference.encoder.layer[0].attention.self.query.weight, rtol=0, atol=0)
    emb = codec.decoder.bert.embeddings.word_embeddings.weight
    assert emb.shape[0] == len(codec.tokenizer) == codec.decoder.config.vocab_size
    assert codec.decoder.cls.predictions.decoder.weight is emb  # still tied
    assert emb.requires_grad  # new rows: they train even where the rest of the decoder is frozen
    # a cased token: its row is the mean of the old rows of its lower-cased WordPiece pieces
    token = max((t for t in codec.tokenizer.get_vocab() if codec.tokenizer.decode([codec.tokenizer.convert_tokens_to_ids(t)]).strip()[:1].isupper()),
                key=len)
    i = codec.tokenizer.convert_tokens_to_ids(token)
    pieces = wordpiece(codec.tokenizer.decode([i]).strip().lower(), add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(emb[i], reference.embeddings.word_embeddings.weight[pieces].mean(0))
    # the decoder's text is cased and round-trips, unlike the uncased WordPiece
    batch = codec.collate(["@united My Flight Is Late Again"])
    assert batch["dec_ids"][0, 0] == codec.tokenizer.eos_token_id == codec.bos_id == codec.eos_id
    assert codec.tokenizer.decode(batch["dec_ids"][0, 1:-1]) == "@united My Flight Is Late Again"


def test_a_transplanted_decoder_is_causal_and_round_trips(bpe, tmp_path):
    codec = make_codec(tokenizer=bpe).eval()
    batch = codec.collate(SENTENCES[:3])
    ids, mask, z = batch["dec_ids"][:, :-1], batch["dec_mask"][:, :-1], torch.randn(3, 8)
    with torch.no_grad():
        base = codec.decoder_logits(ids, mask, z)
        changed = ids.clone()
        changed[:, 3] = 100
        torch.testing.assert_close(codec.decoder_logits(changed, mask, z)[:, :3], base[:, :3], rtol=0, atol=1e-5)
    # (that the warm start learns faster than a random decoder of this shape shows at the corpus' scale, with
    # an 8k vocabulary of whole words, not on eight sentences: docs/text.md has the measurement)
    model = DiLED(codec, MLPSkipNet(8, hidden=16, depth=2, time_dim=8), LatentDiffusion("constant", 100), w=1.0).eval()
    model.save_pretrained(tmp_path / "m")
    loaded = DiLED.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.codec.decoder_logits(ids, mask, z), codec.decoder_logits(ids, mask, z),
                                   rtol=0, atol=1e-5)
        assert loaded.codec.decode(z) == codec.decode(z)
    assert loaded.codec.tokenizer.decode(loaded.codec.collate(["The Movie Was Great!"])["dec_ids"][0, 1:-1]) == \
        "The Movie Was Great!"

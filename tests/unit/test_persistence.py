"""Streamed, sharded save and meta-device load (diled.persistence), and GPT-2's BPE from the offline ranks."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from diled import DiLED, LatentDiffusion, MLPSkipNet
from diled.codecs.text import TextCodec, gpt2_tokenizer_from_tiktoken, train_bpe
from diled.persistence import INDEX_NAME, parameters_on_meta, save_sharded, weight_files

SENTENCES = ["a warm, funny and moving story.", "the flight was late again and nobody told us.",
             "best customer service i have had in years.", "it drags on far too long."]


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    tok = train_bpe(SENTENCES * 10, 300, tmp_path_factory.mktemp("tok"))
    torch.manual_seed(0)
    codec = TextCodec(latent_dim=8, tokenizer=str(tok), max_length=16, decoder_trainable="paper",
                      decoder_config={"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 32})
    model = DiLED(codec, MLPSkipNet(latent_dim=8, hidden=32, depth=2), LatentDiffusion(T=20), w=1.0)
    with torch.no_grad():  # differ from a fresh init with the same seed
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


def test_sharded_save_and_meta_load_round_trip(text_model, tmp_path):
    path = text_model.save_pretrained(tmp_path / "m", max_shard_bytes=40_000)
    index = json.loads((path / INDEX_NAME).read_text())
    files, aliases = weight_files(path)
    assert len(files) > 3 and not (path / "model.safetensors").exists()
    assert set(index["weight_map"].values()) == {f.name for f in files}
    # GPT-2's output layer is its token embedding: stored once, named as an alias
    assert aliases == {"codec.decoder.lm_head.weight": "codec.decoder.transformer.wte.weight"}
    loaded = DiLED.from_pretrained(path)
    assert not any(p.is_meta for p in loaded.parameters())
    assert loaded.codec.decoder.lm_head.weight is loaded.codec.decoder.transformer.wte.weight  # tied again
    for (k1, v1), (k2, v2) in zip(text_model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    # requires_grad survives (the paper's freezing: the decoder's second block is frozen)
    frozen = {n for n, p in text_model.named_parameters() if not p.requires_grad}
    assert frozen and frozen == {n for n, p in loaded.named_parameters() if not p.requires_grad}
    batch = text_model.codec.collate(SENTENCES)
    torch.testing.assert_close(loaded.encode(batch), text_model.encode(batch))
    assert loaded.reconstruct(SENTENCES) == text_model.reconstruct(SENTENCES)


def test_a_small_model_is_one_file_and_a_missing_shard_is_named(text_model, tmp_path):
    one = text_model.save_pretrained(tmp_path / "one")
    assert (one / "model.safetensors").is_file() and not (one / INDEX_NAME).exists()
    many = text_model.save_pretrained(tmp_path / "many", max_shard_bytes=40_000)
    victim = sorted(many.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        DiLED.from_pretrained(many)


def test_a_wrong_shape_names_the_tensor(tmp_path):
    model = DiLED(_vector_codec(), MLPSkipNet(latent_dim=2, hidden=16, depth=2), LatentDiffusion(T=10))
    path = model.save_pretrained(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["denoiser"]["hidden"] = 8
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="denoiser.*shape"):
        DiLED.from_pretrained(path)


def _vector_codec():
    from diled import VectorCodec

    return VectorCodec(data_dim=2, latent_dim=2, hidden=16)


def test_parameters_on_meta_keeps_buffers_real():
    with parameters_on_meta():
        diffusion = LatentDiffusion(T=10)
        net = MLPSkipNet(latent_dim=2, hidden=16, depth=2)
    assert all(p.is_meta for p in net.parameters())
    assert all(not b.is_meta for b in diffusion.buffers()) and len(list(diffusion.buffers())) > 0
    assert not any(p.is_meta for p in MLPSkipNet(latent_dim=2, hidden=16, depth=2).parameters())  # restored


def test_every_rank_gathers_each_shard_but_only_the_writer_writes(text_model, tmp_path):
    calls = []

    class Gather:
        def __init__(self, params):
            calls.append(len(params))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    names = save_sharded(text_model, tmp_path / "reader", max_shard_bytes=40_000, gather=Gather, write=False)
    assert len(calls) == len(names) > 3 and sum(calls) == len({id(p) for p in text_model.parameters()})
    assert not (tmp_path / "reader").exists()


RANKS = Path(os.environ.get("DILED_GPT2_TIKTOKEN") or Path(sys.prefix) / "share" / "diled" / "gpt2.tiktoken")


@pytest.mark.skipif(not RANKS.is_file(), reason="GPT-2's ranks file is installed by scripts/setup.sh")
def test_gpt2_bpe_from_the_offline_ranks_gives_gpt2s_ids(tmp_path):
    from diled.codecs.text import load_decoder_tokenizer

    tok = load_decoder_tokenizer(str(gpt2_tokenizer_from_tiktoken(RANKS, tmp_path)))
    assert len(tok) == 50257 and tok.eos_token_id == 50256
    # GPT-2's published ids (its encoder.json): "Hello" 15496, " world" 995, " The" 383, "." 13
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok(" The quick brown fox jumps.")["input_ids"] == [383, 2068, 7586, 21831, 18045, 13]
    text = "naïve café — 100% @united #tags"
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level: lossless


def test_decoder_vocab_size_can_be_set(tmp_path):
    tok = train_bpe(SENTENCES * 10, 300, tmp_path / "tok")
    codec = TextCodec(latent_dim=4, tokenizer=str(tok), max_length=8,
                      decoder_config={"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 16, "vocab_size": 320})
    assert codec.decoder.config.vocab_size == 320
    with pytest.raises(ValueError, match="smaller than its tokenizer"):
        TextCodec(latent_dim=4, tokenizer=str(tok), max_length=8,
                  decoder_config={"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 16, "vocab_size": 10})

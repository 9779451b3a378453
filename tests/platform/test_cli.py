"""`python -m diled_platform` (the `diled` command) on a saved model."""

import json
import subprocess
import sys

import pytest
import torch

from diled import DiLED, LatentDiffusion, MLPSkipNet, VectorCodec


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = DiLED(VectorCodec(2, 2, hidden=16, depth=1), MLPSkipNet(2, hidden=16, depth=2, time_dim=8),
                  LatentDiffusion("constant", 20), w=1.0)
    return model.save_pretrained(tmp_path_factory.mktemp("cli") / "model"), model


def cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "diled_platform", *args], capture_output=True, text=True,
                          timeout=120, input=stdin)


def lines(out):
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_generate_matches_the_library(model_dir):
    path, model = model_dir
    out = cli("generate", "--model", str(path), "-n", "3", "--seed", "4", "--steps", "5")
    assert out.returncode == 0, out.stderr
    assert [r["output"] for r in lines(out)] == model.generate(3, steps=5, seed=4)


def test_encode_reconstruct_interpolate(model_dir):
    path, model = model_dir
    out = cli("encode", "--model", str(path), "[2.0, 0.0]", "[0.0, -2.0]")
    assert out.returncode == 0, out.stderr
    got = torch.tensor([r["latent"] for r in lines(out)])
    torch.testing.assert_close(got, model.encode([[2.0, 0.0], [0.0, -2.0]]))
    out = cli("reconstruct", "--model", str(path), "--file", "-", stdin="[2.0, 0.0]\n[1.0, 1.0]\n")
    assert out.returncode == 0 and len(lines(out)) == 2
    out = cli("interpolate", "--model", str(path), "--num", "4", "[2.0, 0.0]", "[0.0, -2.0]")
    assert out.returncode == 0 and [r["alpha"] for r in lines(out)] == pytest.approx([0, 1 / 3, 2 / 3, 1])


def test_errors_are_clear(model_dir, tmp_path):
    path, _ = model_dir
    out = cli("generate", "--model", str(tmp_path / "missing"))
    assert out.returncode != 0 and "no such directory" in out.stderr
    out = cli("encode", "--model", str(path), "not json")
    assert out.returncode != 0 and "JSON lists" in out.stderr
    out = cli("interpolate", "--model", str(path), "[1, 1]")
    assert out.returncode != 0 and "exactly two inputs" in out.stderr


@pytest.mark.parametrize("vocabulary", ["wordpiece", "transplanted bpe"])
def test_a_text_model_with_a_bert_decoder(tmp_path, vocabulary):
    from diled.codecs.text import TextCodec, train_bpe

    tok = str(train_bpe(["A warm and funny story.", "It drags on.", "@united late again"] * 20, 300, tmp_path / "tok")) \
        if vocabulary == "transplanted bpe" else None
    torch.manual_seed(0)
    # the transplanted BPE with slots and beam search as the saved default decoding: the preset's form
    codec = TextCodec(latent_dim=4, decoder_kind="bert", decoder_layers=1, encoder_layers=1, max_length=16, tokenizer=tok,
                      latent_slots=2 if tok else 1, slot_tokens=8,
                      decoding={"strategy": "beam", "num_beams": 3, "length_penalty": 0.3} if tok else None)
    model = DiLED(codec, MLPSkipNet(4, hidden=16, depth=2, time_dim=8), LatentDiffusion("constant", 20), w=1.0).eval()
    path = model.save_pretrained(tmp_path / "bert")
    texts = ["a warm and funny story.", "it drags on."]
    out = cli("reconstruct", "--model", str(path), *texts)
    assert out.returncode == 0, out.stderr
    assert [r["output"] for r in lines(out)] == model.reconstruct(texts)
    out = cli("generate", "--model", str(path), "-n", "2", "--seed", "1", "--steps", "5", "--strategy", "beam",
              "--num-beams", "2", "--length-penalty", "1.0")
    assert out.returncode == 0, out.stderr
    assert [r["output"] for r in lines(out)] == model.generate(2, steps=5, seed=1, strategy="beam", num_beams=2,
                                                               length_penalty=1.0)
    out = cli("reconstruct", "--model", str(path), "--strategy", "greedy", *texts)
    assert [r["output"] for r in lines(out)] == model.reconstruct(texts, strategy="greedy")
    out = cli("reconstruct", "--model", str(path), "--strategy", "beam", "--num-beams", "0", *texts)
    assert out.returncode != 0 and "num_beams must be an integer >= 1, got 0" in out.stderr


def test_a_text_model_with_a_causal_lm_decoder(tmp_path):
    """The causal-LM kind (a tiny random Llama: grouped KV heads, rotary positions) through every verb."""
    from diled.codecs.text import TextCodec, train_bpe

    tok = str(train_bpe(["A warm and funny story.", "It drags on.", "@united late again"] * 20, 300, tmp_path / "tok"))
    llama = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}
    torch.manual_seed(0)
    codec = TextCodec(latent_dim=4, decoder_kind="causal_lm", decoder_config=llama, encoder_layers=1, max_length=16,
                      tokenizer=tok, latent_slots=2, slot_tokens=8)
    model = DiLED(codec, MLPSkipNet(4, hidden=16, depth=2, time_dim=8), LatentDiffusion("constant", 20), w=1.0).eval()
    path = model.save_pretrained(tmp_path / "llama")
    texts = ["a warm and funny story.", "it drags on."]
    out = cli("reconstruct", "--model", str(path), *texts)
    assert out.returncode == 0, out.stderr
    assert [r["output"] for r in lines(out)] == model.reconstruct(texts)
    out = cli("generate", "--model", str(path), "-n", "2", "--seed", "1", "--steps", "5")
    assert out.returncode == 0, out.stderr
    assert [r["output"] for r in lines(out)] == model.generate(2, steps=5, seed=1)
    out = cli("encode", "--model", str(path), texts[0])
    assert out.returncode == 0, out.stderr
    torch.testing.assert_close(torch.tensor([lines(out)[0]["latent"]]), model.encode(texts[:1]))
    out = cli("interpolate", "--model", str(path), "--num", "3", "--steps", "5", *texts)
    assert out.returncode == 0, out.stderr
    assert [r["output"] for r in lines(out)] == model.interpolate(texts[0], texts[1], num=3, steps=5)


def test_guided_generate_and_edit(tmp_path):
    """--condition and --guidance on generate, and the edit verb, give the library's answers."""
    torch.manual_seed(0)
    model = DiLED(VectorCodec(2, 2, hidden=16, depth=1), MLPSkipNet(2, hidden=16, depth=2, time_dim=8,
                                                                    classes=["low", "high"]),
                  LatentDiffusion("constant", 20), w=1.0).eval()
    path = model.save_pretrained(tmp_path / "conditional")
    out = cli("generate", "--model", str(path), "-n", "3", "--seed", "2", "--steps", "5", "--condition", "high",
              "--guidance", "2.5")
    assert out.returncode == 0, out.stderr
    assert [r["output"] for r in lines(out)] == model.generate(3, steps=5, seed=2, condition="high", guidance_scale=2.5)
    out = cli("generate", "--model", str(path), "-n", "3", "--seed", "2", "--steps", "5", "--prior-temperature", "0.5")
    assert out.returncode == 0, out.stderr
    assert [r["output"] for r in lines(out)] == model.generate(3, steps=5, seed=2, prior_temperature=0.5)
    out = cli("generate", "--model", str(path), "--prior-temperature", "3")
    assert out.returncode != 0 and "prior_temperature must be a number in (0, 2.0], got 3.0" in out.stderr
    out = cli("generate", "--model", str(path), "-n", "3", "--seed", "2", "--steps", "5", "--eta", "1")
    assert out.returncode == 0, out.stderr
    assert [r["output"] for r in lines(out)] == model.generate(3, steps=5, seed=2, eta=1.0) != \
        model.generate(3, steps=5, seed=2)
    out = cli("generate", "--model", str(path), "--eta", "1.5")
    assert out.returncode != 0 and "eta must be a number in [0, 1], got 1.5" in out.stderr
    out = cli("edit", "--model", str(path), "--condition", "low", "--strength", "0.7", "--steps", "5", "[1.0, 2.0]")
    assert out.returncode == 0, out.stderr
    # the same numbers up to the last bits: in another process the BLAS may sum in another order (measured on an
    # AMD EPYC: one of the two numbers differed by 3e-8)
    torch.testing.assert_close(torch.tensor([r["output"] for r in lines(out)]), torch.tensor(
        model.edit([[1.0, 2.0]], "low", strength=0.7, guidance_scale=3.0, steps=5)), rtol=1e-5, atol=1e-6)
    # a value guide: "--condition '>= y'"
    from diled.guidance import LatentRegressor, save_guide

    plain = DiLED(VectorCodec(2, 2, hidden=16, depth=1), MLPSkipNet(2, hidden=16, depth=2, time_dim=8),
                  LatentDiffusion("constant", 20), w=1.0).eval()
    valued = plain.save_pretrained(tmp_path / "valued")
    save_guide(LatentRegressor(2, "height", hidden=8, depth=1, time_dim=8), valued)
    plain = DiLED.from_pretrained(valued)
    out = cli("generate", "--model", str(valued), "-n", "2", "--seed", "1", "--steps", "5", "--condition", ">= 0.5")
    assert out.returncode == 0, out.stderr
    assert [r["output"] for r in lines(out)] == plain.generate(2, steps=5, seed=1, condition=">= 0.5", guidance_scale=3.0)
    out = cli("generate", "--model", str(path), "--condition", "sideways")
    assert out.returncode != 0 and "unknown condition 'sideways'; this model knows ['low', 'high']" in out.stderr
    out = cli("edit", "--model", str(path), "--condition", "low", "--strength", "2", "[1.0, 2.0]")
    assert out.returncode != 0 and "strength must be a number in [0, 1]" in out.stderr

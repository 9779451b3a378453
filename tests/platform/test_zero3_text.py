"""Text DiLED under DeepSpeed ZeRO-3 on 2 Ray Train workers: built partitioned (no worker ever holds the
full parameter set), trained (with activation checkpointing: blocks recomputed from partitions), exported shard by shard and loaded onto the meta device, with the same
logits as the trained model."""

import json

import pytest
import torch

from diled import DiLED
from diled_platform.config import deepspeed_config_path, load_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TEXTS = ["the film is a quiet triumph .", "@united my bag never arrived", "a mess of a movie , sadly .",
         "what a lovely surprise this was !", "i would not see it again", "thanks for the fast reply"]


def zero3_all_partitioned(tmp_path):
    """The shipped zero3.json, with every parameter partitioned (it keeps tensors under 10k elements whole)."""
    ds = json.loads(deepspeed_config_path("zero3").read_text())
    ds["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path = tmp_path / "zero3_all.json"
    path.write_text(json.dumps(ds))
    return path


def probe(tmp_path, name, job, steps):
    """Run ``zero3_probe_loop`` on 2 Ray Train workers for ``job``; returns its output folder."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from diled_platform.training.probes import zero3_probe_loop

    out = tmp_path / name
    out.mkdir()
    TorchTrainer(zero3_probe_loop, train_loop_config={"job": job.to_dict(), "steps": steps, "texts": TEXTS,
                                                      "out_dir": str(out)},
                 scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.9}),
                 run_config=ray.train.RunConfig(storage_path=str(tmp_path), name=name)).fit()
    return out


DECODERS = {
    "gpt2": "decoder_kind: gpt2, decoder_config: {n_layer: 2, n_embd: 64, n_head: 2, n_positions: 32}",
    # the causal-LM kind with another architecture (grouped KV heads, rotary positions): its modelling
    # module is imported before zero.Init (the codec's prepare_partitioned_build), not only GPT-2's
    "llama": "decoder_kind: causal_lm, decoder_config: {model_type: llama, hidden_size: 64, intermediate_size: 128,"
             " num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 32}",
}


@pytest.mark.parametrize("decoder", ["gpt2", "llama"])
def test_zero3_text_is_built_partitioned_and_exports_the_trained_logits(ray_local, tmp_path, decoder):
    from diled.codecs.text import train_bpe

    tok = train_bpe(TEXTS * 20, 300, tmp_path / "tok")
    cfg = load_config("text-cpu", [
        f"--scaling.deepspeed={zero3_all_partitioned(tmp_path)}", "--scaling.precision=fp32",  # exact fp32 exports
        "--model.prior_hidden=64", "--model.prior_depth=2",
        "--model.latent_dim=16", "--optim.decay=constant", "--optim.warmup_steps=0", "--optim.lr=1e-3",
        f"--model.codec_args={{tokenizer: {tok}, max_length: 16, encoder_layers: 2, encoder_trainable_layers: 1,"
        f" decoder_trainable: paper, activation_checkpointing: true, {DECODERS[decoder]}}}"])
    out = probe(tmp_path, "trained", cfg, steps=3)

    # no worker ever held a whole tensor, let alone the whole model: every one is a half partition
    for rank in range(2):
        held = json.loads((out / f"residency{rank}.json").read_text())
        assert held["largest_param_held"] <= (held["largest_param"] + 1) // 2, held
        assert held["param_elements_held"] <= 0.5 * held["param_elements"] + 1000, held

    # the streamed export, loaded onto the meta device and filled in place, gives the trained logits
    from safetensors.torch import load_file

    trained = load_file(str(out / "logits.safetensors"))
    model = DiLED.from_pretrained(out / "model")
    assert not any(p.is_meta for p in model.parameters())
    batch = model.prepare_batch(model.codec.collate(TEXTS))
    with torch.no_grad():
        z = model.codec.encode(batch)
        logits = model.codec.decoder_logits(batch["dec_ids"][:, :-1], batch["dec_mask"][:, :-1], z)
    torch.testing.assert_close(z, trained["z"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, trained["logits"], rtol=1e-4, atol=1e-4)

    # model.init_from under ZeRO-3: the export's weights copied into a partitioned model, file by file
    from diled_platform.config import replace

    again = probe(tmp_path, "init-from", replace(cfg, model={"init_from": str(out / "model")}), steps=0)
    torch.testing.assert_close(load_file(str(again / "logits.safetensors"))["logits"], trained["logits"],
                               rtol=1e-5, atol=1e-5)


def test_zero3_loads_a_pretrained_decoder_into_the_partitions(ray_local, tmp_path):
    """A decoder given by local path (as a hub name would be) is loaded by transformers straight into the
    ZeRO-3 partitions: the export of the untrained model holds exactly its weights."""
    from safetensors.torch import load_file
    from transformers import GPT2Config, GPT2LMHeadModel

    from diled.codecs.text import load_decoder_tokenizer, train_bpe

    tok = train_bpe(TEXTS * 20, 300, tmp_path / "tok")
    torch.manual_seed(1)
    vocab = len(load_decoder_tokenizer(str(tok)))
    pretrained = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=32, vocab_size=vocab))
    pretrained.save_pretrained(tmp_path / "gpt2-tiny")
    cfg = load_config("text-cpu", [
        f"--scaling.deepspeed={zero3_all_partitioned(tmp_path)}", "--scaling.precision=fp32",  # exact fp32 exports
        "--model.prior_hidden=64", "--model.prior_depth=2",
        "--model.latent_dim=16", "--optim.decay=constant", "--optim.warmup_steps=0",
        f"--model.codec_args={{tokenizer: {tok}, decoder: {tmp_path / 'gpt2-tiny'}, max_length: 16, encoder_layers: 2,"
        " encoder_trainable_layers: 1, decoder_trainable: paper}"])
    out = probe(tmp_path, "pretrained", cfg, steps=0)
    held = json.loads((out / "residency0.json").read_text())
    assert held["largest_param_held"] <= (held["largest_param"] + 1) // 2, held
    exported = DiLED.from_pretrained(out / "model").codec.decoder.state_dict()
    for key, value in load_file(str(tmp_path / "gpt2-tiny" / "model.safetensors")).items():
        name = key if key in exported else f"transformer.{key}"
        torch.testing.assert_close(exported[name], value, rtol=0, atol=0, msg=key)


def test_zero3_bf16_on_cpu_keeps_16_bit_partitions_and_exports_them(ray_local, tmp_path):
    """``scaling.precision: bf16`` (the text-xl-cpu preset's) under ZeRO-3 on CPU: built partitioned, trained,
    exported in bf16, and the exported weights, run in bf16, give the trained model's logits (to bf16's precision)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from diled.codecs.text import train_bpe

    tok = train_bpe(TEXTS * 20, 300, tmp_path / "tok")
    cfg = load_config("text-cpu", [
        f"--scaling.deepspeed={zero3_all_partitioned(tmp_path)}", "--scaling.precision=bf16",
        "--model.prior_hidden=64", "--model.prior_depth=2", "--model.latent_dim=16", "--optim.decay=constant",
        "--optim.warmup_steps=0", "--optim.lr=1e-3",
        f"--model.codec_args={{tokenizer: {tok}, max_length: 16, encoder_layers: 2, encoder_trainable_layers: 1,"
        " decoder_trainable: paper, decoder_config: {n_layer: 2, n_embd: 64, n_head: 2, n_positions: 32}}"])
    out = probe(tmp_path, "bf16", cfg, steps=3)
    held = json.loads((out / "residency0.json").read_text())
    assert held["largest_param_held"] <= (held["largest_param"] + 1) // 2, held
    files = sorted((out / "model").glob("*.safetensors"))
    assert files
    for path in files:
        with safe_open(str(path), "pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        assert dtypes <= {"BF16", "I64"}, (path.name, dtypes)
    trained = load_file(str(out / "logits.safetensors"))
    assert trained["logits"].dtype == torch.bfloat16
    model = DiLED.from_pretrained(out / "model")  # fp32 for inference, holding the bf16 values
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.encode(TEXTS[:2]).dtype == torch.float32
    model = model.to(torch.bfloat16).eval()
    batch = model.codec.collate(TEXTS)
    with torch.no_grad():
        z = model.codec.encode(batch)
        logits = model.codec.decoder_logits(batch["dec_ids"][:, :-1], batch["dec_mask"][:, :-1], z)
    # to bf16's precision (the workers run one thread and ZeRO-3's gathered copies, so sums differ in
    # their last bit; measured: 0.002 on z, 0.004 on the logits), the same next-token choices almost everywhere
    torch.testing.assert_close(z, trained["z"], rtol=2 ** -7, atol=2 ** -8)
    torch.testing.assert_close(logits, trained["logits"], rtol=2 ** -6, atol=0.02)
    assert (logits.argmax(-1) == trained["logits"].argmax(-1)).float().mean() > 0.95

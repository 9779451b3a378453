"""What a training step of the ``text-cpu`` preset costs with each decoder and latent it has had: the
preset as it is (MiniLM's first layer warm-started as the decoder, the 8k BPE transplanted, the latent as
8 slots of 64) against the same decoder with one 64-d latent (the preset of 2026-12-04/05), the decoder
before that (a 2 x 256 GPT-2 from scratch on the same BPE, one 64-d latent), and the bert decoder with
MiniLM's own 30,522-word WordPiece vocabulary. Single process, fp32, AdamW, on the same length-bucketed
corpus batches of 32 (one Ray step: 2 workers x 16), steps alternated (A/B/C/D) and medians compared.

    .venv/bin/python benchmarks/text_decoders.py            # ~3 minutes on 2 cores
    .venv/bin/python benchmarks/text_decoders.py --repeats 30 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from functools import partial
from pathlib import Path

from _common import alternate, length_bucket, markdown_table, median, n_trainable, optimizer_step, spread, text_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

OLD_DECODER = {"decoder_config": {"n_layer": 2, "n_embd": 256, "n_head": 4, "n_positions": 64, "resid_pdrop": 0.0,
                                  "embd_pdrop": 0.0, "attn_pdrop": 0.0}}
BERT_DECODER = {"decoder_kind": "bert", "decoder_layers": 1,
                "decoder_config": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}}


ONE_VECTOR = {"latent_slots": 1, "latent_dim": 64}
BASE = "gpt2 2 x 256 from scratch, BPE, one 64-d latent (text-cpu until 2026-12-04)"


def variants(tokenizer: Path) -> dict[str, dict]:
    """codec_args (and latent_dim) of each variant: the preset's own, with the decoder or latent swapped."""
    from diled_platform.config import load_config

    cfg = load_config("text-cpu")
    preset = {**cfg.model.codec_args, "latent_dim": cfg.model.latent_dim}
    preset.pop("vocab_size", None)
    for key in ("decoder_kind", "decoder_layers", "decoder_config"):
        preset.pop(key, None)
    bpe = {**preset, "tokenizer": str(tokenizer)}
    slots = preset.get("latent_slots", 1)
    now = f"text-cpu now: bert 1 x 384 warm, BPE transplanted, {slots} latent slots x {preset['latent_dim'] // slots}"
    return {now: {**bpe, **BERT_DECODER},
            "the same with one 64-d latent (text-cpu 2026-12-04/05)": {**bpe, **BERT_DECODER, **ONE_VECTOR},
            BASE: {**bpe, **OLD_DECODER, **ONE_VECTOR},
            "bert 1 x 384 warm, MiniLM WordPiece (30,522), one 64-d latent": {
                **{k: v for k, v in preset.items() if k != "tokenizer"}, **BERT_DECODER, **ONE_VECTOR}}


def build(codec_args: dict, seed: int = 0):
    import torch

    from diled import DiLED
    from diled_platform.config import load_config

    config = load_config("text-cpu").model_config()
    config["codec"] = {"name": "text", **codec_args}
    config["denoiser"] = {**config["denoiser"], "latent_dim": codec_args["latent_dim"]}
    torch.manual_seed(seed)
    return DiLED.from_config(config).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    texts = length_bucket(args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        tok = text_tokenizer(Path(tmp))
        steps, sizes, tokens = {}, {}, {}
        for name, codec_args in variants(tok).items():
            model = build(codec_args)
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=1e-4)
            batch = model.prepare_batch(model.codec.collate(texts))
            steps[name], sizes[name] = partial(optimizer_step, model, opt, batch), n_trainable(model)
            tokens[name] = int(batch["dec_mask"].sum())
        times = alternate(steps, args.repeats)
    base = median(times[BASE])
    rows = [[name, f"{sizes[name] / 1e6:.1f} M", tokens[name], spread(times[name]), f"{median(times[name]) / base:.2f}"]
            for name in steps]
    print(f"torch threads {args.threads}, batch {args.batch}, {args.repeats} alternated steps each")
    print(markdown_table(["decoder", "trainable", "decoder tokens in the batch", "ms/step median (min-max)",
                          "/ GPT-2 one vector"], rows))


if __name__ == "__main__":
    main()

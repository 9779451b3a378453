"""What the causal-LM decoder kind costs: a training step of the ``text-smollm2-cpu`` codec (the offline
SmolLM2-135M decoder, 30 x 576) in fp32 and bf16 autocast, with the paper's freezing (embeddings, first
block and latent connectors train) and with everything training, against a step of ``text-cpu``'s codec
(MiniLM's first layer warm-started, the 8k BPE); and decoding speed (batched greedy decoding with the KV
cache, the latent memory its first entries) of the same two. Single process, AdamW, on one length bucket
of real corpus sentences; steps alternated between variants and medians compared.

    .venv/bin/python benchmarks/causal_lm_decoder.py                 # ~5 minutes on 2 cores
    .venv/bin/python benchmarks/causal_lm_decoder.py --repeats 3 --batch 16
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from _common import alternate, length_bucket, markdown_table, median, n_trainable, optimizer_step, spread, text_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))


def build(preset: str, overrides: dict, tokenizer: Path | None):
    import torch

    from diled import DiLED
    from diled_platform.config import load_config

    cfg = load_config(preset)
    args = {k: v for k, v in cfg.model.codec_args.items() if k != "vocab_size"}
    if args.get("tokenizer") == "train":
        args["tokenizer"] = str(tokenizer)
    config = cfg.model_config()
    config["codec"] = {"name": "text", **args, **overrides, "latent_dim": cfg.model.latent_dim}
    torch.manual_seed(0)
    return DiLED.from_config(config).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decode-n", type=int, default=64, help="latents decoded per generation timing")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    texts = length_bucket(args.batch)
    variants = {
        "text-cpu codec (bert 1 x 384, BPE), fp32": ("text-cpu", {}, False),
        "SmolLM2-135M, paper freezing, fp32": ("text-smollm2-cpu", {"decoder_trainable": "paper"}, False),
        "SmolLM2-135M, paper freezing, bf16 autocast": ("text-smollm2-cpu", {"decoder_trainable": "paper"}, True),
        "SmolLM2-135M, all training, fp32": ("text-smollm2-cpu", {"decoder_trainable": "all"}, False),
        "SmolLM2-135M, all training, bf16 autocast": ("text-smollm2-cpu", {"decoder_trainable": "all"}, True),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tok = text_tokenizer(Path(tmp))
        models, steps, sizes, tokens = {}, {}, {}, {}
        for name, (preset, overrides, bf16) in variants.items():
            key = (preset, overrides.get("decoder_trainable"))
            if key not in models:
                models[key] = build(preset, overrides, tok)
            model = models[key]
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=1e-5)
            batch = model.prepare_batch(model.codec.collate(texts))

            steps[name], sizes[name] = partial(optimizer_step, model, opt, batch, bf16), n_trainable(model)
            tokens[name] = int(batch["dec_mask"].sum())
        times = alternate(steps, args.repeats)
        base = median(times[next(iter(variants))])
        rows = [[name, f"{sizes[name] / 1e6:.1f} M", tokens[name], spread(times[name]),
                 f"{median(times[name]) / base:.2f}"] for name in steps]
        print(f"torch threads {args.threads}, batch {args.batch}, {args.repeats} alternated steps each")
        print(markdown_table(["codec", "trainable", "decoder tokens in the batch", "ms/step median (min-max)",
                              "/ text-cpu"], rows))

        rows = []
        z = torch.randn(args.decode_n, 512, generator=torch.Generator().manual_seed(0)) * 0.1
        for key, model in models.items():
            model.eval()
            with torch.no_grad():
                model.codec.decode(z[:2], max_new_tokens=4)  # warm-up
                t0 = time.perf_counter()
                ids = model.codec.decode_ids(z, max_new_tokens=24)
                dt = time.perf_counter() - t0
            n_tokens = sum(len(s) + 1 for s in ids)
            rows.append([f"{key[0]} ({key[1]})", args.decode_n, n_tokens, f"{dt:.2f}",
                         f"{args.decode_n / dt:.1f}", f"{n_tokens / dt:.0f}"])
    print(f"\ngreedy decoding with the KV cache, {args.decode_n} latents at once, at most 24 new tokens (fp32)")
    print(markdown_table(["codec (decoder_trainable)", "latents", "tokens", "seconds", "sentences/s", "tokens/s"], rows))


if __name__ == "__main__":
    main()

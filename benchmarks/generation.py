"""Generation speed: batched KV-cache decoding (``TextCodec.decode``) against the naive loop that re-runs
the decoder over the whole prefix for every new token, beam search (2, 4 and 8 beams: the text-cpu
preset's default decoding is 4) against greedy, and the prior's DDIM sampler at 10/20/50 steps against
DDPM's ancestral sampler over all T steps.

    .venv/bin/python benchmarks/generation.py                          # text-cpu architecture, ~3 minutes
    .venv/bin/python benchmarks/generation.py --model runs/text-cpu/model   # a trained model

Without --model the model is the text-cpu architecture, untrained: an untrained decoder never emits EOS,
so every sentence runs to the 40-token limit (the worst case; both loops do the same work). With a
trained model the DDIM/DDPM table also gives the Frechet distance between sampled latents and the
encoder means of 1,000 corpus sentences (lower: the samples sit where the data's latents are).
Both decoders are greedy and must produce the same text: the script checks it before timing.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import alternate, corpus_texts, markdown_table, median, text_model, text_tokenizer


def naive_decode(codec, z, max_new_tokens: int | None = None) -> list[str]:
    """Greedy decoding without a cache: every step runs the decoder over the full prefix (what the KV
    cache saves). Same stopping rule and output as ``codec.decode(z)``."""
    import torch

    steps = min(max_new_tokens or codec.max_length, codec.n_positions - 1)
    n = z.shape[0]
    ids = torch.full((n, 1), codec.bos_id, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    out = []
    with torch.no_grad():
        for _ in range(steps):
            logits = codec.decoder_logits(ids, torch.ones_like(ids), z)[:, -1].float()
            nxt = torch.where(done, torch.full_like(done, codec.eos_id, dtype=torch.long), logits.argmax(-1))
            out.append(nxt)
            done |= nxt == codec.eos_id
            if bool(done.all()):
                break
            ids = torch.cat([ids, nxt.unsqueeze(1)], dim=1)
    texts = []
    for seq in torch.stack(out, dim=1).tolist():
        seq = seq[: seq.index(codec.eos_id)] if codec.eos_id in seq else seq
        texts.append(codec.tokenizer.decode(seq, skip_special_tokens=True).strip())
    return texts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a save_pretrained folder (default: the untrained text-cpu architecture)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32], help="sentences per decode call")
    parser.add_argument("--latents", type=int, default=256, help="latents per sampler call")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch
    from diled import DiLED
    from diled.metrics.image import frechet_distance

    torch.set_num_threads(2)
    if args.model:
        model = DiLED.from_pretrained(args.model)
    else:
        model = text_model("text-cpu", text_tokenizer(Path(tempfile.mkdtemp(prefix="generation_"))))
    model.eval()
    codec = model.codec
    g = torch.Generator().manual_seed(0)

    rows = []
    for n in args.batch:
        z = torch.randn(n, model.latent_dim, generator=g)
        cached, naive = codec.decode(z, strategy="greedy"), naive_decode(codec, z)
        if cached != naive:
            raise SystemExit(f"KV-cache and naive greedy decoding disagree at batch {n}: {cached[:2]} vs {naive[:2]}")
        decoders = {"kv": lambda: codec.decode(z, strategy="greedy"), "naive": lambda: naive_decode(codec, z)}
        decoders.update({f"beam {k}": (lambda k=k: codec.decode(z, strategy="beam", num_beams=k)) for k in (2, 4, 8)})
        times = alternate(decoders, repeats=args.repeats)
        kv, nv = median(times["kv"]), median(times["naive"])
        rows.append([n, f"{n / nv:.1f}", f"{n / kv:.1f}", f"**{nv / kv:.2f}**"]
                    + [f"{n / median(times[f'beam {k}']):.1f} ({median(times[f'beam {k}']) / kv:.1f}x)" for k in (2, 4, 8)])
        print(f"batch {n}: naive {nv * 1e3:.0f} ms, KV cache {kv * 1e3:.0f} ms, x{nv / kv:.2f}", flush=True)
    print("\nDecoding (greedy, same output checked; beam search beside it), sentences per second, medians of "
          "alternating runs:\n")
    print(markdown_table(["batch", "naive recompute", "KV cache", "speed-up", "beam 2 (time / greedy)",
                          "beam 4", "beam 8"], rows))

    reference = None
    if args.model:
        reference = model.encode(corpus_texts(1000))
    T = model.diffusion.T
    samplers = {f"DDIM {s}": ("ddim", s) for s in (10, 20, 50)}
    samplers[f"DDPM {T}"] = ("ddpm", None)
    z_T = torch.randn(args.latents, model.latent_dim, generator=g)
    run = {name: (lambda kind=kind, s=s: model.sample_latents(args.latents, steps=s, sampler=kind, z_T=z_T,
                                                               generator=torch.Generator().manual_seed(1)))
           for name, (kind, s) in samplers.items()}
    times = alternate(run, repeats=max(2, args.repeats // 2))
    ddpm = median(times[f"DDPM {T}"])
    srows = []
    for name, fn in run.items():
        steps = T if name.startswith("DDPM") else int(name.split()[1])
        row = [name, steps, f"{median(times[name]) * 1e3:.1f}", f"{args.latents / median(times[name]):.0f}",
               f"**{ddpm / median(times[name]):.1f}**"]
        if reference is not None:
            row.append(f"{frechet_distance(fn(), reference):.3f}")
        srows.append(row)
    print(f"\nPrior sampling, {args.latents} latents per call (prior {model.denoiser.hidden} x "
          f"{model.denoiser.depth}), medians of alternating runs:\n")
    header = ["sampler", "network calls", "ms per call", "latents / s", "speed-up vs DDPM"]
    print(markdown_table(header + (["FD to encoder latents"] if reference is not None else []), srows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

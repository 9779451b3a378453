"""What the joint prior costs per training step: a DiLED step against the same codec trained as a plain
autoencoder (``objective="autoencoder"``: reconstruction only, prior frozen), single process, fp32,
AdamW, on real corpus batches, for the text-cpu preset's architecture and a scaled-up one.

    .venv/bin/python benchmarks/step_cost.py                     # ~6 minutes on 2 cores
    .venv/bin/python benchmarks/step_cost.py --runs text-cpu:32 --repeats 20

Steps alternate DiLED / autoencoder (A/B) and the medians are compared. A second table splits the DiLED
step: the prior's own forward/backward on the latents, and the optimizer update of the prior's weights,
which is where its cost goes (it scales with its parameters, not with the sentence length).

Each is measured with torch's AdamW as it runs by default on CPU (``loop``: one small op per tensor,
what the platform used before) and fused (``fused``: one kernel over all of a group's tensors, what the
platform's DeepSpeed config now asks for, ``optim.fused``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import TEXT_SIZES, alternate, corpus_texts, markdown_table, median, n_trainable, spread, \
    text_model, text_tokenizer


def make_step(model, batch, optimizer: str):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _optimizer(params, optimizer)

    def step():
        out = model(batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
    return step


def _optimizer(params, kind: str):
    import torch

    if kind == "fused":
        return torch.optim.AdamW(params, lr=1e-4, fused=True)
    if kind == "foreach":
        return torch.optim.AdamW(params, lr=1e-4, foreach=True)
    if kind == "loop":
        return torch.optim.AdamW(params, lr=1e-4, foreach=False)
    raise ValueError(f"unknown optimizer variant {kind!r}; valid: loop, foreach, fused")


def prior_parts(model, batch, optimizer: str) -> dict:
    """The prior's share of a DiLED step, timed on its own: forward + backward of its loss on the
    encoder's latents, and the AdamW update of its weights."""
    import torch

    with torch.no_grad():
        z0 = model.encode(batch)
    z1 = z0 + model.diffusion.encoder_noise_std * torch.randn_like(z0)
    params = list(model.denoiser.parameters())
    opt = _optimizer(params, optimizer)

    def fwd_bwd():
        t = model.diffusion.sample_t(z0.shape[0])
        loss = model.diffusion.training_losses(model.denoiser, z0, z1, t)["diff"].mean()
        opt.zero_grad(set_to_none=False)
        loss.backward()

    def update():
        opt.step()

    fwd_bwd()
    return alternate({"prior forward+backward": fwd_bwd, "prior optimizer update": update}, repeats=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=["text-cpu:32", "scaled:8", "scaled:32"],
                        help=f"size:batch pairs; sizes: {', '.join(TEXT_SIZES)}")
    parser.add_argument("--repeats", type=int, default=6, help="timed steps per model (after 2 warm-up)")
    parser.add_argument("--optimizers", nargs="+", default=["loop", "fused"],
                        help="AdamW implementations: loop (torch's CPU default), foreach, fused")
    args = parser.parse_args()
    runs = []
    for item in args.runs:
        size, _, bs = item.partition(":")
        if size not in TEXT_SIZES or not bs.isdigit() or int(bs) < 1:
            parser.error(f"--runs: {item!r} is not size:batch with size in {list(TEXT_SIZES)} and batch >= 1")
        runs.append((size, int(bs)))

    import torch

    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="step_cost_"))
    tok = text_tokenizer(tmp)
    texts = corpus_texts(4000)
    rows, parts_rows = [], []
    for size, bs in runs:
        diled, ae = text_model(size, tok, "diled"), text_model(size, tok, "autoencoder")
        batch = diled.codec.collate(texts[:bs])
        n_codec, n_prior = n_trainable(diled.codec), n_trainable(diled.denoiser)
        print(f"\n[{size}] trainable: codec {n_codec / 1e6:.1f} M, prior {n_prior / 1e6:.1f} M; batch {bs} "
              f"sentences, {int(batch['dec_mask'].sum())} decoder tokens", flush=True)
        for kind in args.optimizers:
            times = alternate({"diled": make_step(diled, batch, kind), "autoencoder": make_step(ae, batch, kind)},
                              repeats=args.repeats, warmup=2)
            ratio = median(times["diled"]) / median(times["autoencoder"])
            print(f"  AdamW {kind}: DiLED {spread(times['diled'])} ms, autoencoder {spread(times['autoencoder'])} "
                  f"ms, ratio {ratio:.3f}", flush=True)
            rows.append([size, kind, f"{n_codec / 1e6:.1f} M + {n_prior / 1e6:.1f} M", bs,
                         f"{median(times['autoencoder']) * 1e3:.0f}", f"{median(times['diled']) * 1e3:.0f}",
                         f"**{ratio:.3f}**"])
            parts = prior_parts(diled, batch, kind)
            share = {k: median(v) / median(times["diled"]) for k, v in parts.items()}
            parts_rows.append([size, kind, bs] + [f"{median(v) * 1e3:.1f} ({share[k]:.1%})" for k, v in parts.items()])
        del diled, ae
    print("\nStep time, median ms (alternating A/B):\n")
    print(markdown_table(["size", "AdamW", "trainable codec + prior", "batch", "autoencoder ms", "DiLED ms",
                          "DiLED / AE"], rows))
    print("\nThe prior's parts of a DiLED step, median ms (share of the DiLED step):\n")
    print(markdown_table(["size", "AdamW", "batch", "prior forward+backward", "prior optimizer update"], parts_rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

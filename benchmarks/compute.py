"""How close to the hardware the text training step runs, and data-parallel scaling from 1 to 2 workers.

    .venv/bin/python benchmarks/compute.py                   # ~10 minutes on 2 cores
    .venv/bin/python benchmarks/compute.py --skip-scaling    # the FLOP/s part only, ~1 minute

1. Peak: this machine's fp32 matmul FLOP/s with torch (square matmuls, 2 threads, median of repeats).
2. Achieved: model FLOPs of one text-cpu training step, counted analytically (as nanoGPT's
   ``estimate_mfu``: 2 FLOPs per weight per token forward, twice that backward, plus attention's
   QK^T and AV), over the padded shapes the step computes, divided by its measured time (single
   process, fused AdamW). Torch's own FlopCounterMode counts the same step as a cross-check.
3. Scaling: the platform's Ray Train + DeepSpeed ZeRO-2 job on the text-cpu preset, global batch 32:
   1 worker on 1 CPU, 2 workers on 1 CPU each (data parallelism adds a core), and 1 worker on both CPUs
   with 2 threads (the same cores used by intra-op threads instead); alternating rounds, samples/s from
   the job's own per-interval log, first interval (warm-up) dropped.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import alternate, corpus_texts, markdown_table, median, text_model, text_tokenizer


def matmul_peak(size: int = 2048, repeats: int = 10, dtype=None) -> float:
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    times = alternate({"mm": lambda: torch.mm(a, b)}, repeats=repeats, warmup=3)["mm"]
    return 2 * size ** 3 / median(times)


def _linear_weights(module) -> int:
    """Weights that multiply activations (nn.Linear and GPT-2's Conv1D); embedding lookups are free."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    return sum(m.weight.numel() for m in module.modules() if isinstance(m, (nn.Linear, Conv1D)))


def _trainable(module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def step_flops(model, batch) -> dict[str, float]:
    """Analytic FLOPs of one training step (forward + backward) by component. A trainable block costs
    3x its forward (forward, input gradients, weight gradients); a frozen block below every trainable
    one costs its forward only (no gradient flows into it)."""
    codec = model.codec
    n, le = batch["enc_ids"].shape
    ld = batch["dec_ids"].shape[1] - 1                    # teacher forcing: L - 1 inputs
    out = {}
    enc_cfg = codec.encoder.config
    enc_total = 0.0
    for layer in codec.encoder.encoder.layer:
        fwd = 2 * _linear_weights(layer) * n * le + 2 * 2 * n * le * le * enc_cfg.hidden_size
        enc_total += fwd * (3 if _trainable(layer) else 1)
    out["encoder"] = enc_total + 3 * 2 * _linear_weights(codec.to_latent) * n
    dec = codec.decoder
    d, n_layer = dec.config.n_embd, dec.config.n_layer
    per_token = 2 * (_linear_weights(dec.transformer.h) + dec.lm_head.weight.numel())
    attention = 2 * 2 * n_layer * d * (ld + 1) * ld * n     # each query sees the prefix and the latent memory
    out["decoder"] = 3 * (per_token * n * ld + attention)
    connectors = _linear_weights(codec.latent_to_memory) + _linear_weights(codec.latent_to_embedding)
    out["latent connectors"] = 3 * 2 * connectors * n
    out["prior"] = 3 * 2 * _linear_weights(model.denoiser) * n
    out["total"] = sum(out.values())
    return out


def counted_flops(model, batch) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(batch)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def scaling(steps: int, rounds: int) -> list[dict]:
    """samples/s of the text-cpu job per setup ("workers x CPUs each"), alternating."""
    import ray
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from diled_platform.config import load_config, replace
    from diled_platform.training.driver import fit

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    storage = Path(tempfile.mkdtemp(prefix="compute_scaling_"))
    setups = {"1 x 1": ["--scaling.num_workers=1", "--scaling.cpus_per_worker=1", "--data.batch_size=32"],
              "2 x 1": ["--scaling.num_workers=2", "--scaling.cpus_per_worker=1", "--data.batch_size=16"],
              "1 x 2": ["--scaling.num_workers=1", "--scaling.cpus_per_worker=2", "--data.batch_size=32"]}
    results = []
    for r in range(rounds):
        for workers, overrides in setups.items():
            name = f"w{workers.replace(' x ', 'x')}-r{r}"
            cfg = load_config("text-cpu", overrides + [
                f"--optim.max_steps={steps}", f"--run.log_every={max(1, steps // 5)}",
                f"--run.checkpoint_every={steps}", "--run.val_batches=1", f"--run.storage_path={storage}",
                f"--run.name={name}"])
            codec_args = {k: v for k, v in cfg.model.codec_args.items() if k != "vocab_size"}
            cfg = replace(cfg, model={"codec_args": {**codec_args, "tokenizer": str(text_tokenizer(storage))}})
            fit(cfg)
            acc = EventAccumulator(str(storage / name / "tensorboard"))
            acc.Reload()
            rates = [e.value for e in acc.Scalars("train/samples_per_s")][1:]
            results.append({"workers": workers, "round": r, "samples_per_s": median(rates)})
            print(f"  {workers} (workers x CPUs), round {r}: {median(rates):.1f} samples/s", flush=True)
    ray.shutdown()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--scaling-steps", type=int, default=100)
    parser.add_argument("--scaling-rounds", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    peak = matmul_peak()
    print(f"matmul peak (fp32, 2048^3, {torch.get_num_threads()} threads): {peak / 1e9:.1f} GFLOP/s", flush=True)
    bf16 = matmul_peak(dtype=torch.bfloat16)
    print(f"matmul peak (bf16): {bf16 / 1e9:.1f} GFLOP/s, bf16 / fp32 {bf16 / peak:.2f} (above 1 only where the CPU "
          f"has AVX512-BF16 or AMX; scaling.precision=bf16 pays there)", flush=True)

    tok = text_tokenizer(Path(tempfile.mkdtemp(prefix="compute_")))
    model = text_model("text-cpu", tok)
    batch = model.codec.collate(corpus_texts(args.batch))
    flops = step_flops(model, batch)
    counted = counted_flops(model, batch)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)

    def step():
        out = model(batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()

    seconds = median(alternate({"step": step}, repeats=args.repeats, warmup=2)["step"])
    pad_dec = 1 - float(batch["dec_mask"][:, 1:].float().mean())
    print(f"text-cpu step, batch {args.batch}: {seconds * 1e3:.0f} ms; decoder padding {pad_dec:.0%}", flush=True)
    rows = [[k, f"{v / 1e9:.2f}", f"{v / flops['total']:.1%}"] for k, v in flops.items() if k != "total"]
    rows.append(["**total (analytic)**", f"{flops['total'] / 1e9:.2f}", "100%"])
    rows.append(["total (torch FlopCounterMode)", f"{counted / 1e9:.2f}", f"{counted / flops['total']:.1%}"])
    print("\nModel FLOPs of one training step (forward + backward):\n")
    print(markdown_table(["component", "GFLOP", "share"], rows))
    achieved = flops["total"] / seconds
    print("\n" + markdown_table(["measure", "value"], [
        ["matmul peak (torch fp32)", f"{peak / 1e9:.1f} GFLOP/s"],
        ["matmul peak (torch bf16) / fp32", f"{bf16 / peak:.2f}"],
        ["text-cpu training step", f"{seconds * 1e3:.0f} ms"],
        ["achieved (analytic FLOPs / step time)", f"{achieved / 1e9:.1f} GFLOP/s"],
        ["**achieved / peak**", f"**{achieved / peak:.1%}**"]]))

    if not args.skip_scaling:
        print("\nData-parallel scaling (Ray Train + DeepSpeed ZeRO-2, text-cpu, global batch 32):", flush=True)
        res = scaling(args.scaling_steps, args.scaling_rounds)
        rate = {s: median([r["samples_per_s"] for r in res if r["workers"] == s]) for s in ("1 x 1", "2 x 1", "1 x 2")}
        base = rate["1 x 1"]
        print("\n" + markdown_table(["workers", "CPUs (threads) per worker", "samples/s (median of rounds)",
                                      "vs 1 worker on 1 CPU"], [
            [1, "1 (1)", f"{base:.1f}", "1.00"], [2, "1 (1)", f"{rate['2 x 1']:.1f}", f"**{rate['2 x 1'] / base:.2f}**"],
            [1, "2 (2)", f"{rate['1 x 2']:.1f}", f"{rate['1 x 2'] / base:.2f}"]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

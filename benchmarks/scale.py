"""GPT-2-medium, -large and -XL-shaped text DiLED under ZeRO-0/2/3 on 2 Ray Train workers, one on each of
two simulated nodes (``ray.cluster_utils.Cluster``): measured memory, speed and disk.

    .venv/bin/python benchmarks/scale.py [--shapes medium large xl] [--stages zero0 zero2 zero3] [--steps 3]
                                         [--precision fp32|bf16] [--activation-checkpointing]

Each run is the ``text-xl-cpu`` preset (GPT-2's 50,257-token BPE, the paper's partial freezing, a 3-layer
MiniLM encoder with one layer trained, a 6 x 1024 prior, batch 2 per worker, 32 tokens) with the
decoder's shape, the ZeRO file and (``--precision``) the precision changed (the preset's is bf16), trained for ``--steps`` steps with one checkpoint at the end
and no report. Per worker it prints the kernel's resident high-water mark (VmHWM, reset at every phase
change, so a measured peak, not an estimate) less the worker's RSS before the model is built, over the
full fp32 model size; s/step (median after the first step); rank 0's peak while exporting (and its
increase over rank 0's RSS when the export began); the peak of ``DiLED.from_pretrained`` in a fresh
process, with every weight read once (the files are memory-mapped: unread pages would not count); and the checkpoint's size on disk (DeepSpeed shards and
the consolidated model). A run whose estimated memory cannot fit the machine is skipped and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "platform")]
for key, value in {"RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "TOKENIZERS_PARALLELISM": "false", "DS_ACCELERATOR": "cpu", "RAY_AUTH_MODE": "disabled"}.items():
    os.environ.setdefault(key, value)

SHAPES = {"medium": (24, 1024, 16), "large": (36, 1280, 20), "xl": (48, 1600, 25)}  # n_layer, n_embd, n_head
GiB = 2**30

LOAD_PROBE = """
import json, sys, time
sys.path[:0] = {paths!r}
import torch, diled  # noqa: F401  (the libraries are not the model)
from diled import DiLED
from diled_platform.training.memory import rss_bytes, _reset_peak, _status_kib
base = rss_bytes(); _reset_peak(); t = time.perf_counter()
model = DiLED.from_pretrained({model!r})
seconds = time.perf_counter() - t
# safetensors maps the files: read every weight once, so that all its pages are resident and counted
checksum = sum(float(p.sum()) for p in model.parameters())  # no copy of a weight
n = sum(p.numel() for p in model.parameters())
print(json.dumps({{"baseline": base, "peak": _status_kib("VmHWM") * 1024, "seconds": seconds, "params": n,
                  "rss_after": rss_bytes()}}))
"""


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def estimate_worker_bytes(stage: str, n_params: float, n_trainable: float, workers: int = 2) -> float:
    """A rough upper estimate per worker (fp32 weights, grads, Adam m and v), times 1.3 for the allocator,
    used only to skip what cannot fit."""
    w, t = 4 * n_params, 4 * n_trainable
    per = {"zero0": w + 3 * t, "zero2": w + 3 * t / workers + t, "zero3": (w + 3 * t) / workers}[stage]
    return 1.3 * per


def approx_params(n_layer: int, n_embd: int, vocab: int = 50257) -> tuple[float, float]:
    """GPT-2 parameters (12 d^2 per block, tied embeddings) plus the fixed parts of the preset, and how
    many of them train under the paper's freezing (embeddings, first block, latent connectors)."""
    block = 12 * n_embd**2 + 13 * n_embd
    decoder = n_layer * block + (vocab + 1024) * n_embd
    fixed = 17.4e6 + 7.5e6  # 3 MiniLM layers and embeddings, the 6 x 1024 prior
    trainable = (vocab + 1024) * n_embd + block + 128 * n_embd * (n_layer + 1) + 1.8e6 + 7.5e6
    return decoder + fixed + 128 * n_embd * (n_layer + 1), trainable


def machine_bytes() -> int:
    return int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]) * 1024


def run_one(shape: str, stage: str, steps: int, out: Path, tokenizer: Path, checkpointing: bool = False,
            precision: str | None = None) -> dict:
    from diled_platform.config import load_config
    from diled_platform.training.driver import fit
    from diled_platform.training.train import use_bf16

    n_layer, n_embd, n_head = SHAPES[shape]
    name = f"{shape}-{stage}"
    cfg = load_config("text-xl-cpu", [
        f"--model.codec_args={{tokenizer: {tokenizer}, max_length: 32, encoder_layers: 3, encoder_trainable_layers: 1,"
        f" decoder_trainable: paper, decoder_config: {{n_layer: {n_layer}, n_embd: {n_embd}, n_head: {n_head},"
        f" n_positions: 1024, vocab_size: 50257}}, activation_checkpointing: {str(checkpointing).lower()}}}",
        f"--scaling.deepspeed={stage}", f"--optim.max_steps={steps}", f"--run.checkpoint_every={steps}",
        f"--run.name={name}", f"--run.storage_path={out}", "--run.report=false", "--run.max_failures=0",
        *([f"--scaling.precision={precision}"] if precision else [])])
    t0 = time.perf_counter()
    outcome = fit(cfg)
    wall = time.perf_counter() - t0
    ranks = [json.loads((outcome.run_dir / "memory" / f"rank{r}.json").read_text()) for r in range(2)]
    model_bytes = 4 * ranks[0]["residency"]["param_elements"]
    ckpt = Path(outcome.result.checkpoint.path)
    probe = LOAD_PROBE.format(paths=[str(ROOT), str(ROOT / "platform")], model=str(outcome.model_dir.resolve()))
    load = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
                      .stdout.strip().splitlines()[-1])
    row = {"shape": shape, "stage": stage, "precision": "bf16" if use_bf16(cfg) else "fp32",
           "activation_checkpointing": checkpointing, "params": ranks[0]["residency"]["param_elements"],
           "model_gib": model_bytes / GiB, "wall_s": wall,
           "train_peak": [(r["peak_rss"]["train"] - r["baseline_rss"]) / model_bytes for r in ranks],
           "train_peak_gib": [(r["peak_rss"]["train"] - r["baseline_rss"]) / GiB for r in ranks],
           "build_peak": [(r["peak_rss"]["build"] - r["baseline_rss"]) / model_bytes for r in ranks],
           "s_per_step": statistics.median(ranks[0]["step_seconds"][1:] or ranks[0]["step_seconds"]),
           "export_peak": (ranks[0]["peak_rss"]["export"] - ranks[0]["baseline_rss"]) / model_bytes,
           "export_increase": (ranks[0]["peak_rss"]["export"] - ranks[0]["phase_start_rss"]["export"]) / model_bytes,
           "load_peak": (load["peak"] - load["baseline"]) / model_bytes, "load_s": load["seconds"],
           "shards_gib": (du(ckpt) - du(ckpt / "model")) / GiB, "model_dir_gib": du(ckpt / "model") / GiB,
           "largest_held": [r["residency"]["largest_param_held"] / r["residency"]["largest_param"] for r in ranks]}
    shutil.rmtree(outcome.run_dir)
    return row


def stage_label(row: dict) -> str:
    return (row["stage"][-1] + (f", {row['precision']}" if row.get("precision") else "")
            + (" + activation checkpointing" if row.get("activation_checkpointing") else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--stages", nargs="+", default=["zero0", "zero2", "zero3"], choices=["zero0", "zero2", "zero3"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="/tmp/diled-scale")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--activation-checkpointing", action="store_true",
                        help="recompute each decoder block in the backward pass (the codec option)")
    parser.add_argument("--precision", choices=["fp32", "bf16"],
                        help="scaling.precision (default: the preset's); the peaks are over the fp32 model either way")
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    from diled_platform.datatypes.text import gpt2_ranks_file
    from diled.text_tokenizers import gpt2_tokenizer_from_tiktoken

    out = Path(args.out)
    tokenizer = out / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        gpt2_tokenizer_from_tiktoken(gpt2_ranks_file(), tokenizer)
    # two simulated nodes with 1 CPU each and none on the head: one worker (0.9 CPU) per node
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    rows = []
    try:
        for shape in args.shapes:
            for stage in args.stages:
                n, t = approx_params(*SHAPES[shape][:2])
                need = estimate_worker_bytes(stage, n, t)
                if 2 * need > 0.85 * machine_bytes():
                    print(f"{shape} {stage}: skipped, estimated {need / GiB:.1f} GiB per worker does not fit", flush=True)
                    rows.append({"shape": shape, "stage": stage, "skipped": f"estimated {need / GiB:.1f} GiB per worker"})
                    continue
                print(f"{shape} {stage}: running", flush=True)
                rows.append(run_one(shape, stage, args.steps, out, tokenizer, args.activation_checkpointing,
                                    args.precision))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print("\n| shape | params | ZeRO | train peak / model, per worker | s/step | export peak / model (increase) | "
          "load peak / model | checkpoint shards + model (GiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['shape']} | | {stage_label(r)} | skipped: {r['skipped']} | | | | |")
            continue
        peaks = " / ".join(f"{p:.2f} ({g:.1f} GiB)" for p, g in zip(r["train_peak"], r["train_peak_gib"]))
        print(f"| {r['shape']} | {r['params'] / 1e9:.2f} B ({r['model_gib']:.1f} GiB) | {stage_label(r)} | {peaks} | "
              f"{r['s_per_step']:.1f} | {r['export_peak']:.2f} (+{r['export_increase']:.2f}) | {r['load_peak']:.2f} | "
              f"{r['shards_gib']:.1f} + {r['model_dir_gib']:.1f} |")


if __name__ == "__main__":
    main()

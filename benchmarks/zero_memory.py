"""Per-worker model-state memory (parameters + gradients + optimizer state) under DeepSpeed ZeRO 0/2/3 and
CPU offload, at 2 Ray Train workers, counted from the tensors each rank holds mid-step.

    .venv/bin/python benchmarks/zero_memory.py [--hidden 1024 --depth 8]

Prints bytes per worker and the ratio to ZeRO-0 and to the 1/N limit (N = 2). The model is the vector
DiLED with a scaled-up prior, so that the prior's parameters dominate; memory does not depend on time,
so one run per configuration suffices.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "platform")]
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

CONFIGS = ["zero0", "zero2", "zero3", "zero2_offload", "zero3_offload"]


def measure(name: str, hidden: int, depth: int, workers: int) -> list[dict]:
    import ray.train
    from ray.train.torch import TorchTrainer

    from diled_platform.config import load_config
    from diled_platform.training.probes import memory_probe_loop

    cfg = load_config("vector-cpu", [f"--scaling.deepspeed={name}", f"--model.prior_hidden={hidden}",
                                     f"--model.prior_depth={depth}", f"--scaling.num_workers={workers}"])
    out = tempfile.mkdtemp()
    TorchTrainer(memory_probe_loop, train_loop_config={"job": cfg.to_dict(), "steps": 2, "out_dir": out},
                 scaling_config=ray.train.ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 0.9}),
                 run_config=ray.train.RunConfig(storage_path=out, name="probe")).fit()
    return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(workers)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = {name: measure(name, args.hidden, args.depth, args.workers) for name in CONFIGS}
    n_params = rows["zero0"][0]["n_params"]
    base = max(sum(r[k] for k in ("params", "grads", "optimizer")) for r in rows["zero0"])
    print(f"\nmodel: {n_params:,} parameters (fp32), {args.workers} workers; MB per worker (max over ranks)\n")
    print("| config | params | grads | optimizer | total | vs ZeRO-0 | vs 1/N limit |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, ranks in rows.items():
        worst = max(ranks, key=lambda r: r["params"] + r["grads"] + r["optimizer"])
        total = worst["params"] + worst["grads"] + worst["optimizer"]
        mb = lambda b: f"{b / 2**20:.1f}"  # noqa: E731
        print(f"| {name} | {mb(worst['params'])} | {mb(worst['grads'])} | {mb(worst['optimizer'])} | {mb(total)} "
              f"| {total / base:.2f} | {total / (base / args.workers):.2f} |")


if __name__ == "__main__":
    main()

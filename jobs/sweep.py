"""Sweep DiLED's w, noise schedule, T and learning rate with Ray Tune (Optuna + ASHA) and promote the best.

    python jobs/sweep.py --sweep text-cpu              # platform/sweeps/text-cpu.yaml
    python jobs/sweep.py --sweep vector-cpu            # any data type: another sweep file (or a path)
    python jobs/sweep.py --sweep text-cpu --num-samples 12 --name my-sweep
    ray job submit --working-dir . -- python jobs/sweep.py --sweep text-cpu

Writes to ``<storage_path>/<name>/``: results.csv (one row per trial: sampled values, reports, whether
ASHA stopped it, metrics), sweep.png (the metric against w per schedule), best.json and best_model/ (a
save_pretrained folder: ``python jobs/serve.py --model <name>/best_model``). Interrupted (Ctrl-C, a crash),
the same command resumes the sweep: finished trials are kept, unfinished ones continue from their last
checkpoint.
"""

import argparse
import json
import sys
from pathlib import Path

import _path  # noqa: F401  (repository on sys.path)

from diled_platform.config import ConfigError, JobConfig
from diled_platform.runtime import init_ray
from diled_platform.tune import SweepConfig, SweepInterrupted, run_sweep


def main(argv=None, default_sweep: str | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default=default_sweep, required=default_sweep is None,
                        help="a sweep file in platform/sweeps/ or a path")
    parser.add_argument("--name", help="override the sweep's name (its folder; same name = resume)")
    parser.add_argument("--num-samples", type=int, help="override the number of trials")
    parser.add_argument("--storage-path", help="override where sweeps are written (default runs)")
    parser.add_argument("--max-concurrent-trials", type=int, help="default: what the cluster's CPUs/GPUs hold")
    args = parser.parse_args(argv)
    try:
        sweep = SweepConfig.load(args.sweep, name=args.name, num_samples=args.num_samples,
                                 storage_path=args.storage_path, max_concurrent_trials=args.max_concurrent_trials)
        base = sweep.base()
        JobConfig.from_dict(base)  # every key and value of the trial base is valid
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    init_ray()
    try:
        outcome = run_sweep(sweep, base)
    except SweepInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    keys = ["trial_id", *sweep.space, "reports", "stopped_early", f"best_{sweep.metric}"]
    print(" | ".join(keys))
    for row in sorted(outcome.rows, key=lambda r: r[f"best_{sweep.metric}"], reverse=sweep.mode == "max"):
        print(" | ".join(f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k]) for k in keys))
    print(f"best: {json.dumps(outcome.best['params'])} {sweep.metric}={outcome.best['value']:.4f} "
          f"(trial {outcome.best['trial_id']})")
    print(f"sweep folder: {outcome.sweep_dir}\n  {outcome.table}\n  {outcome.plot}\n  {outcome.best_model_dir}")
    print(f"serve it: python jobs/serve.py --model {outcome.best_model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

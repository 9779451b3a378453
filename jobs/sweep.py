"""Sweep DiLED's w, noise schedule, T and learning rate with Ray Tune (Optuna + ASHA) and promote the best.

    python jobs/sweep.py --sweep text-cpu              # platform/sweeps/text-cpu.yaml
    python jobs/sweep.py --sweep vector-cpu            # any data type: another sweep file (or a path)
    python jobs/sweep.py --sweep text-cpu --num-samples 12 --name my-sweep
    ray job submit --working-dir . -- python jobs/sweep.py --sweep text-cpu

    python jobs/sweep.py --sweep text-pareto --serve   # two objectives: the Pareto front, then serve a point

Writes to ``<storage_path>/<name>/``: results.csv (one row per trial: sampled values, reports, whether
ASHA stopped it, metrics, whether it is on the Pareto front), sweep.png (one objective: the metric
against w per schedule) or pareto.png (several: the front, w and the schedule in the markers),
sensitivity.png (each objective against each parameter), best.json and best_model/ (a save_pretrained
folder: ``python jobs/serve.py --model <name>/best_model``; its provenance.json names the trial, which
GET /healthz shows). ``--pick TRIAL`` promotes that trial (of the front) instead of the default (the best
trial; with several objectives, the front's balanced point). ``--serve`` then starts the Serve app on
it, as ``jobs/serve.py`` would (until Ctrl-C). Every trial is an MLflow run in the experiment named
after the sweep (``diled_platform.training.tracking``). Interrupted (Ctrl-C, a crash),
the same command resumes the sweep: finished trials are kept, unfinished ones continue from their last
checkpoint.
"""

import argparse
import json
import sys

import _path  # noqa: F401  (repository on sys.path)

from diled_platform.config import ConfigError, JobConfig
from diled_platform.training.runtime import init_ray
from diled_platform.sweeps.tune import SweepConfig, SweepInterrupted, run_sweep


def main(argv=None, default_sweep: str | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default=default_sweep, required=default_sweep is None,
                        help="a sweep file in platform/sweeps/ or a path")
    parser.add_argument("--name", help="override the sweep's name (its folder; same name = resume)")
    parser.add_argument("--num-samples", type=int, help="override the number of trials")
    parser.add_argument("--storage-path", help="override where sweeps are written (default runs)")
    parser.add_argument("--max-concurrent-trials", type=int, help="default: what the cluster's CPUs/GPUs hold")
    parser.add_argument("--pick", help="promote this trial id (with several objectives: one on the Pareto front)")
    parser.add_argument("--serve", action="store_true", help="then serve the promoted model (jobs/serve.py)")
    parser.add_argument("--port", type=int, default=8000, help="with --serve")
    parser.add_argument("--dry-run", action="store_true", help="check the arguments and the config, print them, run nothing")
    args = parser.parse_args(argv)
    try:
        sweep = SweepConfig.load(args.sweep, name=args.name, num_samples=args.num_samples,
                                 storage_path=args.storage_path, max_concurrent_trials=args.max_concurrent_trials)
        base = sweep.base()
        JobConfig.from_dict(base)  # every key and value of the trial base is valid
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    if args.dry_run:
        print(f"ok: sweep {sweep.name}, preset {sweep.preset}, {sweep.num_samples} trials")
        return 0
    init_ray()
    try:
        outcome = run_sweep(sweep, base, pick=args.pick)
    except SweepInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    objectives = [f"last_{m}" for m in sweep.metrics] if sweep.multi else [f"best_{sweep.metrics[0]}"]
    keys = ["trial_id", *sweep.space, "reports", "stopped_early", *objectives, *(["pareto"] if sweep.multi else [])]
    print(" | ".join(keys))
    first, reverse = objectives[0], sweep.modes[0] == "max"
    rows = sorted(outcome.rows, key=lambda r: (r[first] if r[first] == r[first] else float("inf")) * (-1 if reverse else 1))
    for row in rows:
        print(" | ".join(f"{row.get(k):.4g}" if isinstance(row.get(k), float) else str(row.get(k)) for k in keys))
    stopped = sum(r["stopped_early"] for r in outcome.rows)
    print(f"ASHA stopped {stopped} of {len(outcome.rows)} trials early; reports used "
          f"{sum(r['reports'] for r in outcome.rows)} of {len(outcome.rows) * sweep.reports_per_trial(base)}")
    if sweep.multi:
        print(f"Pareto front ({', '.join(sweep.metrics)}): {', '.join(outcome.front)}")
    print(f"promoted: trial {outcome.best['trial_id']} ({outcome.best['chosen_by']}) {json.dumps(outcome.best['params'])}")
    print(f"sweep folder: {outcome.sweep_dir}\n  {outcome.table}\n  {outcome.plot}\n  {outcome.sensitivity}\n"
          f"  {outcome.best_model_dir}")
    if args.serve:
        import serve

        return serve.main(["--model", str(outcome.best_model_dir), "--port", str(args.port)])
    print(f"serve it: python jobs/serve.py --model {outcome.best_model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

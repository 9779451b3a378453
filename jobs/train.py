"""Train DiLED on any data type (the preset names it), evaluate it, and optionally train baselines beside it.

    python jobs/train.py --preset text-cpu [--section.key=value ...]
    python jobs/train.py --preset protein-cpu --compare autoencoder      # + the prior switched off, same budget
    python jobs/train.py --preset image-cpu --compare two-stage          # + autoencoder, then prior on it
    ray job submit --working-dir . -- python jobs/train.py --preset vector-cpu

With plain ``python`` and no RAY_ADDRESS it starts an embedded local Ray; under ``ray job submit`` it
runs on that cluster. Writes to ``<run.storage_path>/<run.name>/``: the model, metrics.json, TensorBoard
scalars and the data type's report (its files are listed at the end). Each ``--compare`` model is trained
as ``<run.name>-<model>`` with the same codec, data, trainer and steps and evaluated by the same report;
the table goes to comparison.md. Re-running with the same --run.name resumes the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import _path  # noqa: F401  (repository on sys.path)

from diled_platform.comparison.baselines import BASELINES, train
from diled_platform.config import load_config, preset_names
from diled_platform.datatypes import datatype_for
from diled_platform.datatypes._reports import write_eval
from diled_platform.comparison.evaluation import comparison_table
from diled_platform.training.runtime import init_ray
from diled_platform.training.tracking import log_report
from diled_platform.training.driver import absolute_storage, fit


def main(argv=None, default_preset: str | None = None, aliases: dict[str, list[str]] | None = None) -> int:
    """``aliases``: a flag that the thin per-type scripts accept, and the arguments it stands for."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [part for a in argv for part in (aliases or {}).get(a, [a])]
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Any --section.key=value overrides a preset value (parsed as YAML), e.g. --optim.lr=1e-3 "
               "--run.name=my-run. Re-running with the same --run.name resumes that run.")
    parser.add_argument("--preset", default=default_preset, required=default_preset is None,
                        help=f"a preset name ({', '.join(preset_names())}) or a YAML file")
    parser.add_argument("--compare", nargs="+", default=[], choices=[b for b in BASELINES if b != "diled"],
                        help="baselines trained and evaluated beside the run")
    parser.add_argument("--dry-run", action="store_true", help="check the arguments and the config, print them, run nothing")
    args, overrides = parser.parse_known_args(argv)
    t0 = time.perf_counter()
    cfg = absolute_storage(load_config(args.preset, overrides))
    if args.dry_run:
        print(f"ok: preset {args.preset}, data type {cfg.data.type}, {cfg.optim.max_steps} steps, run folder "
              f"{cfg.run.storage_path}/{cfg.run.name}" + (f", compared with {', '.join(args.compare)}" if args.compare else ""))
        return 0
    datatype = datatype_for(cfg)
    print(f"data ({datatype.name}): {datatype.summary()}", flush=True)
    init_ray()
    t1 = time.perf_counter()
    outcome = fit(cfg, datatype)  # prepares the data type first (text: the tokenizer)
    cfg = outcome.config
    t2 = time.perf_counter()
    if not cfg.run.report or outcome.run_dir is None:
        print(f"training took {t2 - t1:.0f}s; no report (run.report=false or remote storage)\n"
              f"run folder: {outcome.run_dir or cfg.run.storage_path}\n  model: {outcome.model_dir}")
        return 0
    print(f"training took {t2 - t1:.0f}s; evaluating on the held-out split", flush=True)
    tools = datatype.tools(outcome.run_dir)
    metrics = datatype.report(outcome.model_dir, outcome.run_dir, cfg, seed=cfg.run.seed, tools=tools)
    metrics["seconds"] = {"prepare": round(t1 - t0), "train": round(t2 - t1), "evaluate": round(time.perf_counter() - t2)}
    metrics["train"] = outcome.metrics
    write_eval(outcome.run_dir, metrics)
    log_report(cfg, outcome.run_dir, metrics, list(datatype.outputs))  # to the run's MLflow run
    print(json.dumps({"train": outcome.metrics, "eval": metrics}, indent=2), flush=True)
    results, folders = {"diled": metrics}, {"diled": outcome.run_dir}
    for model in args.compare:
        name = f"{cfg.run.name}-{model}"
        vae = datatype.vae_options(cfg) if model == "vae" else None
        model_dir, seconds = train(cfg, model, name, vae, datatype)
        results[model] = datatype.report(model_dir, model_dir.parent, cfg, seed=cfg.run.seed, tools=tools)
        results[model]["seconds"] = {"train": round(seconds)}
        results[model]["train"] = json.loads((model_dir.parent / "metrics.json").read_text())
        write_eval(model_dir.parent, results[model])
        folders[model] = model_dir.parent
    for name, folder in folders.items():
        print(f"run folder ({name}): {folder}")
        for item in ("model", *datatype.outputs):
            if (folder / item).exists():
                print(f"  {folder / item}")
    if args.compare:
        table = comparison_table(results, list(datatype.metrics))
        (outcome.run_dir / "comparison.md").write_text(table + "\n")
        print(table)
    print(f"tensorboard --logdir {outcome.run_dir / 'tensorboard'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

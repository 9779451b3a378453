"""Train protein DiLED on GB1 (transformer encoder, fitness head, latent prior) and evaluate it.

    python jobs/train_protein.py [--preset protein-cpu] [--section.key=value ...]
    python jobs/train_protein.py --compare-autoencoder     # also the prior switched off, same budget
    python jobs/train_protein.py --data.source=protein_files --data.path=my_variants.csv
    ray job submit --working-dir . -- python jobs/train_protein.py

Writes to ``<run.storage_path>/<run.name>/``: the model, reconstructions.tsv, samples.txt (from the
prior), optimized.tsv (latent-space optimisation from the weakest held-out sequences), eval.json,
metrics.json, latents_fitness.png. With --compare-autoencoder the same job runs again with
``model.objective=autoencoder`` (the ReLSO-style autoencoder alone: same codec, data, trainer and
steps) into ``<run.name>-autoencoder/``, and both are printed side by side (also comparison.md).
"""

import json
import sys
import time
from pathlib import Path

import _path  # noqa: F401  (repository on sys.path)

from diled_platform.cli import parse_job_args, pop_flag
from diled_platform.config import replace
from diled_platform.data import protein_splits
from diled_platform.protein import PROTEIN_COMPARISON, protein_report
from diled_platform.reports import comparison_table
from diled_platform.runtime import init_ray
from diled_platform.train import absolute_storage, fit


def run(cfg, splits, reference) -> tuple[Path, dict]:
    t0 = time.perf_counter()
    outcome = fit(cfg)
    t1 = time.perf_counter()
    if outcome.run_dir is None:
        raise SystemExit(f"trained; checkpoint at {outcome.result.checkpoint.path} (remote storage: no report)")
    if not cfg.run.report:
        return outcome.run_dir, {"train": outcome.metrics, "report": "skipped (run.report=false)"}
    sizes = {k: v for k, v in cfg.run.report_kwargs().items() if k != "ddim_steps"}  # protein decodes mu directly
    metrics = protein_report(outcome.model_dir, splits, outcome.run_dir, reference=reference, **sizes)
    metrics["seconds"] = {"train": round(t1 - t0), "evaluate": round(time.perf_counter() - t1)}
    metrics["train"] = outcome.metrics
    (outcome.run_dir / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return outcome.run_dir, metrics


def main(argv=None) -> int:
    argv, compare = pop_flag(argv, "--compare-autoencoder")
    cfg = absolute_storage(parse_job_args(argv, "protein-cpu", __doc__.splitlines()[0]))
    splits = protein_splits(cfg.data)
    print(f"data: train {splits['train'].num_rows}, val {splits['val'].num_rows}, test {splits['test'].num_rows} "
          f"sequences", flush=True)
    # GB1: novelty and measured fitness of proposals against all its variants, not the training subset
    reference = protein_splits(replace(cfg, data={"max_examples": None}).data) if cfg.data.source == "gb1" else splits
    init_ray()
    configs = {cfg.model.objective: cfg}
    if compare:
        other = "autoencoder" if cfg.model.objective == "diled" else "diled"
        configs[other] = replace(cfg, model={"objective": other}, run={"name": f"{cfg.run.name}-{other}"})
    results, folders = {}, {}
    for name, c in configs.items():
        folders[name], results[name] = run(c, splits, reference)
        print(json.dumps({name: results[name]}, indent=2), flush=True)
    for name, folder in folders.items():
        print(f"run folder ({name}): {folder}")
        for item in ("model", "reconstructions.tsv", "samples.txt", "optimized.tsv", "eval.json", "latents_fitness.png"):
            if (folder / item).exists():
                print(f"  {folder / item}")
    if compare and cfg.run.report:
        table = comparison_table(results, PROTEIN_COMPARISON)
        (folders[cfg.model.objective] / "comparison.md").write_text(table + "\n")
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

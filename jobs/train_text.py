"""Train text DiLED (BERT-family encoder, causal decoder, latent diffusion prior) and evaluate it.

    python jobs/train_text.py [--preset text-cpu] [--section.key=value ...]
    ray job submit --working-dir . -- python jobs/train_text.py

With plain ``python`` and no RAY_ADDRESS it starts an embedded local Ray; under ``ray job submit`` it
runs on that cluster. Writes to ``<run.storage_path>/<run.name>/``: the model, samples.txt,
reconstructions.tsv, reconstructions_second_test.tsv (Guardian headlines), interpolations.txt,
arithmetic.tsv, eval.json, metrics.json and plots.
"""

import json
import sys
import time
from pathlib import Path

import _path  # noqa: F401  (repository on sys.path)

from diled_platform.cli import parse_job_args
from diled_platform.data import text_splits
from diled_platform.runtime import init_ray
from diled_platform.text import prepare_tokenizer, text_report
from diled_platform.train import absolute_storage, fit


def main(argv=None) -> int:
    t0 = time.perf_counter()
    cfg = absolute_storage(parse_job_args(argv, "text-cpu", __doc__.splitlines()[0]))
    run_dir = Path(cfg.run.storage_path) / cfg.run.name
    splits, stats = text_splits(cfg.data)
    print(f"data: {stats.summary()}; train {splits['train'].num_rows}, val {splits['val'].num_rows}, "
          f"test {splits['test'].num_rows}", flush=True)
    cfg = prepare_tokenizer(cfg, run_dir, splits["train"].column("text").to_pylist())
    init_ray()
    t1 = time.perf_counter()
    outcome = fit(cfg)
    t2 = time.perf_counter()
    if not cfg.run.report or outcome.run_dir is None:
        print(f"training took {t2 - t1:.0f}s; no report (run.report=false or remote storage)\n"
              f"run folder: {run_dir}\n  model: {outcome.model_dir}")
        return 0
    print(f"training took {t2 - t1:.0f}s; evaluating on the test split", flush=True)
    metrics = text_report(outcome.model_dir, splits, run_dir, **cfg.run.report_kwargs())
    metrics["seconds"] = {"prepare": round(t1 - t0), "train": round(t2 - t1), "evaluate": round(time.perf_counter() - t2)}
    print(json.dumps({"train": outcome.metrics, "eval": metrics}, indent=2))
    print(f"run folder: {run_dir}")
    for name in ("model", "samples.txt", "reconstructions.tsv", "reconstructions_second_test.tsv", "interpolations.txt",
                 "arithmetic.tsv", "eval.json", "loss_curves.png", "latents_pca.png"):
        print(f"  {run_dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

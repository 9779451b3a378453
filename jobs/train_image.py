"""Train image DiLED on Fashion-MNIST (conv encoder/decoder, latent prior) and evaluate it.

    python jobs/train_image.py [--preset image-cpu] [--section.key=value ...]
    python jobs/train_image.py --compare-two-stage     # also: autoencoder first, then the prior on it
    python jobs/train_image.py --data.source=image_folder --data.path=my_images/ --data.image_size=32
    ray job submit --working-dir . -- python jobs/train_image.py

Writes to ``<run.storage_path>/<run.name>/``: the model, samples.png, reconstructions.png,
interpolations.png, eval.json, metrics.json, and the feature classifier the metrics use
(feature_classifier.safetensors/.json). With --compare-two-stage the latent-diffusion recipe runs through
the same code: ``<name>-stage1`` trains the autoencoder alone (``model.objective=autoencoder``) for the
same steps, then ``<name>-two-stage`` trains only the prior on its frozen latents
(``model.objective=prior_only``, ``model.init_from``) for the same steps again; both are printed side
by side with DiLED (also comparison.md).
"""

import json
import sys
import time

import _path  # noqa: F401  (repository on sys.path)

from diled_platform.cli import parse_job_args, pop_flag
from diled_platform.config import replace
from diled_platform.data import image_splits
from diled_platform.image import IMAGE_COMPARISON, feature_classifier, image_report
from diled_platform.reports import comparison_table
from diled_platform.runtime import init_ray
from diled_platform.train import absolute_storage, fit


def main(argv=None) -> int:
    argv, compare = pop_flag(argv, "--compare-two-stage")
    cfg = absolute_storage(parse_job_args(argv, "image-cpu", __doc__.splitlines()[0]))
    splits = image_splits(cfg.data)
    print(f"data: train {len(splits['train'][0])}, val {len(splits['val'][0])}, test {len(splits['test'][0])} images",
          flush=True)
    init_ray()
    runs = [("diled", cfg)]
    if compare:
        stage1 = replace(cfg, model={"objective": "autoencoder"}, run={"name": f"{cfg.run.name}-stage1"})
        runs.append(("stage1", stage1))
    results, folders, classifier, info = {}, {}, None, None
    for name, c in runs:
        t0 = time.perf_counter()
        outcome = fit(c)
        t1 = time.perf_counter()
        if outcome.run_dir is None:
            raise SystemExit(f"trained; checkpoint at {outcome.result.checkpoint.path} (remote storage: no report)")
        if name == "stage1":  # the prior on the frozen autoencoder's latents, same number of steps
            c2 = replace(cfg, model={"objective": "prior_only", "init_from": str(outcome.model_dir)},
                         run={"name": f"{cfg.run.name}-two-stage"})
            outcome = fit(c2)
            name, t1 = "two-stage", time.perf_counter()
        if not cfg.run.report:
            results[name], folders[name] = {"train": outcome.metrics}, outcome.run_dir
            continue
        if classifier is None:
            classifier, info = feature_classifier(splits, outcome.run_dir)
        metrics = image_report(outcome.model_dir, splits, outcome.run_dir, classifier, info,
                               **cfg.run.report_kwargs(steps="steps"))
        metrics["seconds"] = {"train": round(t1 - t0), "evaluate": round(time.perf_counter() - t1)}
        metrics["train"] = outcome.metrics
        (outcome.run_dir / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
        results[name], folders[name] = metrics, outcome.run_dir
        print(json.dumps({name: metrics}, indent=2), flush=True)
    for name, folder in folders.items():
        print(f"run folder ({name}): {folder}")
        for item in ("model", "samples.png", "reconstructions.png", "interpolations.png", "eval.json"):
            print(f"  {folder / item}")
    if compare and cfg.run.report:
        table = comparison_table(results, IMAGE_COMPARISON)
        (folders["diled"] / "comparison.md").write_text(table + "\n")
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

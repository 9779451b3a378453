"""Train DiLED on a 2-D, 8-mode Gaussian ring with the vector codec, then sample, reconstruct and plot.

    python jobs/train_vectors.py [--preset vector-cpu] [--section.key=value ...]
    ray job submit --working-dir . -- python jobs/train_vectors.py

With plain ``python`` and no RAY_ADDRESS it starts an embedded local Ray; under ``ray job submit`` it
runs on that cluster. Results go to ``<run.storage_path>/<run.name>/``.
"""

import json
import sys

import _path  # noqa: F401  (repository on sys.path)

from diled_platform.cli import parse_job_args
from diled_platform.reports import vector_report
from diled_platform.runtime import init_ray
from diled_platform.train import fit


def main(argv=None) -> int:
    cfg = parse_job_args(argv, "vector-cpu", __doc__.splitlines()[0])
    init_ray()
    outcome = fit(cfg)
    if outcome.run_dir is None or not cfg.run.report:
        print(f"trained; checkpoint at {outcome.result.checkpoint.path}")
        return 0
    metrics = vector_report(outcome.model_dir, cfg, outcome.run_dir,
                            **cfg.run.report_kwargs(examples="n", samples="n", steps="steps"))
    print(json.dumps({"train": outcome.metrics, "eval": metrics}, indent=2))
    print(f"run folder: {outcome.run_dir}\n  model:   {outcome.model_dir}\n  samples: {outcome.run_dir / 'samples.png'}"
          f"\n  metrics: {outcome.run_dir / 'eval.json'}\n  tensorboard --logdir {outcome.run_dir / 'tensorboard'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

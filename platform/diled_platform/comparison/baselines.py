"""DiLED and what it is compared with, each as the job configs the trainer runs: the one place that composes
them (the jobs' ``--compare`` and the comparison harness both use it).

- ``diled``: the joint objective.
- ``autoencoder``: the same codec with the prior switched off (``model.objective=autoencoder``).
- ``vae``: the text-VAE recipe (``objective=vae``): Gaussian posterior, KL to N(0, I) with KL annealing and
  free bits (Optimus' fixes; ``diled.baselines.vae``).
- ``two-stage``: the autoencoder alone, then the latent prior on its frozen latents (``objective=prior_only``
  + ``model.init_from``) for the same number of steps again: latent diffusion's recipe.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from diled_platform.config import JobConfig, replace

log = logging.getLogger("diled")
BASELINES = ("diled", "autoencoder", "vae", "two-stage")


def stages(cfg: JobConfig, model: str, name: str, vae: dict | None = None) -> list[JobConfig]:
    """The job configs that train ``model`` as the run ``name``, in order (two for two-stage: the
    autoencoder as ``<name>-stage1``, then the prior as ``name``). ``vae``: the VAE's settings."""
    base = replace(cfg, run={"name": name})
    # the prior stage (prior_stage.steps) trains a prior after the run: DiLED's and the two-stage model's
    # final prior get it alike; a model whose prior is off (autoencoder, VAE, two-stage's first step) not;
    # the VAE's sampling temperature is chosen as DiLED's is (prior_stage.temperatures)
    no_stage = {"steps": 0, "guide_steps": 0, "temperatures": [], "etas": []}
    vae_stage = {"steps": 0, "guide_steps": 0, "etas": []}  # its N(0, I) prior gets its sampling temperature chosen alike
    if model == "diled":
        return [replace(base, model={"objective": model})]
    if model == "autoencoder":
        return [replace(base, model={"objective": model}, prior_stage=no_stage)]
    if model == "vae":
        return [replace(base, model={"objective": "vae", "vae": dict(vae or {})}, prior_stage=vae_stage)]
    if model == "two-stage":
        stage1 = replace(base, model={"objective": "autoencoder"}, run={"name": f"{name}-stage1"},
                         prior_stage=no_stage)
        folder = Path(cfg.run.storage_path) / f"{name}-stage1" / "model"
        return [stage1, replace(base, model={"objective": "prior_only", "init_from": str(folder)})]
    raise ValueError(f"unknown model {model!r}; valid: {', '.join(BASELINES)}")


def train(cfg: JobConfig, model: str, name: str, vae: dict | None = None, datatype=None) -> tuple[Path, float]:
    """Train ``model`` as run ``name``: each stage that has no finished ``model/`` folder yet (so an
    interrupted comparison resumes where it stopped). The final model folder and the seconds spent now."""
    from diled_platform.training.driver import absolute_storage, fit

    seconds, folder = 0.0, None
    for stage in stages(absolute_storage(cfg), model, name, vae):
        folder = Path(stage.run.storage_path) / stage.run.name / "model"
        if (folder / "config.json").is_file():
            log.info(f"{stage.run.name}: trained model found, loading {folder}")
            continue
        t0 = time.perf_counter()
        outcome = fit(stage, datatype)
        seconds += time.perf_counter() - t0
        if outcome.model_dir is None:
            raise RuntimeError("a comparison needs a local run.storage_path (the models are read back)")
    return folder, seconds

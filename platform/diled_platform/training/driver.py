"""The driver's side of training: the data type prepared once, the ``TorchTrainer`` built on its datasets
(the workers run ``diled_platform.training.train.train_loop_per_worker``), where the run folder is, and
``fit``: train or resume, export, link the model, run the prior stage."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diled_platform.config import ConfigError, JobConfig
from diled_platform.training.prior_stage import check_stage_storage, run_prior_stage
from diled_platform.training.train import train_loop_per_worker


def prepare(cfg: JobConfig, datatype=None):
    """The data type of ``cfg`` (``datatype``, if the caller already has it with its splits loaded) and
    the config to train with, after the data type's preparation (text: the tokenizer, trained on the
    training split into the run folder; a no-op for a config already prepared, e.g. a sweep's trials)."""
    from diled_platform.datatypes import datatype_for

    datatype = datatype_for(cfg) if datatype is None else datatype
    return datatype, with_classes(datatype.prepare(cfg, Path(cfg.run.storage_path) / cfg.run.name), datatype)


def with_classes(cfg: JobConfig, datatype) -> JobConfig:
    """With ``model.conditional``, the data type's classes set into ``model.prior_args.classes`` (once, here on
    the driver), so every worker builds the same conditional prior; ``cfg`` itself otherwise."""
    from diled_platform.config import replace

    if not cfg.model.conditional or "classes" in cfg.model.prior_args:
        return cfg
    classes, _ = training_labels(datatype)
    return replace(cfg, model={"prior_args": {**cfg.model.prior_args, "classes": list(classes)}})


def training_labels(datatype) -> tuple[list[str], list[int]]:
    """``datatype.training_labels()``; a data type without labels is a ConfigError naming model.conditional."""
    try:
        return datatype.training_labels()
    except (NotImplementedError, ValueError) as err:
        raise ConfigError(f"model.conditional=true needs the data's classes, and data type {datatype.name!r} "
                          f"gives none ({err}); set model.conditional=false") from None


def condition_indices(datatype, classes: list[str]) -> list[int]:
    """Each training example's index in the prior's ``classes`` (-1: unlabelled, or a label the prior does not
    know), from ``datatype.training_labels`` (in the training split's row order); a ConfigError if no example
    has one of ``classes``."""
    known, labels = training_labels(datatype)
    index = {name: i for i, name in enumerate(classes)}
    cond = [index.get(known[j], -1) if j >= 0 else -1 for j in labels]
    if all(c < 0 for c in cond):
        raise ConfigError(f"model.prior_args.classes={list(classes)}: no training example has one of these labels "
                          f"(the data's: {list(known)})")
    return cond


def with_condition_column(dataset, datatype, classes: list[str]):
    """The training ``dataset`` (one block on the driver, ``driver_dataset``) with a ``cond`` column: each row's
    index in the prior's ``classes`` (``condition_indices``)."""
    import numpy as np
    import pyarrow as pa
    import ray

    from diled_platform.datatypes.base import driver_dataset

    table = pa.concat_tables(ray.get(dataset.to_arrow_refs()))
    cond = condition_indices(datatype, classes)
    if len(cond) != table.num_rows:
        raise ValueError(f"data type {datatype.name!r}: {len(cond)} training labels for {table.num_rows} rows")
    return driver_dataset(table.append_column("cond", pa.array(np.asarray(cond, dtype=np.int64))))


def build_trainer(cfg: JobConfig, callbacks: list | None = None, datatype=None):
    """A ``TorchTrainer`` for ``cfg`` (Ray Train V2 API) on its data type's datasets; ``callbacks`` go to
    its RunConfig (a Tune trial passes ``TuneReportCallback``)."""
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    # our own per-interval log line replaces Ray Data's per-dataset progress bars, which would repeat
    # on every worker and every epoch (a dataset keeps the context it was created with: set it first)
    ray.data.DataContext.get_current().enable_progress_bars = False
    datatype, cfg = prepare(cfg, datatype)
    datasets = datatype.datasets()
    if cfg.model.conditional:  # each training row's class reaches the joint prior (validation: the null class)
        datasets["train"] = with_condition_column(datasets["train"], datatype, cfg.model.prior_args["classes"])
    scaling = ray.train.ScalingConfig(
        num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
        resources_per_worker={"CPU": cfg.scaling.cpus_per_worker, **({"GPU": 1} if cfg.scaling.use_gpu else {})})
    run = ray.train.RunConfig(
        name=cfg.run.name, storage_path=cfg.run.storage_path, callbacks=callbacks,
        failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(
            num_to_keep=cfg.run.num_to_keep, checkpoint_score_attribute="val_loss", checkpoint_score_order="min"))
    # the config resolved here (storage, the data type's preparation) goes to every worker as the one typed
    # object, not re-parsed there
    return TorchTrainer(train_loop_per_worker, train_loop_config={"job": cfg}, scaling_config=scaling,
                        run_config=run, datasets=datasets,
                        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]))


RUNS_ENV = "DILED_RUNS"          # the folder a relative run.storage_path is resolved against
SHARED_STORAGE_ENV = "DILED_SHARED_STORAGE"  # "1": a local path is mounted at the same place on every node


def _in_ray_job_package(cwd: Path) -> bool:
    """Whether ``cwd`` is the unpacked ``--working-dir`` of a ``ray job submit`` (Ray deletes it later)."""
    return "working_dir_files" in cwd.parts or any(part.startswith("_ray_pkg_") for part in cwd.parts)


def runs_base(cwd: Path | None = None) -> Path:
    """What a relative ``run.storage_path`` is relative to: ``$DILED_RUNS`` if set; else the working
    directory, except inside a ``ray job submit`` package, whose folder Ray removes with the job's
    session: there ``~/diled``, so that the run survives ``ray stop`` and can be resumed by name."""
    cwd = Path.cwd() if cwd is None else cwd
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV]).expanduser()
    return Path.home() / "diled" if _in_ray_job_package(cwd) else cwd


def absolute_storage(cfg: JobConfig) -> JobConfig:
    """Workers run in other folders: make a local ``run.storage_path`` absolute before launching
    (relative to ``runs_base()``)."""
    from diled_platform.config import replace

    if "://" in cfg.run.storage_path:
        return cfg
    path = Path(cfg.run.storage_path).expanduser()
    if not path.is_absolute():
        path = runs_base() / path
    return replace(cfg, run={"storage_path": str(path.resolve())})


def check_storage_reaches_every_node(storage_path: str, nodes: list[dict] | None = None) -> None:
    """Refuse a local ``run.storage_path`` on a cluster whose nodes are on more than one machine: each
    worker would write its checkpoint shard to its own disk and no node would hold a whole checkpoint.
    A shared filesystem mounted at the same path everywhere is fine: say so with DILED_SHARED_STORAGE=1.
    ``nodes``: ``ray.nodes()`` (default: asked of the running Ray)."""
    if "://" in storage_path or os.environ.get(SHARED_STORAGE_ENV) == "1":
        return
    if nodes is None:
        import ray

        if not ray.is_initialized():  # the trainer will start a local, single-machine Ray
            return
        nodes = ray.nodes()
    hosts = sorted({n.get("NodeManagerAddress") for n in nodes if n.get("Alive")} - {None})
    if len(hosts) > 1:
        raise ConfigError(
            f"run.storage_path={storage_path} is a local path, but this cluster's nodes are on {len(hosts)} "
            f"machines ({', '.join(hosts[:4])}{', ...' if len(hosts) > 4 else ''}): checkpoints would be split "
            f"across their disks. Use a URI (s3://bucket/runs, gs://bucket/runs) or a shared filesystem "
            f"mounted at that path on every node, and set {SHARED_STORAGE_ENV}=1")


@dataclass
class TrainOutcome:
    run_dir: Path | None          # <storage_path>/<name>
    model_dir: Path | None        # the consolidated model of the latest checkpoint, copied to <run_dir>/model
    best_model_dir: Path | None   # the consolidated model of the best checkpoint (by val_loss)
    metrics: dict[str, Any]       # the latest checkpoint's metrics
    result: Any                   # ray.train.Result
    config: JobConfig             # the config it trained with (after the data type's preparation)


def fit(cfg: JobConfig, datatype=None) -> TrainOutcome:
    """Train (or resume, if a run with this name exists in ``run.storage_path``) and export the model.
    ``datatype``: the config's data type with its splits already loaded (else it is built here)."""
    import shutil

    check_stage_storage(cfg)
    cfg = absolute_storage(cfg)
    check_storage_reaches_every_node(cfg.run.storage_path)
    sep = "" if cfg.run.storage_path.endswith("/") else "/"
    print(f"run folder: {cfg.run.storage_path}{sep}{cfg.run.name}", flush=True)
    datatype, cfg = prepare(cfg, datatype)
    result = build_trainer(cfg, datatype=datatype).fit()
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError(f"run {cfg.run.name!r} finished without reporting a checkpoint")
    remote = "://" in cfg.run.storage_path
    run_dir = None if remote else Path(cfg.run.storage_path) / cfg.run.name
    model_dir = best_dir = None
    if run_dir is not None:
        latest = Path(result.checkpoint.path)
        model_dir = run_dir / "model"
        # a link to the latest checkpoint's export, not a copy: one consolidated copy per checkpoint
        if model_dir.is_symlink() or model_dir.is_file():
            model_dir.unlink()
        elif model_dir.exists():  # a copy written by an older version
            shutil.rmtree(model_dir)
        model_dir.symlink_to(os.path.relpath(latest / "model", run_dir), target_is_directory=True)
        best = result.get_best_checkpoint("val_loss", "min") if result.best_checkpoints else result.checkpoint
        best_dir = Path(best.path) / "model"
        (run_dir / "metrics.json").write_text(json.dumps(result.metrics, indent=2) + "\n")
        if cfg.prior_stage.active:
            record = run_prior_stage(cfg, datatype, model_dir)
            (run_dir / "prior_stage.json").write_text(json.dumps(record, indent=2) + "\n")
    return TrainOutcome(run_dir, model_dir, best_dir, dict(result.metrics or {}), result, cfg)

"""Experiment tracking with MLflow: every training run (and so every sweep trial) is an MLflow run with its
config as parameters, its training and validation metrics over steps, and its report's plots and metrics
as artifacts.

The embedded default is a local store beside the runs: ``<run.storage_path>/mlflow.db`` (SQLite; MLflow's
plain-folder store is in maintenance mode) with artifacts in ``<run.storage_path>/mlartifacts/``; browse
it with ``mlflow ui --backend-store-uri sqlite:///<run.storage_path>/mlflow.db``. ``run.tracking_uri``
names a shared server instead (``http://mlflow.internal:5000``); ``run.tracking: none`` switches it off.
The experiment is ``run.experiment`` (default ``diled``; a sweep uses its own name). A resumed run (same
``run.name``) continues the same MLflow run: its id is kept in the run folder (``mlflow_run_id``).

Why MLflow's client and not Ray's ``setup_mlflow``: Ray's helper starts a new MLflow run each time a
worker group starts, so a run that resumed after a crash would be split in two; Ray's Tune
``MLflowLoggerCallback`` would log each sweep trial a second time beside its training run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from diled_platform.config import JobConfig

log = logging.getLogger("diled")
RUN_ID_FILE = "mlflow_run_id"


def tracking_uri(cfg: JobConfig) -> str | None:
    """Where this run's tracking goes: ``run.tracking_uri``, else the local store beside the runs; None
    when tracking is off or the runs are on remote storage with no tracking URI given."""
    if cfg.run.tracking == "none":
        return None
    if cfg.run.tracking_uri:
        return cfg.run.tracking_uri
    if "://" in cfg.run.storage_path:
        return None
    return f"sqlite:///{Path(cfg.run.storage_path).resolve() / 'mlflow.db'}"


def experiment_id(mlflow, cfg: JobConfig) -> str:
    name = cfg.run.experiment
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):  # a local store: artifacts beside the database, not in the cwd
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts" / name).as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except Exception:  # created meanwhile by a concurrent trial
        return mlflow.get_experiment_by_name(name).experiment_id


def flat_params(data: dict, prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow parameters: ``{"optim.lr": "0.001", ...}`` (values as text, 500 chars)."""
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, name + "."))
        else:
            out[name] = str(value)[:500]
    return out


class Tracker:
    """The MLflow run of one training run, written by rank 0 of the workers (a no-op elsewhere, when
    tracking is off, or if MLflow cannot be reached: training never fails because of tracking)."""

    def __init__(self, cfg: JobConfig, rank: int, tags: dict[str, str] | None = None):
        self.client = self.run_id = None
        uri = tracking_uri(cfg) if rank == 0 else None
        if uri is None:
            return
        try:
            import mlflow
            from mlflow.tracking import MlflowClient

            mlflow.set_tracking_uri(uri)
            self.client = MlflowClient(uri)
            run_dir = Path(cfg.run.storage_path) / cfg.run.name
            id_file = run_dir / RUN_ID_FILE
            if id_file.is_file() and self._exists(id_file.read_text().strip()):
                self.run_id = id_file.read_text().strip()  # a resumed run continues its MLflow run
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                run = self.client.create_run(experiment_id(mlflow, cfg), run_name=cfg.run.name,
                                             tags={"diled.run_dir": str(run_dir), **(tags or {})})
                self.run_id = run.info.run_id
                self.client.log_batch(self.run_id, params=[_param(k, v) for k, v in flat_params(cfg.to_dict()).items()])
                run_dir.mkdir(parents=True, exist_ok=True)
                id_file.write_text(self.run_id + "\n")
        except Exception as e:  # noqa: BLE001 -- tracking is an aid, not a reason to lose a run
            log.warning(f"MLflow tracking off for this run ({uri}): {type(e).__name__}: {e}")
            self.client = self.run_id = None

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
            return True
        except Exception:  # noqa: BLE001
            return False

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        if self.run_id is None:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        # TensorBoard's tags as MLflow names: train/loss -> train_loss, val/val_rec -> val_rec
        metrics = [Metric(k.split("/", 1)[1] if k.startswith("val/") else k.replace("/", "_"), float(v), now, step)
                   for k, v in values.items() if isinstance(v, (int, float))]
        try:
            self.client.log_batch(self.run_id, metrics=metrics)
        except Exception as e:  # noqa: BLE001
            log.warning(f"MLflow: could not log metrics at step {step}: {e}")

    def close(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            try:
                self.client.set_terminated(self.run_id, status=status)
            except Exception:  # noqa: BLE001
                pass


def _param(key: str, value: str):
    from mlflow.entities import Param

    return Param(key, value)


def log_report(cfg: JobConfig, run_dir: Path, metrics: dict[str, Any], files: list[str]) -> None:
    """After the report (on the driver): its scalar metrics (``eval_<name>``) and ``files`` of the run
    folder that exist (plots, tables, eval.json) as artifacts of the run's MLflow run."""
    id_file = run_dir / RUN_ID_FILE
    uri = tracking_uri(cfg)
    if uri is None or not id_file.is_file():
        return
    try:
        from mlflow.tracking import MlflowClient

        client, run_id = MlflowClient(uri), id_file.read_text().strip()
        scalars = {f"eval_{k}": float(v) for k, v in _scalars(metrics).items()}
        for key, value in scalars.items():
            client.log_metric(run_id, key[:250], value)
        for name in files:
            if (run_dir / name).is_file():
                client.log_artifact(run_id, str(run_dir / name))
    except Exception as e:  # noqa: BLE001
        log.warning(f"MLflow: could not log the report of {run_dir}: {e}")


def _scalars(metrics: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_scalars(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            out[f"{prefix}{key}"] = value
    return out

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
    """The MLflow run of one training run, written by rank 0 of the workers (a no-op elsewhere or when
    tracking is off). All MLflow calls run on a background thread fed by a queue: training never waits
    for the store (a slow or locked database, an unreachable server) and never fails because of it; at
    the end ``close`` waits at most ``CLOSE_TIMEOUT_S`` for what is still queued."""

    CLOSE_TIMEOUT_S = 30.0

    def __init__(self, cfg: JobConfig, rank: int, tags: dict[str, str] | None = None):
        import queue
        import threading

        self.queue = None
        uri = tracking_uri(cfg) if rank == 0 else None
        if uri is None:
            return
        self.queue = queue.Queue()
        self.thread = threading.Thread(target=self._work, args=(cfg, uri, tags or {}), daemon=True,
                                       name="mlflow-tracker")
        self.thread.start()

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        if self.queue is not None:
            self.queue.put(("metrics", step, dict(values)))

    def close(self, status: str = "FINISHED") -> None:
        if self.queue is not None:
            self.queue.put(("close", status, None))
            self.thread.join(timeout=self.CLOSE_TIMEOUT_S)
            if self.thread.is_alive():
                log.warning(f"MLflow: the tracker did not finish within {self.CLOSE_TIMEOUT_S:.0f}s; some metrics may be missing")
            self.queue = None

    # ------------------------------------------------------------------ the background thread
    def _work(self, cfg: JobConfig, uri: str, tags: dict[str, str]) -> None:
        try:
            client, run_id = self._start(cfg, uri, tags)
        except Exception as e:  # noqa: BLE001 -- tracking is an aid, not a reason to lose a run
            log.warning(f"MLflow tracking off for this run ({uri}): {type(e).__name__}: {e}")
            client = run_id = None
        while True:
            kind, a, b = self.queue.get()
            if run_id is None:
                if kind == "close":
                    return
                continue
            try:
                if kind == "metrics":
                    client.log_batch(run_id, metrics=_metrics(a, b))
                else:
                    client.set_terminated(run_id, status=a)
                    return
            except Exception as e:  # noqa: BLE001
                log.warning(f"MLflow: {kind} at {a}: {type(e).__name__}: {e}")
                if kind == "close":
                    return

    @staticmethod
    def _start(cfg: JobConfig, uri: str, tags: dict[str, str]):
        """The MLflow run of this training run: the one its folder names (a resumed run), else a new one
        with the config as parameters."""
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        run_dir = Path(cfg.run.storage_path) / cfg.run.name
        id_file = run_dir / RUN_ID_FILE
        if id_file.is_file():
            run_id = id_file.read_text().strip()
            try:
                client.update_run(run_id, status="RUNNING")  # a resumed run continues its MLflow run
                return client, run_id
            except Exception:  # noqa: BLE001 -- gone from the store: start a new one
                pass
        run = client.create_run(experiment_id(mlflow, cfg), run_name=cfg.run.name,
                                tags={"diled.run_dir": str(run_dir), **tags})
        client.log_batch(run.info.run_id, params=[_param(k, v) for k, v in flat_params(cfg.to_dict()).items()])
        run_dir.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run.info.run_id + "\n")
        return client, run.info.run_id


def _metrics(step: int, values: dict[str, float]) -> list:
    """TensorBoard's tags as MLflow metrics: train/loss -> train_loss, val/val_rec -> val_rec."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k.split("/", 1)[1] if k.startswith("val/") else k.replace("/", "_"), float(v), now, step)
            for k, v in values.items() if isinstance(v, (int, float))]


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

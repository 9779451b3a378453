"""Ray Tune sweeps of DiLED's knobs (w, noise schedule, T, learning rate, or any config key), with Optuna
choosing the configurations and ASHA stopping the weak ones early, and the best trial's model exported
as a ``save_pretrained`` folder that ``jobs/serve.py`` deploys as is.

Ray Train V2's pattern for Tune: each Tune trial runs a small driver function that builds one
``TorchTrainer`` (the same trainer as a single run) and fits it; the trainer's reports reach Tune through
``TuneReportCallback``. Every trial reports its validation metrics at every checkpoint
(``run.checkpoint_every``), so ASHA has several points per trial to stop on.

The sweep file and its checks: ``diled_platform.sweeps.spec``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diled_platform.config import ConfigError, JobConfig
from diled_platform.sweeps.spec import SWEEPS_DIR, SweepConfig

__all__ = ["SWEEPS_DIR", "SweepConfig", "SweepInterrupted", "SweepOutcome", "run_sweep", "trial_driver", "pareto_front",
           "balanced_point", "summarize", "concurrent_trials"]

log = logging.getLogger("diled")

DRIVER_CPUS = 0.1            # the per-trial driver function; its TorchTrainer's workers hold the rest


# ----------------------------------------------------------------------------- the per-trial driver
def trial_driver(config: dict[str, Any], meta: dict[str, Any]) -> None:
    """One Tune trial: build this trial's TorchTrainer and fit it (its reports go to Tune). The inner run
    is named after the trial id, so a resumed trial resumes its own Train checkpoints; its MLflow run is
    in the sweep's experiment."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from diled_platform.training.driver import build_trainer

    params, sweep_meta = dict(config), meta
    trial_id = tune.get_context().get_trial_id()
    cfg = SweepConfig(**sweep_meta["sweep"]).job_config(
        {**params, "run.storage_path": sweep_meta["train_storage"], "run.experiment": sweep_meta["sweep"]["name"],
         "run.tracking_uri": sweep_meta["tracking_uri"]}, base=sweep_meta["base"], run_name=trial_id)
    trainer = build_trainer(cfg, callbacks=[TuneReportCallback()])
    result = trainer.fit()
    if result.error is not None:
        raise result.error


# ----------------------------------------------------------------------------- the sweep
@dataclass
class SweepOutcome:
    sweep_dir: Path
    table: Path                 # results.csv
    plot: Path                  # sweep.png (one metric) or pareto.png (several)
    best_model_dir: Path        # save_pretrained folder of the promoted trial's checkpoint
    best: dict[str, Any]        # its trial id, parameters and metrics
    rows: list[dict[str, Any]]
    front: list[str] = field(default_factory=list)   # trial ids on the Pareto front (several metrics)
    sensitivity: Path | None = None


def concurrent_trials(cfg: JobConfig) -> int:
    """How many trials fit on the cluster at once (each needs its workers plus the driver)."""
    import ray

    total = ray.cluster_resources()
    need_cpu = cfg.scaling.num_workers * cfg.scaling.cpus_per_worker + DRIVER_CPUS
    fit = int(total.get("CPU", 0) // need_cpu)
    if cfg.scaling.use_gpu:
        fit = min(fit, int(total.get("GPU", 0) // cfg.scaling.num_workers))
    if fit < 1:
        raise ConfigError(f"one trial needs {need_cpu:g} CPUs{' and GPUs' if cfg.scaling.use_gpu else ''}; "
                          f"the cluster has {total.get('CPU', 0):g}")
    return fit


def run_sweep(sweep: SweepConfig, base: dict | None = None, pick: str | None = None) -> SweepOutcome:
    """Run (or resume) the sweep; write results.csv, the plots and best_model/ into its folder.

    One metric: Optuna's TPE on it, ASHA on it, the best trial promoted. Several: Optuna's multi-objective
    sampler (NSGA-II) on all of them, ASHA on the first (a scheduler stops on one number), the Pareto
    front reported, and ``pick`` (a trial id on the front; default the balanced point, ``pareto_front``)
    promoted. Needs Ray's dashboard (the state API): Train V2 inside a Tune trial watches its controller
    through it, and without it a trial never finishes. ``init_ray()`` and clusters have it."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from diled_platform.datatypes import datatype_for

    base = base if base is not None else sweep.base()
    storage = Path(sweep.storage_path).expanduser().resolve()
    sweep_dir = storage / sweep.name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    # the data type's preparation once, for every trial (text: one tokenizer trained on the training split)
    base_cfg = JobConfig.from_dict(base)
    base = datatype_for(base_cfg).prepare(base_cfg, sweep_dir).to_dict()
    # every trial tracked in the sweep's experiment of the store beside the runs (or the base's server)
    uri = base_cfg.run.tracking_uri or f"sqlite:///{storage / 'mlflow.db'}"
    meta = {"sweep": {k: getattr(sweep, k) for k in sweep.__dataclass_fields__}, "base": base,
            "train_storage": str(sweep_dir / "trials"), "tracking_uri": uri}
    trainable = tune.with_resources(tune.with_parameters(trial_driver, meta=meta), {"CPU": DRIVER_CPUS})
    tune_dir = sweep_dir / "tune"
    if tune.Tuner.can_restore(str(tune_dir)):
        log.info(f"resuming the sweep in {tune_dir}")
        tuner = tune.Tuner.restore(str(tune_dir), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True, param_space=sweep.param_space())
    else:
        cfg = JobConfig.from_dict(base)
        max_t = sweep.reports_per_trial(base)
        points = [dict(p) for p in sweep.points] or None
        if sweep.multi:
            import optuna

            searcher = OptunaSearch(metric=sweep.metrics, mode=sweep.modes, points_to_evaluate=points,
                                    sampler=optuna.samplers.NSGAIISampler(seed=sweep.seed))
        else:
            searcher = OptunaSearch(metric=sweep.metrics[0], mode=sweep.modes[0], seed=sweep.seed,
                                    points_to_evaluate=points)
        tuner = tune.Tuner(
            trainable,
            param_space=sweep.param_space(),
            tune_config=tune.TuneConfig(
                num_samples=sweep.num_samples, search_alg=searcher,
                scheduler=ASHAScheduler(metric=sweep.metrics[0], mode=sweep.modes[0], time_attr="training_iteration",
                                        max_t=max_t, **sweep.asha),
                max_concurrent_trials=sweep.max_concurrent_trials or concurrent_trials(cfg),
                trial_name_creator=lambda t: f"trial_{t.trial_id}",
                trial_dirname_creator=lambda t: f"trial_{t.trial_id}"),
            run_config=tune.RunConfig(name="tune", storage_path=str(sweep_dir), verbose=0))
    grid = tuner.fit()
    finished = grid.num_terminated + grid.num_errors
    if finished < sweep.num_samples:
        # Ctrl-C (Tune stops gracefully and saves its state) or a lost driver: keep what ran, promote nothing
        if len(grid):
            _write_csv(_rows(sweep, grid, base), sweep_dir / "results.csv")
        raise SweepInterrupted(f"sweep {sweep.name} stopped with {finished} of {sweep.num_samples} trials "
                               f"finished; run the same command again to resume it ({tune_dir})")
    return summarize(sweep, grid, sweep_dir, base, pick)


class SweepInterrupted(RuntimeError):
    """The sweep stopped before all its trials finished; its state is saved and re-running resumes it."""


def _checkpoints(trial_dir: Path) -> list[tuple[Path, dict]]:
    """A trial's checkpoints that hold a model, in step order, with their metrics (train_state.json)."""
    out = []
    for state_file in sorted(trial_dir.glob("checkpoint_*/train_state.json")):
        state = json.loads(state_file.read_text())
        if (state_file.parent / "model").is_dir():
            out.append((state_file.parent, state["metrics"]))
    return sorted(out, key=lambda c: c[1].get("step", 0))


def _best_checkpoint(trial_dir: Path, metric: str, mode: str) -> tuple[Path, dict] | None:
    """The best checkpoint of one trial's Train run by ``metric``."""
    best = None
    for checkpoint, metrics in _checkpoints(trial_dir):
        value = metrics.get(metric)
        if value is None or not math.isfinite(value):
            continue
        if best is None or (value < best[1][metric] if mode == "min" else value > best[1][metric]):
            best = (checkpoint, metrics)
    return best


def _rows(sweep: SweepConfig, grid, base: dict) -> list[dict[str, Any]]:
    """One row per trial: its sampled values, how often it reported, whether ASHA stopped it, and for
    each objective its last and best reported value."""
    max_t = sweep.reports_per_trial(base)
    rows = []
    for result in grid:
        trial_id = Path(result.path).name.removeprefix("trial_")
        params = {k: (result.config or {}).get(k) for k in sweep.space}  # no config: never started
        history = result.metrics_dataframe
        reports = 0 if history is None else len(history)
        row = {"trial_id": trial_id, **params, "reports": reports,
               "stopped_early": result.error is None and 0 < reports < max_t,
               "status": "error" if result.error is not None else "done" if reports else "not run"}
        for metric, mode in zip(sweep.metrics, sweep.modes):
            values = [] if history is None or metric not in history else history[metric].dropna().tolist()
            row[f"last_{metric}"] = values[-1] if values else float("nan")
            row[f"best_{metric}"] = (min(values) if mode == "min" else max(values)) if values else float("nan")
        for k, v in (result.metrics or {}).items():  # every validation metric of the last report
            if k.startswith("val_") or k in ("mu_abs", "active_dims"):
                row.setdefault(f"last_{k}", v)
        rows.append(row)
    return rows


def pareto_front(points: dict[str, list[float]], modes: list[str]) -> list[str]:
    """The keys of ``points`` that no other point dominates (at least as good in every objective and
    better in one; ``modes`` says min or max per objective). Points with a non-finite value are left out."""
    sign = [1.0 if m == "min" else -1.0 for m in modes]
    finite = {k: [s * v for s, v in zip(sign, vals)] for k, vals in points.items()
              if all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals)}

    def dominates(a, b):
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    return [k for k, v in finite.items() if not any(dominates(o, v) for j, o in finite.items() if j != k)]


def balanced_point(points: dict[str, list[float]], modes: list[str], front: list[str]) -> str:
    """The front point nearest the ideal one (each objective's best value on the front), with every
    objective scaled to [0, 1] over the front: the default promotion of a multi-objective sweep, neither
    extreme of the trade-off. Ties (a front of two points is always one) go to the better first
    objective, then to the smaller trial id: the same rows always promote the same trial."""
    def scaled(k: str) -> float:
        total = 0.0
        for i, mode in enumerate(modes):
            values = [points[j][i] for j in front]
            lo, hi = min(values), max(values)
            gap = (points[k][i] - lo if mode == "min" else hi - points[k][i]) / (hi - lo) if hi > lo else 0.0
            total += gap ** 2
        return total

    first = 1.0 if modes[0] == "min" else -1.0
    return min(front, key=lambda k: (round(scaled(k), 12), first * points[k][0], k))


def summarize(sweep: SweepConfig, grid, sweep_dir: Path, base: dict, pick: str | None = None) -> SweepOutcome:
    rows = _rows(sweep, grid, base)
    if not rows:
        raise RuntimeError(f"sweep {sweep.name}: no trial results")
    table = sweep_dir / "results.csv"
    front: list[str] = []
    if sweep.multi:
        # the front over the trials that ran the whole budget (ASHA's stopped ones were measured earlier
        # in training: not comparable); over all trials if fewer than two finished
        full = [r for r in rows if r["status"] == "done" and not r["stopped_early"]]
        pool = full if len(full) >= 2 else [r for r in rows if r["status"] == "done"]
        points = {r["trial_id"]: [r[f"last_{m}"] for m in sweep.metrics] for r in pool}
        front = pareto_front(points, sweep.modes)
        for r in rows:
            r["pareto"] = r["trial_id"] in front
        if not front:
            raise RuntimeError(f"sweep {sweep.name}: no trial reported every objective {sweep.metrics}")
        if pick is not None and pick not in front:
            raise ConfigError(f"--pick {pick}: not on the Pareto front ({', '.join(front)})")
        chosen = pick or balanced_point(points, sweep.modes, front)
        found = (_checkpoints(sweep_dir / "trials" / chosen) or [None])[-1]  # the checkpoint the front point is
        if found is None:
            raise RuntimeError(f"sweep {sweep.name}: trial {chosen} left no checkpoint with a model")
        row = next(r for r in rows if r["trial_id"] == chosen)
    else:
        metric, mode = sweep.metrics[0], sweep.modes[0]
        # promote: the best checkpoint of the best trial (by the metric, whether or not ASHA stopped it)
        ranked = sorted((r for r in rows if math.isfinite(r[f"best_{metric}"])),
                        key=lambda r: r[f"best_{metric}"], reverse=mode == "max")
        if pick is not None:
            ranked = [r for r in ranked if r["trial_id"] == pick]
        for row in ranked:
            found = _best_checkpoint(sweep_dir / "trials" / row["trial_id"], metric, mode)
            if found is not None:
                break
        else:
            raise RuntimeError(f"sweep {sweep.name}: no trial left a checkpoint with a model")
    _write_csv(rows, table)
    checkpoint, metrics = found
    best_model = sweep_dir / "best_model"
    if best_model.exists():
        shutil.rmtree(best_model)
    shutil.copytree(checkpoint / "model", best_model)
    best = {"sweep": sweep.name, "trial_id": row["trial_id"], "checkpoint": str(checkpoint),
            "metric": sweep.metric, "value": [metrics.get(m) for m in sweep.metrics] if sweep.multi
            else metrics[sweep.metrics[0]], "params": {k: row[k] for k in sweep.space}, "metrics": metrics,
            "pareto_front": front, "chosen_by": ("--pick" if pick else "balanced point of the Pareto front")
            if sweep.multi else ("--pick" if pick else f"best {sweep.metrics[0]}")}
    if sweep.report:  # the same report a training run writes, on the promoted model
        from diled_platform.datatypes import datatype_for

        cfg = JobConfig.from_dict(base)
        report_dir = sweep_dir / "best_report"
        report_dir.mkdir(exist_ok=True)
        best["report"] = datatype_for(cfg).report(best_model, report_dir, cfg, seed=cfg.run.seed)
    (sweep_dir / "best.json").write_text(json.dumps(best, indent=2, default=str) + "\n")
    # the served model says where it came from (GET /healthz shows it)
    (best_model / "provenance.json").write_text(json.dumps({k: v for k, v in best.items() if k != "report"},
                                                           indent=2, default=str) + "\n")
    from diled_platform.sweeps.plots import pareto_plot, sensitivity_plot, sweep_plot

    plot = sweep_dir / ("pareto.png" if sweep.multi else "sweep.png")
    (pareto_plot if sweep.multi else sweep_plot)(rows, sweep, plot)
    sensitivity = sweep_dir / "sensitivity.png"
    sensitivity_plot(rows, sweep, sensitivity)
    _track(sweep, base, sweep_dir, best, [table, plot, sensitivity, sweep_dir / "best.json"])
    return SweepOutcome(sweep_dir, table, plot, best_model, best, rows, front, sensitivity)


def _track(sweep: SweepConfig, base: dict, sweep_dir: Path, best: dict, files: list[Path]) -> None:
    """The sweep itself as one MLflow run in its experiment (beside its trials): the promoted trial and
    the tables and plots as artifacts."""
    from diled_platform.training.tracking import tracking_uri

    storage = sweep_dir.parent
    cfg = JobConfig.from_dict({**base, "run": {**base.get("run", {}), "storage_path": str(storage),
                                               "experiment": sweep.name}})
    uri = tracking_uri(cfg)
    if uri is None:
        return
    try:
        import mlflow

        from diled_platform.training.tracking import experiment_id

        mlflow.set_tracking_uri(uri)
        with mlflow.start_run(experiment_id=experiment_id(mlflow, cfg), run_name=f"{sweep.name} (sweep)",
                              tags={"diled.sweep": sweep.name, "diled.promoted_trial": best["trial_id"]}):
            mlflow.log_params({"space": json.dumps(sweep.space)[:500], "metric": str(sweep.metric),
                               "num_samples": sweep.num_samples, "promoted_trial": best["trial_id"]})
            for f in files:
                if f.is_file():
                    mlflow.log_artifact(str(f))
    except Exception as e:  # noqa: BLE001 -- tracking never fails a finished sweep
        log.warning(f"MLflow: could not log the sweep {sweep.name}: {e}")


def _write_csv(rows: list[dict], path: Path) -> None:
    import csv

    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

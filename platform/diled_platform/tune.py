"""Ray Tune sweeps of DiLED's knobs (w, noise schedule, T, learning rate, or any config key), with Optuna
choosing the configurations and ASHA stopping the weak ones early, and the best trial's model exported
as a ``save_pretrained`` folder that ``jobs/serve.py`` deploys as is.

The Train V2 pattern (../shared/STACK.md): each Tune trial runs a small driver function that builds one
``TorchTrainer`` (the same trainer as a single run) and fits it; the trainer's reports reach Tune through
``TuneReportCallback``. Every trial reports its validation metrics at every checkpoint
(``run.checkpoint_every``), so ASHA has several points per trial to stop on.

A sweep file (``platform/sweeps/*.yaml``)::

    name: sweep-text                  # folder under storage_path; re-running resumes it
    preset: text-cpu                  # the job config each trial starts from
    overrides: {optim.max_steps: 300, run.checkpoint_every: 75}
    metric: val_nelbo                 # w-free negative ELBO (val_loss depends on w: not comparable)
    mode: min
    num_samples: 8
    seed: 0                           # Optuna's sampler seed
    asha: {grace_period: 1, reduction_factor: 2}
    space:
      model.w: {loguniform: [0.1, 10.0]}
      diffusion.schedule: {choice: [constant, linear, cosine]}
      diffusion.T: {choice: [200, 1000]}
      optim.lr: {loguniform: [1.0e-4, 2.0e-3]}
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diled_platform.config import ConfigError, JobConfig, load_preset

log = logging.getLogger("diled")

SWEEPS_DIR = Path(__file__).resolve().parents[1] / "sweeps"
DRIVER_CPUS = 0.1            # the per-trial driver function; its TorchTrainer's workers hold the rest
DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint")
METRICS = ("val_nelbo", "val_rec", "val_diff", "val_loss")


@dataclass
class SweepConfig:
    name: str
    preset: str
    space: dict[str, dict[str, list]]
    overrides: dict[str, Any] = field(default_factory=dict)
    metric: str = "val_nelbo"
    mode: str = "min"
    num_samples: int = 8
    seed: int = 0
    asha: dict[str, Any] = field(default_factory=lambda: {"grace_period": 1, "reduction_factor": 2})
    storage_path: str = "runs"
    max_concurrent_trials: int | None = None   # None: as many as the cluster's CPUs/GPUs hold

    @classmethod
    def load(cls, name_or_path: str, **changes) -> "SweepConfig":
        """A sweep file by path, or by name from ``platform/sweeps/``; ``changes`` override its keys."""
        import yaml

        path = Path(name_or_path)
        if not path.is_file():
            path = SWEEPS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
            raise ConfigError(f"no sweep file {name_or_path!r} (a path, or one of {known})")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a sweep file is a mapping, got {type(data).__name__}")
        data.update({k: v for k, v in changes.items() if v is not None})
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ConfigError(f"{path}: unknown sweep key(s) {unknown}; valid: {sorted(allowed)}")
        for key in ("name", "preset", "space"):
            if key not in data:
                raise ConfigError(f"{path}: the sweep needs '{key}'")
        sweep = cls(**data)
        sweep.validate()
        return sweep

    def validate(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"sweep metric {self.metric!r} is not reported; valid: {list(METRICS)}")
        if self.mode not in ("min", "max"):
            raise ConfigError(f"sweep mode must be 'min' or 'max', got {self.mode!r}")
        if not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise ConfigError(f"sweep num_samples must be a positive integer, got {self.num_samples!r}")
        if not self.space:
            raise ConfigError("sweep space is empty: give at least one key to search")
        for key, spec in self.space.items():
            if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
                raise ConfigError(f"space.{key} must be one of {{{', '.join(DISTRIBUTIONS)}: [...]}}, got {spec!r}")
            (kind, args), = spec.items()
            if kind in ("loguniform", "uniform", "randint"):
                if not (isinstance(args, list) and len(args) == 2 and args[0] < args[1]):
                    raise ConfigError(f"space.{key}: {kind} needs [low, high] with low < high, got {args!r}")
                if kind == "loguniform" and args[0] <= 0:
                    raise ConfigError(f"space.{key}: loguniform needs low > 0, got {args[0]}")
            elif not (isinstance(args, list) and args):
                raise ConfigError(f"space.{key}: choice needs a non-empty list, got {args!r}")
        for key in ("grace_period", "reduction_factor"):
            if key not in self.asha:
                raise ConfigError(f"sweep asha needs {key}")
        self.job_config({k: _example(v) for k, v in self.space.items()})  # every key and value type is valid

    # ------------------------------------------------------------------ configs
    def base(self) -> dict[str, Any]:
        """The preset with the sweep's ``overrides`` (every trial starts from it)."""
        return _set_dotted(load_preset(self.preset), self.overrides, "overrides")

    def job_config(self, params: dict[str, Any], base: dict | None = None, run_name: str | None = None) -> JobConfig:
        """The job config of one trial: the preset, the sweep's overrides, the trial's sampled values."""
        data = _set_dotted(base if base is not None else self.base(), params, "space")
        if run_name:
            data.setdefault("run", {})["name"] = run_name
        return JobConfig.from_dict(data)

    def param_space(self) -> dict[str, Any]:
        from ray import tune

        make = {"loguniform": lambda a: tune.loguniform(*a), "uniform": lambda a: tune.uniform(*a),
                "randint": lambda a: tune.randint(*a), "choice": tune.choice}
        return {key: make[kind](args) for key, spec in self.space.items() for kind, args in spec.items()}

    def reports_per_trial(self, base: dict) -> int:
        cfg = JobConfig.from_dict(base)
        return math.ceil(cfg.optim.max_steps / cfg.run.checkpoint_every)


def _set_dotted(data: dict, values: dict[str, Any], where: str) -> dict:
    """A deep copy of the config ``data`` with ``section.key`` entries set (``where`` names the sweep key)."""
    data = json.loads(json.dumps(data))
    for dotted, value in values.items():
        parts = str(dotted).split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"{where}: {dotted!r} must be section.key, e.g. model.w")
        section = data.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: {dotted!r}: section {parts[0]!r} is not a mapping")
        section[parts[1]] = value
    return data


def _example(spec: dict) -> Any:
    (kind, args), = spec.items()
    return args[0] if kind != "randint" else int(args[0])


# ----------------------------------------------------------------------------- the per-trial driver
def trial_driver(config: dict[str, Any], meta: dict[str, Any]) -> None:
    """One Tune trial: build this trial's TorchTrainer and fit it (its reports go to Tune). The inner run
    is named after the trial id, so a resumed trial resumes its own Train checkpoints."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from diled_platform.train import build_trainer

    params, sweep_meta = dict(config), meta
    trial_id = tune.get_context().get_trial_id()
    cfg = SweepConfig(**sweep_meta["sweep"]).job_config(
        {**params, "run.storage_path": sweep_meta["train_storage"]}, base=sweep_meta["base"], run_name=trial_id)
    trainer = build_trainer(cfg, callbacks=[TuneReportCallback()])
    result = trainer.fit()
    if result.error is not None:
        raise result.error


# ----------------------------------------------------------------------------- the sweep
@dataclass
class SweepOutcome:
    sweep_dir: Path
    table: Path                 # results.csv
    plot: Path                  # sweep.png
    best_model_dir: Path        # save_pretrained folder of the best trial's best checkpoint
    best: dict[str, Any]        # its trial id, parameters and metrics
    rows: list[dict[str, Any]]


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


def run_sweep(sweep: SweepConfig, base: dict | None = None) -> SweepOutcome:
    """Run (or resume) the sweep; write results.csv, sweep.png and best_model/ into its folder.

    Needs Ray's dashboard (the state API): Train V2 inside a Tune trial watches its controller through
    it, and without it a trial never finishes. ``init_ray()`` and clusters have it."""
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
    meta = {"sweep": {k: getattr(sweep, k) for k in sweep.__dataclass_fields__}, "base": base,
            "train_storage": str(sweep_dir / "trials")}
    trainable = tune.with_resources(tune.with_parameters(trial_driver, meta=meta), {"CPU": DRIVER_CPUS})
    tune_dir = sweep_dir / "tune"
    if tune.Tuner.can_restore(str(tune_dir)):
        log.info(f"resuming the sweep in {tune_dir}")
        tuner = tune.Tuner.restore(str(tune_dir), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True, param_space=sweep.param_space())
    else:
        cfg = JobConfig.from_dict(base)
        max_t = sweep.reports_per_trial(base)
        tuner = tune.Tuner(
            trainable,
            param_space=sweep.param_space(),
            tune_config=tune.TuneConfig(
                metric=sweep.metric, mode=sweep.mode, num_samples=sweep.num_samples,
                search_alg=OptunaSearch(seed=sweep.seed),
                scheduler=ASHAScheduler(time_attr="training_iteration", max_t=max_t, **sweep.asha),
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
    return summarize(sweep, grid, sweep_dir, base)


class SweepInterrupted(RuntimeError):
    """The sweep stopped before all its trials finished; its state is saved and re-running resumes it."""


def _best_checkpoint(trial_dir: Path, metric: str, mode: str) -> tuple[Path, dict] | None:
    """The best checkpoint of one trial's Train run by ``metric`` (from its train_state.json)."""
    best = None
    for state_file in sorted(trial_dir.glob("checkpoint_*/train_state.json")):
        metrics = json.loads(state_file.read_text())["metrics"]
        value = metrics.get(metric)
        if value is None or not math.isfinite(value) or not (state_file.parent / "model").is_dir():
            continue
        if best is None or (value < best[1][metric] if mode == "min" else value > best[1][metric]):
            best = (state_file.parent, metrics)
    return best


def _rows(sweep: SweepConfig, grid, base: dict) -> list[dict[str, Any]]:
    """One row per trial: its sampled values, how often it reported, whether ASHA stopped it, metrics."""
    max_t = sweep.reports_per_trial(base)
    rows = []
    for result in grid:
        trial_id = Path(result.path).name.removeprefix("trial_")
        params = {k: (result.config or {}).get(k) for k in sweep.space}  # no config: never started
        history = result.metrics_dataframe
        reports = 0 if history is None else len(history)
        values = [] if history is None or sweep.metric not in history else history[sweep.metric].dropna().tolist()
        best_value = (min(values) if sweep.mode == "min" else max(values)) if values else float("nan")
        rows.append({"trial_id": trial_id, **params, "reports": reports,
                     "stopped_early": result.error is None and 0 < reports < max_t,
                     "status": "error" if result.error is not None else "done" if reports else "not run",
                     f"last_{sweep.metric}": values[-1] if values else float("nan"),
                     f"best_{sweep.metric}": best_value,
                     **{f"last_{k}": (result.metrics or {}).get(k) for k in ("val_rec", "val_diff", "mu_abs", "active_dims")}})
    return rows


def summarize(sweep: SweepConfig, grid, sweep_dir: Path, base: dict) -> SweepOutcome:
    rows = _rows(sweep, grid, base)
    if not rows:
        raise RuntimeError(f"sweep {sweep.name}: no trial results")
    table = sweep_dir / "results.csv"
    _write_csv(rows, table)
    plot = sweep_dir / "sweep.png"
    _plot(rows, sweep, plot)

    # promote: the best checkpoint of the best trial (by the metric, whether or not ASHA stopped it)
    ranked = sorted((r for r in rows if math.isfinite(r[f"best_{sweep.metric}"])),
                    key=lambda r: r[f"best_{sweep.metric}"], reverse=sweep.mode == "max")
    for row in ranked:
        found = _best_checkpoint(sweep_dir / "trials" / row["trial_id"], sweep.metric, sweep.mode)
        if found is not None:
            break
    else:
        raise RuntimeError(f"sweep {sweep.name}: no trial left a checkpoint with a model")
    checkpoint, metrics = found
    best_model = sweep_dir / "best_model"
    if best_model.exists():
        shutil.rmtree(best_model)
    shutil.copytree(checkpoint / "model", best_model)
    best = {"trial_id": row["trial_id"], "checkpoint": str(checkpoint), "metric": sweep.metric,
            "value": metrics[sweep.metric], "params": {k: row[k] for k in sweep.space}, "metrics": metrics}
    (sweep_dir / "best.json").write_text(json.dumps(best, indent=2) + "\n")
    return SweepOutcome(sweep_dir, table, plot, best_model, best, rows)


def _write_csv(rows: list[dict], path: Path) -> None:
    import csv

    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _plot(rows: list[dict], sweep: SweepConfig, path: Path) -> None:
    """The metric against w (log scale), one colour per schedule; hollow markers: stopped by ASHA."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"best_{sweep.metric}"
    x_key = "model.w" if "model.w" in sweep.space else next(iter(sweep.space))
    fig, ax = plt.subplots(figsize=(6, 4))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(r.get("diffusion.schedule", "all")), []).append(r)
    for (name, members), colour in zip(sorted(groups.items()), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4):
        for stopped in (False, True):
            pts = [(r[x_key], r[key]) for r in members if r["stopped_early"] == stopped and math.isfinite(r[key])]
            if pts:
                ax.scatter(*zip(*pts), label=f"{name}{' (stopped early)' if stopped else ''}",
                           facecolors="none" if stopped else colour, edgecolors=colour, s=50)
    if sweep.space.get(x_key, {}).get("loguniform"):
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    values = [r[key] for r in rows if math.isfinite(r[key])]
    if values and max(values) - min(values) > 100 * max(1e-9, min(abs(v) for v in values) or 1):
        ax.set_yscale("symlog", linthresh=1.0)  # bad trials are orders of magnitude off
    ax.set_xlabel(x_key)
    ax.set_ylabel(f"{sweep.metric} (best report, {sweep.mode})")
    ax.set_title(f"sweep {sweep.name}: {len(rows)} trials")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

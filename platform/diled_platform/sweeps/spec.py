"""A sweep file and its checks: what to sweep (a preset, per-trial overrides, the search space over any
``section.key``), toward which objectives, with how many trials; parsed into ``SweepConfig``, every value
checked before a trial starts.

A sweep file (``platform/sweeps/*.yaml``)::

    name: sweep-text                  # folder under storage_path; re-running resumes it
    preset: text-cpu                  # the job config each trial starts from
    overrides: {optim.max_steps: 300, run.checkpoint_every: 75}
    metric: val_nelbo                 # w-free negative ELBO (val_loss depends on w: not comparable)
    mode: min
    # or several objectives, a multi-objective search with a Pareto front (ASHA stops on the first):
    # metric: [val_rec, val_prior_fd]
    # mode: [min, min]
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

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diled.checks import check_keys
from diled_platform.config import ConfigError, JobConfig, load_preset, set_dotted


SWEEPS_DIR = Path(__file__).resolve().parents[2] / "sweeps"
DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint")
# what every run reports at each validation (diled_platform.training.train.evaluate); a codec's own terms come as
# val_<name> (protein: val_fitness_mse) and are accepted too
METRICS = ("val_nelbo", "val_rec", "val_diff", "val_loss", "val_prior_fd")


@dataclass
class SweepConfig:
    name: str
    preset: str
    space: dict[str, dict[str, list]]
    overrides: dict[str, Any] = field(default_factory=dict)
    metric: str | list[str] = "val_nelbo"     # one metric, or a list: a multi-objective sweep
    mode: str | list[str] = "min"
    num_samples: int = 8
    seed: int = 0
    asha: dict[str, Any] = field(default_factory=lambda: {"grace_period": 1, "reduction_factor": 2})
    storage_path: str = "runs"
    max_concurrent_trials: int | None = None   # None: as many as the cluster's CPUs/GPUs hold
    report: bool = True                        # the data type's report on the promoted model (best_report/)
    # configurations tried first, before the sampler's own (e.g. the paper's w = 8 and w = 1), each a
    # value for every key of the space; they count among num_samples
    points: list = field(default_factory=list)

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
        check_keys(data, cls.__dataclass_fields__, "sweep key(s)", f"in {path}", error=ConfigError)
        for key in ("name", "preset", "space"):
            if key not in data:
                raise ConfigError(f"{path}: the sweep needs '{key}'")
        sweep = cls(**data)
        sweep.validate()
        return sweep

    @property
    def metrics(self) -> list[str]:
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @property
    def modes(self) -> list[str]:
        return [self.mode] * len(self.metrics) if isinstance(self.mode, str) else list(self.mode)

    @property
    def multi(self) -> bool:
        return len(self.metrics) > 1

    def validate(self) -> None:
        metrics = self.metrics
        if not metrics or len(set(metrics)) != len(metrics):
            raise ConfigError(f"sweep metric must be a name or a list of distinct names, got {self.metric!r}")
        from diled.codecs import codec_class

        try:
            terms = codec_class(self.base().get("model", {}).get("codec", "vector")).auxiliary_terms
        except ValueError as e:
            raise ConfigError(f"sweep preset {self.preset!r}: {e}") from None
        reported = [*METRICS, *(f"val_{t}" for t in terms)]
        for m in metrics:
            if m not in reported:
                raise ConfigError(f"sweep metric {m!r} is not reported; valid: {reported}")
        if len(self.modes) != len(metrics) or any(m not in ("min", "max") for m in self.modes):
            raise ConfigError(f"sweep mode must be 'min' or 'max' (one per metric), got {self.mode!r}")
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
        if not isinstance(self.points, list) or len(self.points) > self.num_samples:
            raise ConfigError(f"sweep points must be a list of at most num_samples ({self.num_samples}) mappings")
        for point in self.points:  # Optuna takes a point only with a value for every key of the space
            if not isinstance(point, dict) or set(point) != set(self.space):
                keys = sorted(set(point) ^ set(self.space)) if isinstance(point, dict) else []
                raise ConfigError(f"sweep points: {point!r} must give a value for every key of the space "
                                  f"({', '.join(self.space)}); missing or not in it: {keys}")
            self.job_config(point)

    # ------------------------------------------------------------------ configs
    def base(self) -> dict[str, Any]:
        """The preset with the sweep's ``overrides`` (every trial starts from it)."""
        return set_dotted(load_preset(self.preset), self.overrides, "overrides")

    def job_config(self, params: dict[str, Any], base: dict | None = None, run_name: str | None = None) -> JobConfig:
        """The job config of one trial: the preset, the sweep's overrides, the trial's sampled values."""
        data = set_dotted(base if base is not None else self.base(), params, "space")
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


def _example(spec: dict) -> Any:
    (kind, args), = spec.items()
    return args[0] if kind != "randint" else int(args[0])

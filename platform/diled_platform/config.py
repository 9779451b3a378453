"""Typed job configs: one dataclass per section, YAML presets, ``--section.key=value`` overrides.

A job config has the sections ``model``, ``diffusion``, ``data``, ``optim``, ``scaling`` and ``run``.
Presets live in ``platform/presets/<name>.yaml``; a value from the command line is parsed as YAML
(``--optim.lr=3e-4``, ``--model.codec_args={hidden: 64}``). Unknown sections or keys are errors that
name the key and list the valid ones; so are values of the wrong type.
"""

from __future__ import annotations

import copy
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import torch
import yaml

from diled.denoiser import PAPER_PRIOR, build_prior
from diled.model import DEFAULT_W, Objective
from diled.schedules import ScheduleName
from diled.checks import check_keys
from diled.codecs import check_codec_args
from diled_platform.options import ConfigError, DataOptions, positive  # noqa: F401 (public here too)

_positive = positive  # the name plug-ins written before diled_platform.options use

PLATFORM_DIR = Path(__file__).resolve().parent.parent  # .../platform
PRESETS_DIR = PLATFORM_DIR / "presets"
DEEPSPEED_DIR = PLATFORM_DIR / "deepspeed"


@dataclass
class ModelConfig:
    codec: str = "vector"                       # a registered codec name (diled.codecs)
    codec_args: dict = field(default_factory=dict)  # the codec's keyword arguments, except latent_dim
    latent_dim: int = 2
    prior: str = "mlp_skip"                     # the prior network by name (diled.denoiser.PRIORS)
    prior_hidden: int = PAPER_PRIOR["hidden"]   # its width (MLPSkipNet: the paper's 2048; SlotTransformer: slot width)
    prior_depth: int = PAPER_PRIOR["depth"]     # its depth (MLPSkipNet layers: the paper's 20; transformer blocks)
    prior_args: dict = field(default_factory=dict)  # the prior's other arguments (slot_transformer: slots, heads)
    time_dim: int = PAPER_PRIOR["time_dim"]
    w: float = DEFAULT_W                        # prior weight (paper: 8 text, 1 protein/images; presets set theirs)
    # diled: joint; autoencoder: the prior switched off (baseline, two-stage step 1); prior_only: the prior
    # on a frozen codec (two-stage step 2, with init_from the step-1 model); vae: the VAE baseline
    objective: Objective = "diled"
    init_from: str | None = None                # start from this save_pretrained folder's weights
    vae: dict = field(default_factory=dict)     # objective vae: beta, anneal_steps, free_bits (diled.baselines.vae)
    # the joint prior knows the data type's classes (set into prior_args.classes on the driver), each training
    # example's class dropped to the null class with probability cond_drop: classifier-free guidance
    conditional: bool = False
    cond_drop: float = 0.1

    def prior_config(self) -> dict[str, Any]:
        """The ``build_prior`` dict of this model's prior."""
        return {"name": self.prior, "latent_dim": self.latent_dim, "hidden": self.prior_hidden,
                "depth": self.prior_depth, "time_dim": self.time_dim, **self.prior_args}

    def validate(self):
        _positive(self, "latent_dim", "prior_hidden", "prior_depth", "time_dim")
        _check_prior(self.prior_config(), "model.prior / model.prior_args")
        if self.w < 0:
            raise ConfigError(f"model.w must be >= 0, got {self.w}")
        if not 0 <= self.cond_drop <= 1:
            raise ConfigError(f"model.cond_drop must be in [0, 1], got {self.cond_drop}")
        if self.conditional and self.objective not in ("diled", "prior_only"):
            raise ConfigError(f"model.conditional trains the prior with classes; model.objective={self.objective!r} trains no prior")
        if self.objective == "prior_only" and not self.init_from:
            raise ConfigError("model.objective=prior_only needs model.init_from (the trained codec's model folder)")
        if self.vae and self.objective != "vae":
            raise ConfigError(f"model.vae is for model.objective=vae, not {self.objective!r}")
        if self.objective == "vae":
            from diled.baselines.vae import VAEOptions

            _named("model.vae", VAEOptions.from_dict, self.vae)
        if "latent_dim" in self.codec_args:
            raise ConfigError("model.codec_args must not set latent_dim: use model.latent_dim")


@dataclass
class DiffusionConfig:
    schedule: ScheduleName = "constant"         # constant (official code) | linear | cosine | linear_wide (diled.schedules)
    T: int = 1000

    def validate(self):
        if self.T < 2:
            raise ConfigError(f"diffusion.T must be >= 2, got {self.T}")


@dataclass
class OptimConfig:
    lr: float = 2e-3
    weight_decay: float = 0.0
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0                      # 0 disables clipping
    warmup_steps: int = 0
    # after warmup: keep lr ("constant"), or decay it to min_lr_ratio * lr at max_steps ("linear", "cosine")
    decay: Literal["constant", "linear", "cosine"] = "constant"
    min_lr_ratio: float = 0.0
    # multipliers of lr by parameter-name prefix, e.g. {codec.encoder: 0.1} for pretrained layers; the
    # longest matching prefix wins; a prefix that matches no parameter at all is an error
    lr_scale: dict = field(default_factory=dict)
    max_steps: int = 2000
    grad_accum: int = 1
    # torch's fused AdamW kernel (CPU and CUDA): ~10x faster updates than its per-tensor CPU default
    # (benchmarks/step_cost.py); false falls back to the per-tensor loop
    fused: bool = True

    def validate(self):
        _positive(self, "max_steps", "grad_accum")
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas must have two values, got {self.betas}")
        bad = {k: v for k, v in self.lr_scale.items() if not isinstance(v, (int, float)) or not v > 0}
        if bad:
            raise ConfigError(f"optim.lr_scale values must be numbers > 0, got {bad}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.decay == "linear" and self.min_lr_ratio > 0:  # DeepSpeed's WarmupDecayLR decays to 0
            raise ConfigError(f"optim.decay='linear' decays to 0 (optim.min_lr_ratio={self.min_lr_ratio}); "
                              f"use decay='cosine' for a nonzero floor")
        if self.decay != "constant" and self.warmup_steps >= self.max_steps:
            raise ConfigError(f"optim.decay={self.decay!r} needs optim.warmup_steps ({self.warmup_steps}) < "
                              f"optim.max_steps ({self.max_steps}): lower the warmup too, e.g. "
                              f"--optim.warmup_steps={self.max_steps // 5}")


@dataclass
class ScalingConfig:
    num_workers: int = 2                        # Ray Train workers (>= 1; one per GPU on GPU nodes)
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    deepspeed: str = "zero2"                    # platform/deepspeed/<name>.json, or a path to a JSON file
    # auto: bf16 on GPU, fp32 on CPU; bf16 on CPU is an explicit choice (fast where the CPU has AVX512-BF16
    # or AMX, as measured in docs/scaling.md; emulated and slow elsewhere); bf16-if-native: bf16 on GPU and
    # where every worker's CPU has AVX512-BF16 or AMX, else fp32 (decided by the workers at start)
    precision: Literal["auto", "fp32", "bf16", "bf16-if-native"] = "auto"

    def validate(self):
        if self.num_workers < 1:
            # Ray's num_workers=0 local mode does not persist checkpoints, which resume and export need
            raise ConfigError(f"scaling.num_workers must be >= 1, got {self.num_workers}")
        if not self.cpus_per_worker > 0:
            raise ConfigError(f"scaling.cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        deepspeed_config_path(self.deepspeed)  # raises if missing


@dataclass
class RunConfig:
    name: str = "diled"                         # re-running with the same name resumes the run
    storage_path: str = "runs"                  # a local folder, or a URI every node can reach
    checkpoint_every: int = 500                 # steps between validation + checkpoint
    num_to_keep: int = 2                        # best checkpoints kept by val_loss (the latest is always kept)
    max_failures: int = 1                       # worker crashes survived (restart from the last checkpoint)
    log_every: int = 50
    val_batches: int = 8                        # validation batches per worker
    seed: int = 0
    fail_at_step: int | None = None             # testing: crash one worker once at this step (fault-tolerance test)
    fail_mode: Literal["raise", "kill"] = "raise"
    # the end-of-run report (reconstructions, samples, metrics, plots): off, or smaller for large models,
    # whose decoding is slow on CPU (a GPT-2-XL decoder: ~3 GFLOP per token); None: the data type's default
    report: bool = True
    report_examples: int | None = None          # held-out examples reconstructed (text 300, protein/image/vector 2000)
    report_samples: int | None = None           # samples generated (text 500, protein 200, image/vector 2000)
    report_ddim_steps: int = 50                 # DDIM steps of sampling, inversion and interpolation
    report_guided: int = 100                    # guided samples per target and scale (a model with a guide)
    # experiment tracking (diled_platform.training.tracking): MLflow in a local store beside the runs by default
    tracking: Literal["mlflow", "none"] = "mlflow"
    tracking_uri: str | None = None             # a shared MLflow server; None: <storage_path>/mlflow.db
    experiment: str = "diled"                   # the MLflow experiment (a sweep uses its own name)

    def report_kwargs(self, examples: str = "n_eval", samples: str = "n_samples", steps: str = "ddim_steps") -> dict:
        """The report function's size arguments that this config sets, under that function's names."""
        out = {steps: self.report_ddim_steps}
        if self.report_examples is not None:
            out[examples] = self.report_examples
        if self.report_samples is not None:
            out[samples] = self.report_samples
        return out

    def validate(self):
        _positive(self, "checkpoint_every", "num_to_keep", "log_every", "val_batches", "report_ddim_steps",
                  "report_guided")
        for key in ("report_examples", "report_samples"):
            value = getattr(self, key)
            if value is not None and value < 2:
                raise ConfigError(f"run.{key} must be >= 2 (or null for the default), got {value}; "
                                  f"use run.report=false to skip the report")
        if self.max_failures < -1:
            raise ConfigError(f"run.max_failures must be >= -1 (-1: retry forever), got {self.max_failures}")
        if not self.name or "/" in self.name:
            raise ConfigError(f"run.name must be a non-empty name without '/', got {self.name!r}")


@dataclass
class PriorStageConfig:
    """After joint training: the prior trained on the finished codec's latents of the training split (``diled.
    prior_training``), on the driver, before the report; its steps are cheap (no codec), so it sees many more."""
    steps: int = 0                              # 0: no such stage
    # empty: train the jointly trained prior further; else a fresh prior of this spec replaces it
    # (build_prior's keys: name, hidden, depth, time_dim and the prior's own; latent_dim is the model's)
    prior: dict = field(default_factory=dict)
    batch_size: int = 256
    lr: float = 3.0e-4
    ema: float = 0.999                          # the EMA of the prior's weights is what is saved
    t_sampling: Literal["uniform", "log_uniform"] = "uniform"   # how t is drawn (diled.prior_training)
    # > 0: also a classifier on the labelled training latents (diled.guidance.LatentClassifier), saved beside the
    # model as its guide: generate/edit toward a label (the data type's training_labels); steps 0: only the guide
    guide_steps: int = 0
    # the guide: "classes" (a classifier on training_labels) or "value" (a regressor on training_values: ">= y")
    guide: Literal["classes", "value"] = "classes"
    # a prior that knows the data type's classes, each dropped to the null class with probability cond_drop
    conditional: bool = False                   # (classifier-free guidance; needs steps > 0)
    cond_drop: float = 0.1
    # sampling temperatures (scales of z_T; empty: 1) x DDIM etas (empty: 0) to try: the best pair by the data
    # type's sample_quality on validation is saved with the model (one pair alone: set, not scored)
    temperatures: list = field(default_factory=list)
    etas: list = field(default_factory=list)
    temperature_samples: int = 500              # samples per candidate and draw (two draws)
    # a fresh prior on the latents standardised to this spread (0: off), under its own schedule (None: the model's)
    spread: float = 0.0
    schedule: ScheduleName | None = None

    @property
    def active(self) -> bool:
        """Whether the stage has anything to do."""
        return bool(self.steps or self.guide_steps or self.temperatures or self.etas)

    def validate(self):
        _positive(self, "batch_size")
        for key, ok, span in (("temperatures", lambda v: 0 < v <= 2, "(0, 2]"), ("etas", lambda v: 0 <= v <= 1, "[0, 1]")):
            for i, value in enumerate(getattr(self, key)):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                    raise ConfigError(f"prior_stage.{key}[{i}] must be a number in {span}, got {value!r}")
        for key, ok, rule in (("steps", self.steps >= 0, ">= 0 (0: off)"), ("cond_drop", 0 <= self.cond_drop <= 1, "in [0, 1]"),
                              ("guide_steps", self.guide_steps >= 0, ">= 0 (0: no guide)"), ("lr", self.lr > 0, "> 0"),
                              ("ema", 0 <= self.ema < 1, "in [0, 1)"), ("spread", self.spread >= 0, ">= 0 (0: off)"),
                              ("temperature_samples", self.temperature_samples >= 10, ">= 10")):
            if not ok:
                raise ConfigError(f"prior_stage.{key} must be {rule}, got {getattr(self, key)}")
        if self.conditional and not self.steps:
            raise ConfigError("prior_stage.conditional trains the stage's prior with classes: it needs prior_stage.steps > 0")
        if "latent_dim" in self.prior:
            raise ConfigError("prior_stage.prior must not set latent_dim: it is the model's (model.latent_dim)")
        if (self.spread or self.schedule) and not (self.steps and self.prior):
            raise ConfigError("prior_stage.spread and .schedule are for a fresh prior: set prior_stage.steps and .prior")

    def prior_config(self, model: ModelConfig) -> dict[str, Any] | None:
        """The ``build_prior`` dict of the stage's fresh prior (None: the joint prior goes on training)."""
        return {"latent_dim": model.latent_dim, **self.prior} if self.prior else None


@dataclass
class JobConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataOptions = field(default_factory=lambda: _build_section("data", _data_options_class({}), {}))
    optim: OptimConfig = field(default_factory=OptimConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    prior_stage: PriorStageConfig = field(default_factory=PriorStageConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self):
        for f in fields(self):
            getattr(self, f.name).validate()
        args = {k: v for k, v in self.model.codec_args.items() if k not in self.data.codec_args_taken}
        _named("model.codec / model.codec_args", check_codec_args, self.model.codec,  # as far as it can be, unbuilt
               {**args, "latent_dim": self.model.latent_dim})
        stage_prior = self.prior_stage.prior_config(self.model)
        if stage_prior is not None:
            _check_prior(stage_prior, "prior_stage.prior")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"a job config must be a mapping of sections, got {type(data).__name__}")
        sections = {f.name: f for f in fields(cls)}
        check_keys(data, sections, "config section(s)", error=ConfigError)
        built = {name: _build_section(name, _data_options_class(data.get(name) or {}) if name == "data"
                                      else sections[name].default_factory, data.get(name) or {})
                 for name in sections}
        return cls(**built)

    def model_config(self) -> dict[str, Any]:
        """The ``DiLED.from_config`` dict this job trains."""
        m = self.model
        return {"w": m.w, "objective": m.objective, **({"vae": dict(m.vae)} if m.objective == "vae" else {}),
                "codec": {"name": m.codec, **m.codec_args, "latent_dim": m.latent_dim},
                "denoiser": m.prior_config(),
                "diffusion": {"schedule": self.diffusion.schedule, "T": self.diffusion.T}}


def _data_options_class(values: dict) -> type[DataOptions]:
    """The options class of the data type ``values`` names (``type``; without one, the built-in data
    type that has ``source`` among its sources, else the vector type)."""
    from diled_platform.datatypes import datatype_class, type_of_source

    if not isinstance(values, dict):
        raise ConfigError(f"config section 'data' must be a mapping, got {type(values).__name__}")
    try:
        return datatype_class(values.get("type") or type_of_source(values.get("source"))).Options
    except ValueError as e:
        raise ConfigError(f"data.type: {e}") from None


def _check_prior(config: dict[str, Any], where: str) -> None:
    """Build the prior on the meta device: a wrong name or argument is named now, not in a worker."""
    with torch.device("meta"):
        _named(where, build_prior, config)


def _named(where: str, check, *args) -> None:
    """``check(*args)`` from the library, its TypeError or ValueError a ConfigError saying ``where``."""
    try:
        check(*args)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def _build_section(name: str, factory, values: dict):
    if not isinstance(values, dict):
        raise ConfigError(f"config section {name!r} must be a mapping, got {type(values).__name__}")
    cls = factory
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    check_keys([f"{name}.{k}" for k in values], [f"{name}.{k}" for k in valid], "key(s)", error=ConfigError)
    return cls(**{k: _coerce(f"{name}.{k}", v, hints[k]) for k, v in values.items()})


def _coerce(key: str, value: Any, hint) -> Any:
    """Check ``value`` against the field's type; ints are accepted where floats are expected."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, arg)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    expected = origin or hint
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is float and isinstance(value, str):
        try:  # YAML 1.1 reads "3e-4" as a string
            return float(value)
        except ValueError:
            pass
    if expected in (int, float) and isinstance(value, bool) or not isinstance(value, expected):
        raise ConfigError(f"{key} must be of type {getattr(expected, '__name__', expected)}, "
                          f"got {value!r} ({type(value).__name__})")
    return value


def deepspeed_config_path(name: str) -> Path:
    path = Path(name) if Path(name).suffix == ".json" else DEEPSPEED_DIR / f"{name}.json"
    if not path.is_file():
        available = sorted(p.stem for p in DEEPSPEED_DIR.glob("*.json"))
        raise ConfigError(f"scaling.deepspeed: no DeepSpeed config {name!r} ({path}); "
                          f"available: {', '.join(available)}")
    return path


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict[str, Any]:
    path = Path(name) if name.endswith((".yaml", ".yml")) else PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no preset {name!r} ({path}); available presets: {', '.join(preset_names())}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"preset {path} must hold a mapping of sections")
    return data


def set_dotted(data: dict[str, Any], values: dict[str, Any], where: str = "override") -> dict[str, Any]:
    """A copy of the config ``data`` with ``section.key`` entries of ``values`` set; ``section.key.subkey``
    sets one item of a mapping-valued key (``model.codec_args.max_length``). The one place that sets a
    dotted key: command-line overrides, a sweep's overrides and its search space all come here (``where``
    names which in an error)."""
    data = {k: {} if v is None else v for k, v in copy.deepcopy(data).items()}
    for dotted, value in values.items():
        parts = str(dotted).split(".")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"{where} {dotted!r}: the key must be section.key (or section.key.subkey for a "
                              f"mapping such as model.codec_args), e.g. model.w")
        section, key, *inner = parts
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise ConfigError(f"{where} {dotted}: section {section!r} is not a mapping")
        if not inner:
            data[section][key] = value
            continue
        target = data[section]
        for depth, name in enumerate([key, *inner[:-1]]):
            current = {} if target.get(name) is None else target[name]
            if not isinstance(current, dict):
                at = ".".join([section, key, *inner[:depth]])
                raise ConfigError(f"{where} {dotted}: {at} is {current!r}, not a mapping")
            target[name] = current
            target = current
        target[inner[-1]] = value
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--section.key=value`` strings (value parsed as YAML) to a nested config dict (``set_dotted``)."""
    data = set_dotted(data, {})
    for item in overrides:  # in order: a later one wins
        if not item.startswith("--") or "=" not in item:
            raise ConfigError(f"override {item!r} must look like --section.key=value")
        dotted, raw = item[2:].split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {dotted}: cannot parse value {raw!r}: {e}") from None
        data = set_dotted(data, {dotted: value})
    return data


def load_config(preset: str, overrides: list[str] | None = None) -> JobConfig:
    """A preset by name (or YAML path) with ``--section.key=value`` overrides applied."""
    return JobConfig.from_dict(apply_overrides(load_preset(preset), overrides or []))


def replace(cfg: JobConfig, **sections: dict[str, Any]) -> JobConfig:
    """A copy of ``cfg`` with some keys changed: ``replace(cfg, run={"name": "x"})``."""
    data = cfg.to_dict()
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return JobConfig.from_dict(data)


__all__ = ["ConfigError", "JobConfig", "ModelConfig", "DiffusionConfig", "DataOptions", "OptimConfig",
           "ScalingConfig", "PriorStageConfig", "RunConfig", "load_config", "load_preset", "apply_overrides", "preset_names",
           "deepspeed_config_path", "replace"]

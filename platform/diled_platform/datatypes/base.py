"""The data-type protocol: what the platform needs to know about one kind of data, and how a config finds it.

A data type lives in one module (``diled_platform/datatypes/<name>.py``) that holds, together:
- its typed options (a ``DataOptions`` subclass: its sources, path, columns, filters), the job config's
  ``data`` section when ``data.type`` names it;
- building its splits and the Ray datasets the trainer shards;
- any preparation before training (text: the tokenizer), called by the trainer, not by each job;
- the one report that a run, the comparison harness and a sweep's promoted model all use;
- its metric list, each metric with its direction.

A config finds it by name: ``type: text`` is ``diled_platform.datatypes.text`` (so a new built-in data type is
one new file, no table to edit), and ``type: "package.module:ClassName"`` is a data type defined outside
the platform (its module must be importable by the driver: ``PYTHONPATH``). The codec it trains names
itself the same way (``diled.codecs.codec_class``).
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, get_args, get_type_hints

from diled_platform.options import DataOptions

if TYPE_CHECKING:
    from diled_platform.config import JobConfig


@dataclass(frozen=True)
class Metric:
    """One number a report writes: where it is (a dotted path into the report's metrics), its label in
    tables, and which direction is better."""

    key: str
    label: str
    higher_is_better: bool


class DataType(ABC):
    """One kind of data, bound to the options of one job config.

    Subclasses set the class attributes and implement ``load_splits``, ``datasets`` and ``report``.
    ``splits`` is computed on first use and kept (no method depends on another having run first)."""

    name: ClassVar[str]
    Options: ClassVar[type[DataOptions]]
    metrics: ClassVar[tuple[Metric, ...]] = ()     # what tables compare, with directions
    outputs: ClassVar[tuple[str, ...]] = ()        # the files ``report`` writes into the run folder
    preset: ClassVar[str]                          # its CPU preset (platform/presets/<preset>.yaml)
    harness_steps: ClassVar[int] = 500             # the comparison harness's default steps per model
    judges_text: ClassVar[bool] = False            # its examples are prose: a class guide gets a TF-IDF judge

    def __init__(self, options: DataOptions):
        if not isinstance(options, self.Options):
            raise TypeError(f"{type(self).__name__} takes {self.Options.__name__}, got {type(options).__name__}")
        self.options = options

    # ------------------------------------------------------------------ data
    @cached_property
    def splits(self) -> dict[str, Any]:
        """``{"train", "val", "test"}`` in the data type's own form (Arrow tables, arrays)."""
        return self.load_splits()

    @abstractmethod
    def load_splits(self) -> dict[str, Any]:
        """Read the source and split it (seeded: the driver and the final evaluation get the same split)."""

    def summary(self) -> str:
        """One line for the job's log: the split sizes."""
        return ", ".join(f"{name} {_count(part)}" for name, part in self.splits.items())

    @abstractmethod
    def datasets(self) -> dict[str, Any]:
        """``{"train": ..., "val": ...}`` Ray datasets whose rows the codec's ``collate_columns`` takes."""

    def training_examples(self) -> list:
        """The training split as raw examples that ``DiLED.encode`` takes (what the prior stage encodes)."""
        raise NotImplementedError(f"data type {self.name!r} does not list its training examples, which "
                                  f"prior_stage needs; set prior_stage.steps=0")

    def training_labels(self) -> tuple[list[str], list[int]]:
        """The classes a guide can steer toward and, for each of ``training_examples``, its class index
        (-1: unlabelled); what ``prior_stage.guide_steps`` trains on."""
        raise NotImplementedError(f"data type {self.name!r} has no labels to guide generation with; set "
                                  f"prior_stage.guide_steps=0")

    def further_labels(self) -> dict[str, tuple[list[str], list[int]]]:
        """Labels beyond ``training_labels``, by name, each as its classes and, for each of
        ``training_examples``, a class index (-1: none): with a class guide the prior stage trains one guide
        per further label, and conditions of different labels compose (text: each sentence's source). None here."""
        return {}

    def training_values(self) -> tuple[str, list[float | None]]:
        """The name of a value a guide can steer toward (``">= y"``) and, for each of ``training_examples``,
        its value (None: unknown); what ``prior_stage.guide: value`` trains on."""
        raise NotImplementedError(f"data type {self.name!r} has no values to guide generation with; set "
                                  f"prior_stage.guide=classes or prior_stage.guide_steps=0")

    def sample_quality(self, model, z, seed: int = 0) -> float:
        """How close the decoded latents ``z`` [N x D] (prior samples) lie to the validation split, higher
        is better (text: MAUVE against validation sentences); what ``prior_stage.temperatures`` chooses by."""
        raise NotImplementedError(f"data type {self.name!r} has no sample_quality to choose a sampling "
                                  f"temperature by; set prior_stage.temperatures=[]")

    def prepare(self, cfg: "JobConfig", run_dir: Path) -> "JobConfig":
        """Anything the model needs from the data before training (text: a tokenizer trained on the
        training split, kept in ``run_dir``); the config to train with. Idempotent: a prepared config
        comes back unchanged."""
        return cfg

    # ------------------------------------------------------------------ evaluation
    def tools(self, directory: Path, full: bool = False, **options) -> dict[str, Any]:
        """What the report judges with, built once and shared by every model it evaluates (image: a
        feature classifier, kept in ``directory``). ``full``: also what only the comparison harness
        pays for (text: a reference LM); ``options`` are those the data type understands (text:
        ``lm_steps``), others are ignored."""
        return {}

    @abstractmethod
    def report(self, model_dir: Path, out_dir: Path, cfg: "JobConfig", *, seed: int = 0,
               tools: dict | None = None) -> dict[str, Any]:
        """Evaluate a trained model on the held-out split; write the outputs and ``eval.json`` into
        ``out_dir``; the metrics. ``cfg.run`` sets the sizes (``report_examples`` ...); ``tools``: from
        ``tools()`` (built here into ``out_dir`` if not given)."""

    def reference(self, tools: dict | None = None) -> dict[str, Any] | None:
        """The metrics' values on real held-out data, where they apply (an un-bolded row in tables)."""
        return None

    def describe(self, tools: dict | None = None) -> dict[str, Any]:
        """The evaluation's set-up, for the harness's results.json."""
        return {}

    def vae_options(self, cfg: "JobConfig") -> dict[str, Any]:
        """The VAE baseline's settings for this data type (KL weight, annealing, free bits)."""
        return {"beta": 1.0, "anneal_steps": max(1, cfg.optim.max_steps // 2), "free_bits": 0.0}

    @classmethod
    def sources(cls) -> tuple[str, ...]:
        return get_args(get_type_hints(cls.Options)["source"])


def driver_dataset(table):
    """A Ray dataset of ``table`` (a pyarrow Table, or ``{column: 2-D float array}``) whose one block this
    process (the driver) puts into its own object store, with no Ray Data task behind it. Built-in data
    types hand their splits to the trainer this way: during training the workers hold the CPUs, so a
    lazy transform would never be scheduled, and a block made by a task on a worker node is lost with that
    node, and recomputing it needs a CPU that the restarted workers hold (a node-loss test hung on exactly
    that)."""
    import pyarrow as pa
    import ray.data

    if not isinstance(table, pa.Table):
        from ray.data.extensions import ArrowTensorArray

        table = pa.table({name: ArrowTensorArray.from_numpy(values, column_name=name) for name, values in table.items()})
    return ray.data.from_arrow(table)


def label_indices(values: list) -> tuple[list[str], list[int]]:
    """The distinct non-empty ``values`` (sorted) and each value's index among them (-1: empty or None)."""
    classes = sorted({str(v) for v in values if v})
    index = {c: i for i, c in enumerate(classes)}
    return classes, [index[str(v)] if v else -1 for v in values]


def replace_options(options: DataOptions, **changes) -> DataOptions:
    """A copy of data options with some fields changed, validated again."""
    import dataclasses

    new = dataclasses.replace(options, **changes)
    new.validate()
    return new


def _count(part: Any) -> int:
    if hasattr(part, "num_rows"):
        return part.num_rows
    if isinstance(part, tuple):
        return len(part[0])
    return len(part)


# ----------------------------------------------------------------------------- finding a data type
_LOADED: dict[str, type[DataType]] = {}


def builtin_names() -> list[str]:
    """The data types shipped in this package: one module each (``base`` and modules whose name starts
    with ``_``, helpers, are not data types)."""
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                  if m.name != "base" and not m.name.startswith("_"))


def datatype_class(name: str) -> type[DataType]:
    """The data type a config names: a built-in module name, or ``"package.module:ClassName"``."""
    if name in _LOADED:
        return _LOADED[name]
    if not isinstance(name, str) or not name:
        raise ValueError(f"a data type name must be a non-empty string, got {name!r}")
    if ":" in name:
        from diled.plugins import import_class

        cls = import_class(name, DataType, "data type")
    else:
        if name not in builtin_names():
            raise ValueError(f"unknown data type {name!r}; built-in: {', '.join(builtin_names())} "
                             f"(or an import path, 'package.module:ClassName')")
        module = importlib.import_module(f"diled_platform.datatypes.{name}")
        found = [c for c in vars(module).values()
                 if isinstance(c, type) and issubclass(c, DataType) and c.__module__ == module.__name__]
        if len(found) != 1:
            raise ValueError(f"diled_platform.datatypes.{name} must define exactly one DataType, found {len(found)}")
        cls = found[0]
    if not (isinstance(cls, type) and issubclass(cls, DataType)):
        raise ValueError(f"{name!r} is not a DataType subclass")
    _LOADED[name] = cls
    return cls


def type_of_source(source: str | None) -> str:
    """The built-in data type that reads ``source`` (configs written before ``data.type`` existed name
    only the source); the vector type when there is none."""
    if not source:
        return "vector"
    for name in builtin_names():
        if source in datatype_class(name).sources():
            return name
    known = {n: datatype_class(n).sources() for n in builtin_names()}
    raise ValueError(f"no data type reads source {source!r}; set data.type, or use a source of "
                     + "; ".join(f"{n}: {', '.join(s)}" for n, s in known.items()))


def datatype_for(cfg: "JobConfig") -> DataType:
    """The data type of a job config, bound to its ``data`` options."""
    return datatype_class(cfg.data.type)(cfg.data)

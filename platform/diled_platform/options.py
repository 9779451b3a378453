"""What a data type's options build on, with no dependence on the rest of the platform: the config error,
the options base class every data type subclasses, and the validators they share. Plug-ins import these
from here (``diled_platform.config`` re-exports them)."""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass


class ConfigError(ValueError):
    """A malformed job config; the message names the offending key."""


def positive(section, *names) -> None:
    """ConfigError naming ``<section>.<name>`` unless each of ``names`` is > 0 on the config section."""
    for name in names:
        value = getattr(section, name)
        if value <= 0:
            raise ConfigError(f"{section_name(section)}.{name} must be > 0, got {value}")


def section_name(section) -> str:
    """A config section's name in messages: ``data`` for data options, else from its class name."""
    if isinstance(section, DataOptions):
        return "data"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(section).__name__.removesuffix("Config")).lower()


@dataclass
class DataOptions:
    """What every data type's options share. Each data type (``diled_platform.datatypes``) subclasses this
    with its own sources and fields; the job config's ``data`` section is one of them, chosen by ``type``
    (a litgpt-style discriminated union: ``data: {type: text, source: text_corpus, ...}``)."""

    type: str = "vector"                        # the data type: a module of diled_platform.datatypes, or module:Class
    source: str = ""                            # where the examples come from: one of the data type's sources
    path: str | None = None                     # a file or folder, for the sources that read one
    val_fraction: float = 0.1
    test_fraction: float = 0.0                  # held out for the job's final evaluation
    batch_size: int = 128                       # per worker (DeepSpeed's micro batch)
    # > 1: draw this many batches at a time and regroup them by example length (text: less padding); 0/1: off
    length_buckets: int = 0
    seed: int = 0

    #: the sources that read ``path`` (it is then required)
    path_sources: typing.ClassVar[tuple[str, ...]] = ()
    #: keys of ``model.codec_args`` that the data type takes itself (its ``prepare`` removes them before the
    #: codec is built), left out of the codec's option check
    codec_args_taken: typing.ClassVar[tuple[str, ...]] = ()

    def validate(self):
        positive(self, "batch_size")
        if self.length_buckets < 0:
            raise ConfigError(f"data.length_buckets must be >= 0, got {self.length_buckets}")
        if not 0 < self.val_fraction < 1 or not 0 <= self.test_fraction < 1 or self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(f"data.val_fraction ({self.val_fraction}) and data.test_fraction ({self.test_fraction}) "
                              f"must be fractions that leave a training split")
        if self.source in self.path_sources and not self.path:
            raise ConfigError(f"data.path is required when data.source is {self.source!r}")

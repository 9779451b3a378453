"""The codec protocol every data type implements, a registry to rebuild codecs from config, and the
small real codec for continuous vectors.

A codec is the learnable encoding-decoding pair of DiLED: ``encode(batch) -> mu [N x D]`` (the encoder
mean z0), ``reconstruction_loss(batch, z) -> [N]`` (-log p(x0 | z) per example, in nats),
``decode(z, **kw) -> list`` (one decoded item per row of z), ``collate(examples) -> batch`` and
``latent_dim``. Batches are dicts of tensors; DiLED moves them to its device.
"""

from __future__ import annotations

import abc
import inspect
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

InputKind = Literal["strings", "arrays"]
CODECS: dict[str, type["Codec"]] = {}


def register_codec(cls: type["Codec"]) -> type["Codec"]:
    """Class decorator: make ``cls`` buildable by its ``name`` from a saved config."""
    if cls.name in CODECS and CODECS[cls.name] is not cls:
        raise ValueError(f"codec name {cls.name!r} registered twice")
    CODECS[cls.name] = cls
    return cls


def codec_class(name: str) -> type["Codec"]:
    """The codec class a config names: a registered name; a built-in codec by its file
    (``diled/codecs/<name>.py``, imported on first use: a new codec is one new file, no table to edit);
    or an out-of-tree codec by import path, ``"package.module:ClassName"``."""
    import importlib

    if name in CODECS:
        return CODECS[name]
    if not isinstance(name, str) or not name:
        raise ValueError(f"a codec name must be a non-empty string, got {name!r}")
    if ":" in name:
        from diled.plugins import import_class

        return import_class(name, Codec, "codec")
    if name.isidentifier() and name != "base":
        try:
            importlib.import_module(f"diled.codecs.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"diled.codecs.{name}":
                raise
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; built-in codecs: {', '.join(builtin_codec_names())} "
                         f"(or an import path, 'package.module:ClassName')")
    return CODECS[name]


def builtin_codec_names() -> list[str]:
    """The codecs shipped in ``diled/codecs/`` (one file each) and any registered since."""
    import pkgutil

    # a leading underscore marks a helper module of a codec (``_text_labels``), not a codec
    files = {m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
             if m.name != "base" and not m.name.startswith("_")}
    return sorted(files | set(CODECS))


def codec_reference(cls: type["Codec"]) -> str:
    """What a saved config calls ``cls``: its ``name`` where that finds it again in any process (a
    built-in codec), else its import path (a codec defined outside ``diled.codecs``)."""
    if cls.__module__ in ("diled.codecs.base", f"diled.codecs.{cls.name}"):
        return cls.name
    return f"{cls.__module__}:{cls.__qualname__}"


def check_codec_args(name: str, args: dict[str, Any]) -> None:
    """What can be checked of a codec's keyword arguments without building it (on a driver, in a job's
    ``--dry-run``): that the codec takes each of them (ValueError naming an unknown one and listing the
    codec's options), then its ``check_args`` with every argument, defaults filled in."""
    cls = codec_class(name)
    signature = inspect.signature(cls.__init__)
    known = [k for k, p in signature.parameters.items() if k != "self" and not k.startswith("_")
             and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        unknown = [k for k in args if k not in known]
        if unknown:
            raise ValueError(f"codec {name!r} has no option {unknown[0]!r}; its options: {', '.join(known)}")
    bound = signature.bind_partial(**args)
    bound.apply_defaults()
    cls.check_args({k: v for k, v in bound.arguments.items() if k != "self"})


def build_codec(config: dict, directory: str | Path | None = None) -> "Codec":
    """Build a codec from ``{"name": ..., **kwargs}``; ``directory`` holds any saved extras (tokenizer)."""
    config = dict(config)
    return codec_class(config.pop("name", None)).from_config(config, directory=directory)


class Codec(nn.Module, metaclass=abc.ABCMeta):
    """Base class of the codec protocol. Subclasses set ``name`` and ``latent_dim`` and implement the
    abstract methods (a subclass missing one cannot be instantiated)."""

    name: ClassVar[str]
    latent_dim: int
    #: what one raw example is: "strings" (a text, a protein sequence) or "arrays" (a list of numbers,
    #: ``data_dim`` of them); what Serve and the CLI accept, without knowing the codec by name
    input_kind: ClassVar[InputKind] = "arrays"
    #: the keyword options ``decode`` takes (e.g. a text decoder's strategy); none by default
    decode_options: ClassVar[tuple[str, ...]] = ()
    #: the names of the terms ``auxiliary_losses`` returns (reported as ``val_<name>``); none by default
    auxiliary_terms: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoder means mu(x0): [N x D]."""

    @abc.abstractmethod
    def reconstruction_loss(self, batch: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """-log p(x0 | z) per example: [N]."""

    @abc.abstractmethod
    def decode(self, z: torch.Tensor, **kwargs) -> list:
        """Decode latents [N x D] into N items of the data type."""

    @abc.abstractmethod
    def collate(self, examples: list) -> dict[str, torch.Tensor]:
        """Turn raw examples into a batch."""

    def check_inputs(self, examples: list) -> None:
        """Raise ValueError naming the examples that this codec cannot take (a service checks a request
        with it before the request joins a shared batch): by default, whether ``collate`` takes them."""
        self.collate(examples)

    def collate_columns(self, columns: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Turn a columnar batch (a dict of arrays, as Ray Data yields) into a batch: by default the
        examples are the column ``"x"``."""
        return self.collate(list(columns["x"]))

    def example_lengths(self, examples: list) -> list[int]:
        """How long each raw example is once collated (what padding depends on): by default ``len``."""
        return [len(e) for e in examples]

    @abc.abstractmethod
    def get_config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this codec (JSON-serialisable)."""

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: str | Path | None = None) -> "Codec":
        return cls(**config)

    @classmethod
    def prepare_partitioned_build(cls, config: dict[str, Any]) -> None:
        """Do what building this codec from ``config`` inside ``deepspeed.zero.Init`` (ZeRO-3) needs done
        first, on each worker: import modules, convert or fetch pretrained files. Nothing by default."""

    def save_extra(self, directory: str | Path) -> None:
        """Write files besides the weights that ``from_config(directory=...)`` needs (e.g. a tokenizer)."""

    def base_weight_keys(self) -> set[str]:
        """State-dict keys (relative to the codec) that a saved model leaves out because a pretrained base
        holds them unchanged (frozen weights of a large pretrained part); none by default."""
        return set()

    def base_weights(self) -> tuple[list[Path], str] | None:
        """Where a saved model's left-out keys are read from: ``(weight files, their key prefix relative to
        the codec)``; None when the model folder holds everything (the default)."""
        return None

    def auxiliary_losses(self, batch: dict[str, torch.Tensor], z0: torch.Tensor,
                         z1: torch.Tensor) -> dict[str, tuple[torch.Tensor, float]]:
        """Extra supervised terms added to the loss: ``{name: (per-example values [N], weight)}``."""
        return {}

    @classmethod
    def check_args(cls, args: dict[str, Any]) -> None:
        """Checks of the constructor's arguments (``args``: all of them, defaults filled in) that load
        nothing, for a driver to run before any worker builds the codec (``check_codec_args``); ValueError
        naming the argument. Nothing by default."""

    def set_training_step(self, step: int) -> None:
        """What a training loop calls before each optimiser step (1, 2, ...; resumed runs go on counting):
        kept as ``training_step`` for a codec whose training changes with the step (the text codec's
        ``slot_dropout_after``); nothing else by default."""
        self.training_step = int(step)


@register_codec
class VectorCodec(Codec):
    """Continuous vectors ``x0`` [N x data_dim]: MLP encoder, MLP decoder, Gaussian likelihood.

    ``-log p(x0 | z) = sum_d [ (x0_d - m_d(z))^2 / (2 sigma^2) + log sigma + log(2 pi) / 2 ]`` with a
    fixed observation scale ``sigma`` (the data's expected noise level; it sets how strongly the
    reconstruction term pulls against the prior).
    """

    name = "vector"

    def __init__(self, data_dim: int, latent_dim: int, hidden: int = 128, depth: int = 2, sigma: float = 0.1):
        super().__init__()
        for key, value in (("data_dim", data_dim), ("latent_dim", latent_dim), ("hidden", hidden), ("depth", depth)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"VectorCodec: {key} must be a positive integer, got {value!r}")
        if not sigma > 0:
            raise ValueError(f"VectorCodec: sigma must be > 0, got {sigma!r}")
        self.data_dim, self.latent_dim, self.hidden, self.depth, self.sigma = data_dim, latent_dim, hidden, depth, float(sigma)
        self.encoder = _mlp(data_dim, hidden, latent_dim, depth)
        self.decoder = _mlp(latent_dim, hidden, data_dim, depth)

    def get_config(self) -> dict[str, Any]:
        return {"data_dim": self.data_dim, "latent_dim": self.latent_dim, "hidden": self.hidden,
                "depth": self.depth, "sigma": self.sigma}

    def _x(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = batch["x"]
        if x.dim() != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"VectorCodec expects batch['x'] of shape [N x {self.data_dim}], got {tuple(x.shape)}")
        return x

    def encode(self, batch):
        return self.encoder(self._x(batch))

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's mean m(z): [N x data_dim]."""
        return self.decoder(z)

    def reconstruction_loss(self, batch, z):
        x = self._x(batch)
        sq = (x - self.decoder(z)).pow(2).sum(dim=-1)
        return sq / (2 * self.sigma**2) + self.data_dim * (math.log(self.sigma) + 0.5 * math.log(2 * math.pi))

    def decode(self, z, **kwargs) -> list[list[float]]:
        return self.decode_mean(z).tolist()

    def collate_columns(self, columns) -> dict[str, torch.Tensor]:
        return self.collate(np.stack(list(columns["x"])) if len(columns["x"]) else columns["x"])

    def collate(self, examples) -> dict[str, torch.Tensor]:
        if isinstance(examples, torch.Tensor):
            x = examples.float()
        else:
            try:
                x = torch.as_tensor(np.asarray(examples, dtype=np.float32))
            except (TypeError, ValueError) as e:
                raise ValueError(f"VectorCodec expects lists of {self.data_dim} numbers: {e}") from None
        if x.dim() == 1:
            x = x.unsqueeze(0)
        if x.dim() != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"VectorCodec expects examples of length {self.data_dim}, got shape {tuple(x.shape)}")
        return {"x": x}


def _mlp(d_in: int, hidden: int, d_out: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.SiLU()]
        d = hidden
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)

"""Streamed, sharded safetensors I/O for ``DiLED.save_pretrained`` / ``from_pretrained``.

Large models (a GPT-2-XL decoder is 6.2 GB in fp32) must never be held twice: writing goes one shard at
a time (a shard is a run of whole tensors up to ``max_shard_bytes``; a tensor larger than that is a shard
of its own), and reading builds the model's parameters on the meta device and assigns each shard's
tensors into place, so the peak is about the model plus one shard. The layout is Hugging Face's: one
``model.safetensors``, or ``model-00001-of-0000K.safetensors`` files plus ``model.safetensors.index.json``
(``{"metadata": {...}, "weight_map": {key: file}}``).

Nothing here knows about DeepSpeed: a partitioned model is written by passing ``gather``, a context
manager factory that makes a list of parameters whole for the duration of a shard (the platform passes
ZeRO-3's ``GatheredParameters``); every rank calls the writer, only the one with ``write=True`` writes.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Callable, ContextManager, Iterable

import torch
from torch import nn

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 256 * 2**20  # about two GPT-2-XL blocks: export and load hold at most one shard extra

Gather = Callable[[list[torch.Tensor]], ContextManager]


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    # a ZeRO-3 partitioned parameter is an empty tensor that knows its full shape
    return tuple(getattr(t, "ds_shape", t.shape))


def _nbytes(t: torch.Tensor) -> int:
    return math.prod(_shape(t)) * t.element_size()


def _identity(t: torch.Tensor):
    if isinstance(t, nn.Parameter):  # tied weights are one Parameter object under two names
        return ("param", id(t))
    if t.numel() == 0:
        return ("empty", id(t))
    return ("tensor", t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)


def unique_entries(module: nn.Module) -> tuple[list[tuple[str, torch.Tensor]], dict[str, str]]:
    """The state dict's entries as live tensors (parameters and persistent buffers, not copies), each tied
    tensor once, and the aliases ``{alias: kept key}`` of the others."""
    seen: dict[tuple, str] = {}
    entries, aliases = [], {}
    for key, value in module.state_dict(keep_vars=True).items():
        ident = _identity(value)
        if ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        entries.append((key, value))
    return entries, aliases


def plan_shards(entries: list[tuple[str, torch.Tensor]], max_shard_bytes: int) -> list[list[tuple[str, torch.Tensor]]]:
    """Consecutive entries grouped into shards of at most ``max_shard_bytes`` (one oversized tensor per shard)."""
    shards: list[list] = [[]]
    size = 0
    for key, value in entries:
        n = _nbytes(value)
        if shards[-1] and size + n > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((key, value))
        size += n
    return [s for s in shards if s]


def shard_file_names(count: int) -> list[str]:
    if count == 1:
        return [WEIGHTS_NAME]
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def save_sharded(module: nn.Module, directory: Path, max_shard_bytes: int = DEFAULT_SHARD_BYTES,
                 gather: Gather | None = None, write: bool = True, dtype: torch.dtype | None = None,
                 skip: Iterable[str] = ()) -> list[str]:
    """Write ``module``'s state dict to ``directory`` shard by shard; the shard file names.

    ``gather(params)`` (optional) makes partitioned parameters whole while their shard is written; all
    ranks must call this with the same module (the gathers are collectives), only ``write=True`` writes.
    ``dtype`` casts floating tensors (e.g. ``torch.bfloat16`` for a 16-bit export). ``skip``: keys not
    written (a pretrained part's frozen weights, which ``load_into(base=...)`` reads from its base)."""
    from safetensors.torch import save_file

    if max_shard_bytes < 1:
        raise ValueError(f"max_shard_bytes must be >= 1, got {max_shard_bytes}")
    entries, aliases = unique_entries(module)
    skip = set(skip)
    entries = [(k, v) for k, v in entries if k not in skip]
    shards = plan_shards(entries, max_shard_bytes)
    names = shard_file_names(len(shards))
    if write:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in list(directory.glob("model-*-of-*.safetensors")) + [directory / INDEX_NAME, directory / WEIGHTS_NAME]:
            stale.unlink(missing_ok=True)
    weight_map, total = {}, 0
    for name, shard in zip(names, shards):
        params = [v for _, v in shard if isinstance(v, nn.Parameter)]
        with gather(params) if gather is not None and params else contextlib.nullcontext():
            if write:
                tensors = {}
                for key, value in shard:
                    t = value.detach()
                    if dtype is not None and t.is_floating_point():
                        t = t.to(dtype)
                    # a copy: safetensors refuses views into a shared buffer (DeepSpeed's flat groups)
                    tensors[key] = t.to("cpu").clone().contiguous()
                    total += tensors[key].numel() * tensors[key].element_size()
                    weight_map[key] = name
                save_file(tensors, str(directory / name), metadata={"aliases": json.dumps(aliases)})
                del tensors
    if write and len(names) > 1:
        index = {"metadata": {"total_size": total, "aliases": aliases}, "weight_map": weight_map}
        (directory / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return names


def weight_files(directory: Path) -> tuple[list[Path], dict[str, str]]:
    """The safetensors files of a ``save_pretrained`` folder and its aliases; FileNotFoundError if none."""
    directory = Path(directory)
    index = directory / INDEX_NAME
    if index.is_file():
        data = json.loads(index.read_text())
        files = sorted({directory / f for f in data["weight_map"].values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{index} names shard(s) that are missing: {', '.join(missing)}")
        return files, dict(data.get("metadata", {}).get("aliases", {}))
    single = directory / WEIGHTS_NAME
    if not single.is_file():
        raise FileNotFoundError(f"{directory} has no {WEIGHTS_NAME} (nor {INDEX_NAME})")
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    return [single], aliases


def has_weights(directory: Path) -> bool:
    directory = Path(directory)
    return (directory / WEIGHTS_NAME).is_file() or (directory / INDEX_NAME).is_file()


def check_pretrained_folder(directory: str | Path) -> Path:
    """``directory`` resolved if it is a ``save_pretrained`` folder (config.json and weights, one file or
    sharded); FileNotFoundError naming what is missing otherwise."""
    directory = Path(directory).resolve()
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} is not a save_pretrained folder: it has no config.json")
    if not has_weights(directory):
        raise FileNotFoundError(f"{directory} is not a save_pretrained folder: it has no {WEIGHTS_NAME} "
                                f"(nor {INDEX_NAME})")
    return directory


@contextlib.contextmanager
def parameters_on_meta():
    """Every parameter registered inside this context lives on the meta device (no memory, no values);
    buffers stay real, so schedules and masks computed at construction are kept. Each parameter exists
    for an instant at full size when its module creates it, then is replaced by its meta twin."""
    original = nn.Module.register_parameter

    def register(self, name, param):
        original(self, name, param)
        if param is not None and param.device.type != "meta":
            self._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def _set_tensor(module: nn.Module, key: str, value: torch.Tensor) -> None:
    *path, leaf = key.split(".")
    owner = module.get_submodule(".".join(path)) if path else module
    if leaf in owner._parameters:
        old = owner._parameters[leaf]
        owner._parameters[leaf] = nn.Parameter(value, requires_grad=old.requires_grad)
    elif leaf in owner._buffers:
        owner._buffers[leaf] = value
    else:
        raise KeyError(key)


def load_into(module: nn.Module, files: Iterable[Path], aliases: dict[str, str], assign: bool = False,
              dtype: torch.dtype | None = None, gather: Gather | None = None, device: str = "cpu",
              base: tuple[list[Path], str] | None = None) -> None:
    """Read the weight files into ``module``, one file at a time (each is closed before the next opens).

    ``assign=True`` puts the loaded tensors in place of the module's (meta) parameters, so nothing is
    held twice; otherwise values are copied into the existing tensors, made whole for the copy by
    ``gather(params)`` if given (ZeRO-3: every rank calls this; the gather decides whose copy counts).
    Every state-dict key must be present and every stored key known (strict); tied parameters are tied
    again afterwards. Floating tensors are cast to ``dtype``, or to the dtype of the tensor they replace.
    ``device``: where the tensors are read to (e.g. "cuda:0": straight onto the GPU, not through host memory).
    ``base``: ``(files, prefix)``, where the keys under ``prefix`` that ``files`` lack are read from (a folder
    that stores only what trained of a pretrained part; the base files' keys are relative to ``prefix``)."""
    from safetensors import safe_open

    expected = module.state_dict(keep_vars=True)
    kept = {k for k in expected if k not in aliases}
    loaded, unexpected = set(), []

    def read(path: Path, names: dict[str, str]) -> None:
        """Load the file's keys named in ``names`` (file key -> module key)."""
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            keys = [k for k in f.keys() if k in names]
            params = [expected[names[k]] for k in keys if isinstance(expected[names[k]], nn.Parameter)]
            with gather(params) if gather is not None and params else contextlib.nullcontext():
                for key in keys:
                    target_key = names[key]
                    target = expected[target_key]
                    value = f.get_tensor(key)
                    if tuple(value.shape) != _shape(target):
                        raise ValueError(f"{path.name}: {key} has shape {tuple(value.shape)}, the model expects "
                                         f"{_shape(target)}")
                    if value.is_floating_point():
                        value = value.to(dtype or target.dtype)
                    if assign:
                        _set_tensor(module, target_key, value)
                    else:
                        with torch.no_grad():
                            target.data.copy_(value)
                    loaded.add(target_key)
                    del value

    for path in files:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
        unexpected += [k for k in keys if k not in expected]
        read(path, {k: k for k in keys if k in expected})
    if base is not None:
        base_files, prefix = base
        wanted = {k[len(prefix):]: k for k in kept - loaded if k.startswith(prefix)}
        for path in base_files:
            read(path, wanted)
    missing = sorted(kept - loaded)
    if missing or unexpected:
        raise ValueError(f"weights do not match the model: missing {missing[:8]}, unexpected {unexpected[:8]}")
    if not assign:
        return
    for alias, source in aliases.items():  # re-tie (e.g. GPT-2's lm_head is its wte)
        *path, leaf = alias.split(".")
        owner = module.get_submodule(".".join(path)) if path else module
        src_path, _, src_leaf = source.rpartition(".")
        src_owner = module.get_submodule(src_path) if src_path else module
        if src_leaf in src_owner._parameters:
            owner._parameters[leaf] = src_owner._parameters[src_leaf]
        else:
            owner._buffers[leaf] = src_owner._buffers[src_leaf]
    left = [k for k, v in module.state_dict(keep_vars=True).items() if v.device.type == "meta"]
    if left:
        raise ValueError(f"parameters left unloaded on the meta device: {left[:8]}")

"""DeepSpeed ZeRO-3 on top of the trainer: the model built partitioned (never whole on one worker), what
a rank holds of it, the fp32 master weights that need no second copy on CPU, and the streamed export.
Below ZeRO-3 these are plain construction and a rank-0 ``save_pretrained``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diled_platform.config import JobConfig


def import_model_libraries(cfg: JobConfig) -> None:
    """Import what building the model needs before building it partitioned. zero.Init swaps torch's tensor
    constructors while it is active: modules imported for the first time inside it (torch._dynamo's
    polyfills, pulled in by transformers' lazy model imports) fail their signature checks. The codec says
    what else it needs (``Codec.prepare_partitioned_build``: the text codec imports its modelling modules
    and converts a GGUF decoder)."""
    import importlib

    import deepspeed  # noqa: F401

    from diled.codecs import codec_class

    importlib.import_module("torch._dynamo")
    codec_class(cfg.model.codec).prepare_partitioned_build(cfg.model.codec_args)


def build_model(cfg: JobConfig, ds_config: dict[str, Any]):
    """The DiLED model of ``cfg`` (same seed on every rank), with ``model.init_from``'s weights if set.

    Under ZeRO-3 it is built partitioned: inside ``deepspeed.zero.Init`` every module's parameters are
    split across the workers as soon as its constructor returns, and the Hugging Face parts (encoder,
    decoder) see an ``HfDeepSpeedConfig`` so that transformers builds, initialises and loads pretrained
    weights into the partitions too. No worker ever holds the whole model. Returns the model and the
    ``HfDeepSpeedConfig`` (None below ZeRO-3), which must stay alive while the model is used."""
    from diled import DiLED

    torch.manual_seed(cfg.run.seed)
    stage = int(ds_config.get("zero_optimization", {}).get("stage", 0))
    if stage != 3:
        model = DiLED.from_config(cfg.model_config())
        if cfg.model.init_from:  # e.g. the second stage of a two-stage model starts from the first stage's codec
            model.load_weights(cfg.model.init_from)
        return model, None
    import deepspeed
    from transformers.integrations import HfDeepSpeedConfig

    import_model_libraries(cfg)
    hf_ds = HfDeepSpeedConfig(ds_config)  # transformers keeps only a weak reference to it
    with deepspeed.zero.Init(config_dict_or_path=ds_config):
        model = DiLED.from_config(cfg.model_config())
    if cfg.model.init_from:  # one weight file at a time, made whole, filled on rank 0, re-partitioned
        model.load_weights(cfg.model.init_from,
                           gather=lambda params: deepspeed.zero.GatheredParameters(params, modifier_rank=0))
    return model, hf_ds


def residency(module: torch.nn.Module) -> dict[str, int]:
    """What this rank holds of the parameters: elements held (its partitions under ZeRO-3), the largest
    tensor it holds, and the full model's elements and largest tensor."""
    held = [getattr(p, "ds_tensor", p).numel() for p in module.parameters()]
    full = [getattr(p, "ds_numel", p.numel()) for p in module.parameters()]
    return {"param_elements_held": sum(held), "largest_param_held": max(held, default=0),
            "param_elements": sum(full), "largest_param": max(full, default=0)}


def share_fp32_master(engine) -> int:
    """Drop ZeRO-3's second copy of the trainable partitions when training in fp32; the bytes freed.

    DeepSpeed 0.19's stage 3 keeps an fp32 master copy of each trainable partition unless the partition is
    already fp32 on the optimizer's device, but it tests ``tensor.device == "cpu"``, which is False for
    ``torch.device("cpu")``: on CPU every fp32 run holds the trainable weights twice (measured: three
    flat buffers of the partition's size after ``initialize`` where two are needed). Pointing the master
    at the partition itself is what DeepSpeed does on GPU for fp32 weights: the optimizer updates it in
    place and DeepSpeed's copy back into the partition becomes a copy onto itself."""
    opt = engine.optimizer
    masters = getattr(opt, "fp32_partitioned_groups_flat", None)
    params = getattr(opt, "fp16_partitioned_groups_flat", None)
    if not masters or not params or getattr(opt, "offload_optimizer", False):
        return 0
    freed = 0
    for master, param in zip(masters, params):
        if (master is param or master.dtype != param.dtype or master.device != param.device
                or master.numel() != param.numel() or master.data_ptr() == param.data_ptr()):
            continue
        freed += master.numel() * master.element_size()
        master.data = param.data
    return freed


def export_pretrained(engine, directory: Path, stage: int, rank: int) -> None:
    """Write the consolidated ``save_pretrained`` folder from rank 0, streamed one shard at a time
    (``diled.persistence``). Under ZeRO-3 every rank takes part: each shard's parameters are gathered,
    written by rank 0 and released before the next, so no rank holds more than one shard beyond its own
    partition. Under bf16 the parameters, and so the export, are 16-bit."""
    module = engine.module
    if stage == 3:
        import deepspeed

        module.save_pretrained(directory, write=rank == 0,
                               gather=lambda params: deepspeed.zero.GatheredParameters(params, modifier_rank=None))
    elif rank == 0:
        module.save_pretrained(directory)


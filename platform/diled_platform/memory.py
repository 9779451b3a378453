"""Per-worker memory of the model states (parameters, gradients, optimizer state) under DeepSpeed, counted
from the tensors each rank actually holds (not estimated)."""

from __future__ import annotations

from typing import Any

import torch


def _bytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def _unique_storage_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is None or t.numel() == 0:
            continue
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total


def model_state_bytes(engine) -> dict[str, int]:
    """Bytes of parameters, gradients and optimizer state held by this rank (shared storages counted once;
    DeepSpeed's flat fp32 master partitions count as optimizer state, as the ZeRO paper counts them).
    Call it between backward and step to see the gradients."""
    module, opt = engine.module, engine.optimizer
    params = [getattr(p, "ds_tensor", p) for p in module.parameters()]
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    for name in ("averaged_gradients", "fp32_partitioned_groups_flat_grad"):
        for g in _flatten(getattr(opt, name, None)):
            grads.append(g)
    inner = getattr(opt, "optimizer", opt)
    states = [v for s in getattr(inner, "state", {}).values() for v in s.values() if torch.is_tensor(v)]
    masters = []
    for name in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat"):
        masters += _flatten(getattr(opt, name, None))
    masters += [g.grad for g in masters if g is not None and g.grad is not None]
    return {"params": _unique_storage_bytes(params), "grads": _unique_storage_bytes(grads),
            "optimizer": _unique_storage_bytes(states + masters)}


def _flatten(x: Any) -> list[torch.Tensor]:
    if x is None:
        return []
    if torch.is_tensor(x):
        return [x]
    if isinstance(x, dict):
        x = list(x.values())
    out = []
    for item in x:
        out += _flatten(item)
    return out


def memory_probe_loop(config: dict) -> None:
    """Ray Train worker for benchmarks/zero_memory.py: build the engine of ``config["job"]``, take
    ``config["steps"]`` steps on synthetic ring data, write this rank's model-state bytes to
    ``<config["out_dir"]>/rank<r>.json``."""
    import json
    from pathlib import Path

    from diled.data.toy import gaussian_ring
    from diled_platform.config import JobConfig
    from diled_platform.train import _context, setup_model_and_engine, train_step

    cfg = JobConfig.from_dict(config["job"])
    ctx = _context()
    engine = setup_model_and_engine(cfg, ctx)
    x = gaussian_ring(cfg.data.batch_size, seed=ctx.rank, dim=engine.module.codec.data_dim)
    for _ in range(config["steps"]):
        train_step(engine, {"x": x})
    # measure with the gradients alive: after backward, before the optimizer step frees them
    engine.backward(engine({"x": x})["loss"])
    counts = model_state_bytes(engine)
    engine.step()
    counts["n_params"] = sum(getattr(p, "ds_numel", p.numel()) for p in engine.module.parameters())
    Path(config["out_dir"], f"rank{ctx.rank}.json").write_text(json.dumps(counts))

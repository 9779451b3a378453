"""Ray Train worker functions for the tests and benchmarks that look inside a training engine: each builds
the engine with the trainer's own functions, takes a few steps and writes what it measured. They live in
the package (not in a test module) because Ray pickles a worker function by reference, and a function
defined in a test module hangs the Ray tests that follow."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diled_platform.config import JobConfig
from diled_platform.training.memory import model_state_bytes
from diled_platform.training.train import setup_model_and_engine, train_step, worker_context, zero_stage
from diled_platform.training.zero import export_pretrained


def memory_probe_loop(config: dict) -> None:
    """Ray Train worker for benchmarks/zero_memory.py: build the engine of ``config["job"]``, take
    ``config["steps"]`` steps on synthetic ring data, write this rank's model-state bytes to
    ``<config["out_dir"]>/rank<r>.json``."""
    from diled.data.toy import gaussian_ring

    cfg = JobConfig.from_dict(config["job"])
    ctx = worker_context()
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


def zero3_probe_loop(config: dict) -> None:
    """Ray Train worker for the ZeRO-3 test: build the engine of ``config["job"]`` (partitioned), record
    what this rank holds right after construction, take ``config["steps"]`` steps on the examples
    ``config["texts"]``, then compute the trained model's teacher-forced decoder logits on them from the
    encoder means (no noise; every rank takes part) and export the model with the platform's streamed
    export. Rank 0 writes ``logits.safetensors``, ``residency<r>.json`` come from every rank and the
    export goes to ``<out_dir>/model``."""
    from safetensors.torch import save_file

    cfg = JobConfig.from_dict(config["job"])
    ctx = worker_context()
    out = Path(config["out_dir"])
    engine = setup_model_and_engine(cfg, ctx)
    (out / f"residency{ctx.rank}.json").write_text(json.dumps(engine.diled_residency))
    codec = engine.module.codec
    batch = codec.collate(config["texts"])
    for _ in range(config["steps"]):
        train_step(engine, batch)
    engine.module.eval()
    with torch.no_grad():
        z = codec.encode(batch)
        logits = codec.decoder_logits(batch["dec_ids"][:, :-1], batch["dec_mask"][:, :-1], z)
    export_pretrained(engine, out / "model", zero_stage(cfg), ctx.rank)
    if ctx.rank == 0:
        save_file({"logits": logits.contiguous(), "z": z.contiguous()}, str(out / "logits.safetensors"))

"""A minimal single-process training loop (no Ray, no DeepSpeed) for small models, tests and demos.
The distributed trainer lives in ``diled_platform.training.train``; both optimise the same ``DiLED.forward``."""

from __future__ import annotations

import time
from typing import Callable, Iterator

import torch

from diled.model import DiLED


def infinite_batches(x: torch.Tensor, batch_size: int, seed: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled mini-batches ``{"x": [batch_size x ...]}`` of the rows of ``x`` (epoch by epoch)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0] - batch_size + 1, batch_size):
            yield {"x": x[perm[i:i + batch_size]]}


def train(model: DiLED, batches: Iterator[dict], steps: int, lr: float = 1e-3, weight_decay: float = 0.0,
          log_every: int = 0, log: Callable[[str], None] = print) -> list[dict[str, float]]:
    """Optimise ``model`` with AdamW for ``steps`` steps; returns one dict of means per logged interval
    (``step``, ``loss``, ``rec``, ``diff``, ``mu_abs``, ``samples_per_s``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    model.train()
    history: list[dict[str, float]] = []
    acc = {"loss": 0.0, "rec": 0.0, "diff": 0.0, "mu_abs": 0.0}
    seen, t0, count = 0, time.perf_counter(), 0
    # as in the platform's trainer: a codec that does not subclass diled.codecs.Codec may lack the hook
    set_step = getattr(model.codec, "set_training_step", lambda step: None)
    for step in range(1, steps + 1):
        set_step(step)
        out = model(next(batches))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        for k in acc:
            acc[k] += float(out[k].detach().mean())
        count += 1
        seen += out["t"].shape[0]
        if (log_every and step % log_every == 0) or step == steps:
            dt = time.perf_counter() - t0
            row = {"step": step, **{k: v / count for k, v in acc.items()}, "samples_per_s": seen / max(dt, 1e-9)}
            history.append(row)
            if log_every:
                log(f"step {step:>6d}  loss {row['loss']:.4f}  rec {row['rec']:.3f}  diff {row['diff']:.4f}  "
                    f"|mu| {row['mu_abs']:.3f}  {row['samples_per_s']:.0f} samples/s")
            acc = dict.fromkeys(acc, 0.0)
            seen, t0, count = 0, time.perf_counter(), 0
    model.eval()
    return history

"""Training progress on rank 0: the per-interval log line (losses, |mu|, lr, samples per second) and the same
scalars to TensorBoard and MLflow."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from diled_platform.config import JobConfig

if TYPE_CHECKING:
    from diled_platform.training.train import WorkerContext

log = logging.getLogger("diled")


@dataclass
class Progress:
    """Per-interval log line and TensorBoard scalars on rank 0."""

    cfg: JobConfig
    ctx: WorkerContext
    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0
    t0: float = field(default_factory=time.perf_counter)
    writer: Any = None
    tracker: Any = None     # diled_platform.training.tracking.Tracker: the same scalars to MLflow

    def __post_init__(self):
        if self.ctx.rank == 0 and "://" not in self.cfg.run.storage_path:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(self.cfg.run.storage_path) / self.cfg.run.name / "tensorboard"))

    def update(self, step: int, out: dict[str, torch.Tensor], lr: float | None = None) -> None:
        for k in ("loss", "rec", "diff", "mu_abs"):
            self.sums[k] = self.sums.get(k, 0.0) + float(out[k].detach().float().mean())
        self.count += 1
        if step % self.cfg.run.log_every == 0 or step == self.cfg.optim.max_steps:
            dt = time.perf_counter() - self.t0
            rate = self.count * self.cfg.data.batch_size * self.ctx.world_size / max(dt, 1e-9)
            means = {k: v / self.count for k, v in self.sums.items()}
            if self.ctx.rank == 0:
                log.info(f"step {step}/{self.cfg.optim.max_steps}  loss {means['loss']:.4f}  "
                         f"rec {means['rec']:.3f}  diff {means['diff']:.4f}  |mu| {means['mu_abs']:.3f}  "
                         + (f"lr {lr:.2e}  " if lr is not None else "")
                         + (f"{rate:.0f} samples/s" if rate >= 10 else f"{dt / self.count:.1f} s/step"))
                extra = {"train/samples_per_s": rate, **({"train/lr": lr} if lr is not None else {})}
                self.scalars(step, {**{f"train/{k}": v for k, v in means.items()}, **extra})
            self.sums, self.count, self.t0 = {}, 0, time.perf_counter()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)
            self.writer.flush()
        if self.tracker is not None:
            self.tracker.log_metrics(step, values)

    def close(self):
        if self.writer is not None:
            self.writer.close()
        if self.tracker is not None:
            self.tracker.close()

"""What every data type's report shares: the one writer of ``eval.json``, reading a dotted metric key, and
the loss-curve plot."""

from __future__ import annotations

import json
import os
from pathlib import Path

EVAL_NAME = "eval.json"


def write_eval(out_dir: Path, metrics: dict) -> Path:
    """``<out_dir>/eval.json``: the report's metrics (with what a job adds, such as its timings), written
    under a temporary name and renamed into place, so a reader never sees half a file. Every writer of
    ``eval.json`` calls this."""
    path = Path(out_dir) / EVAL_NAME
    tmp = path.with_name(f".{EVAL_NAME}.tmp")
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def lookup(metrics: dict, key: str):
    """``metrics`` at the dotted path ``key`` ("a.b" is metrics["a"]["b"]); None where it is missing."""
    value = metrics
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def loss_plot(tb_dir: Path, path: Path) -> None:
    """The training and validation loss terms over steps, from the run's TensorBoard scalars."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not tb_dir.is_dir():
        return
    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    tags = [t for t in ("train/loss", "train/rec", "train/diff", "val/val_loss", "val/val_rec", "val/val_diff")
            if t in acc.Tags().get("scalars", [])]
    if not tags:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, term in zip(axes, ("loss", "rec", "diff")):
        for tag in (t for t in tags if t.endswith("/" + term) or t.endswith("/val_" + term)):
            events = acc.Scalars(tag)
            ax.plot([e.step for e in events], [e.value for e in events], label=tag, marker="." if "val" in tag else None)
        ax.set_title(term)
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

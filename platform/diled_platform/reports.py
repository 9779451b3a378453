"""What a finished run writes next to its model: samples, reconstructions, metrics and plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from diled import DiLED
from diled_platform.config import JobConfig


def lookup(metrics: dict, key: str):
    """``metrics`` at the dotted path ``key`` ("a.b" is metrics["a"]["b"]); None where it is missing."""
    value = metrics
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def comparison_table(results: dict[str, dict], keys: list[tuple[str, str]]) -> str:
    """A markdown table, a column per run and a row per metric: ``keys`` are (dotted path into the
    run's metrics, label); a missing value is n/a."""
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for key, label in keys:
        cells = []
        for name in names:
            value = lookup(results[name], key)
            cells.append("n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def vector_report(model_dir: Path, cfg: JobConfig, out_dir: Path, n: int = 2000, steps: int = 50) -> dict:
    """For the ring data: generate ``n`` points (DDIM, ``steps`` steps), compare them with ``n`` fresh
    points of the same distribution (sliced Wasserstein-1, MMD), reconstruct them, and plot both."""
    from diled.data.toy import gaussian_ring, ring_mode_coverage
    from diled.metrics import mmd_rbf, sliced_wasserstein

    model = DiLED.from_pretrained(model_dir)
    data = gaussian_ring(n, seed=cfg.data.seed + 12345)  # not the training draw
    samples = torch.tensor(model.generate(n, steps=steps, seed=0))
    recon = torch.tensor(model.reconstruct({"x": data}))
    modes, near = ring_mode_coverage(samples)
    metrics = {
        "sliced_wasserstein_samples_vs_data": sliced_wasserstein(samples, data),
        "sliced_wasserstein_data_vs_data": sliced_wasserstein(gaussian_ring(n, seed=cfg.data.seed + 999), data),
        "mmd_rbf_samples_vs_data": mmd_rbf(samples, data),
        "reconstruction_mse": (recon - data).pow(2).sum(-1).mean().item(),
        "mean_predictor_mse": (data - data.mean(0)).pow(2).sum(-1).mean().item(),
        "modes_covered": modes,
        "fraction_of_samples_near_a_mode": near,
        "ddim_steps": steps,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "samples.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x0", "x1"])
        w.writerows(samples.tolist())
    (out_dir / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _scatter(data, samples, recon, out_dir / "samples.png", metrics)
    return metrics


def _scatter(data, samples, recon, path: Path, metrics: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharex=True, sharey=True)
    for ax, pts, title in zip(axes, (data, samples, recon),
                              ("held-out data", f"generated (DDIM {metrics['ddim_steps']} steps)",
                               "reconstructions of the held-out data")):
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
        ax.set_title(title)
        ax.set_aspect("equal")
    fig.suptitle(f"sliced W1 samples vs data {metrics['sliced_wasserstein_samples_vs_data']:.3f} "
                 f"(data vs data {metrics['sliced_wasserstein_data_vs_data']:.3f}); "
                 f"reconstruction MSE {metrics['reconstruction_mse']:.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

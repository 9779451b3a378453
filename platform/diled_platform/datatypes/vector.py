"""Vectors: rows of numbers (the 2-D, 8-mode Gaussian ring; a user's parquet/arrow files or saved
``datasets`` folder), the vector codec, and a report of sample and reconstruction quality.

The smallest data type, and the worked example of README's "Add a data type"."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from diled_platform.options import ConfigError, DataOptions, positive
from diled_platform.datatypes._reports import write_eval
from diled_platform.datatypes.base import DataType, Metric, driver_dataset


@dataclass
class VectorOptions(DataOptions):
    type: str = "vector"
    # ring: synthetic 2-D points; files: parquet/arrow; hf_disk: a saved `datasets` folder
    source: Literal["ring", "files", "hf_disk"] = "ring"
    column: str = "x"                           # the column that holds one example (a list of numbers)
    n_train: int = 8000                         # ring: number of synthetic points (train + val)

    path_sources: ClassVar[tuple[str, ...]] = ("files", "hf_disk")

    def validate(self):
        super().validate()
        positive(self, "n_train")


class VectorData(DataType):
    name, Options, preset, harness_steps = "vector", VectorOptions, "vector-cpu", 3000
    metrics = (
        Metric("sliced_wasserstein_samples_vs_data", "sliced W1, samples vs data", False),
        Metric("mmd_rbf_samples_vs_data", "MMD (RBF), samples vs data", False),
        Metric("reconstruction_mse", "reconstruction MSE", False),
        Metric("modes_covered", "ring modes covered", True),
    )
    outputs = ("samples.csv", "samples.png", "eval.json")

    # ------------------------------------------------------------------ data
    def _table(self):
        import ray.data

        opts = self.options
        if opts.source == "ring":
            from diled.data.toy import gaussian_ring

            x = gaussian_ring(opts.n_train, seed=opts.seed).numpy().astype(np.float32)
            ds = ray.data.from_numpy(x).rename_columns({"data": "x"})
        elif opts.source == "files":
            ds = _read_files(Path(opts.path).expanduser())
        else:
            ds = _read_hf_disk(Path(opts.path).expanduser())
        columns = ds.columns()
        if opts.column not in columns:
            raise ConfigError(f"data.column: no column {opts.column!r} in {opts.path or opts.source}; columns: {columns}")
        if opts.column != "x":
            return ds.select_columns([opts.column]).rename_columns({opts.column: "x"})
        return ds.select_columns(["x"])

    def training_examples(self) -> list:
        return list(self.splits["train"])

    def datasets(self) -> dict[str, Any]:
        return {name: driver_dataset({"x": self.splits[name]}) for name in ("train", "val")}

    def load_splits(self) -> dict[str, np.ndarray]:
        """The table split into train and validation by Ray Data (seeded), then brought to the driver. Ring:
        a fresh draw as test (the ring is a distribution, not a finite set). Files: validation doubles as
        test."""
        train, val = self._table().train_test_split(test_size=self.options.val_fraction, shuffle=True,
                                                    seed=self.options.seed)
        parts = {k: np.stack(list(d.to_pandas()["x"])).astype(np.float32) for k, d in {"train": train, "val": val}.items()}
        if self.options.source == "ring":
            from diled.data.toy import gaussian_ring

            parts["test"] = gaussian_ring(2000, seed=self.options.seed + 12345).numpy()
        else:
            parts["test"] = parts["val"]
        return parts

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def report(self, model_dir: Path, out_dir: Path, cfg, *, seed: int = 0, tools: dict | None = None) -> dict[str, Any]:
        """Generate ``n`` points (DDIM), compare them with ``n`` held-out points (sliced Wasserstein-1, MMD),
        reconstruct those, and plot all three; on the ring also the modes covered."""
        from diled import DiLED
        from diled.data.toy import gaussian_ring, ring_mode_coverage
        from diled.metrics import mmd_rbf, sliced_wasserstein

        n = cfg.run.report_examples or 2000
        steps = cfg.run.report_ddim_steps
        model = DiLED.from_pretrained(model_dir)
        ring = self.options.source == "ring"
        # the ring's held-out points are a fresh draw (not the training one); files: the validation split
        data = (gaussian_ring(n, seed=self.options.seed + 12345) if ring
                else torch.as_tensor(self.splits["test"][:n]))
        samples = torch.tensor(model.generate(cfg.run.report_samples or len(data), steps=steps, seed=seed))
        recon = torch.tensor(model.reconstruct({"x": data}))
        metrics = {
            "sliced_wasserstein_samples_vs_data": sliced_wasserstein(samples, data),
            "mmd_rbf_samples_vs_data": mmd_rbf(samples, data),
            "reconstruction_mse": (recon - data).pow(2).sum(-1).mean().item(),
            "mean_predictor_mse": (data - data.mean(0)).pow(2).sum(-1).mean().item(),
            "ddim_steps": steps,
        }
        if ring:
            modes, near = ring_mode_coverage(samples)
            metrics.update({"sliced_wasserstein_data_vs_data": sliced_wasserstein(
                gaussian_ring(n, seed=self.options.seed + 999), data),
                "modes_covered": modes, "fraction_of_samples_near_a_mode": near})
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "samples.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([f"x{i}" for i in range(samples.shape[1])])
            w.writerows(samples.tolist())
        write_eval(out_dir, metrics)
        if samples.shape[1] >= 2:
            _scatter(data, samples, recon, out_dir / "samples.png", metrics)
        return metrics


def _read_files(path: Path):
    import ray.data

    if not path.exists():
        raise ConfigError(f"data.path: {path} does not exist")
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    suffixes = {p.suffix for p in files if p.is_file()}
    if suffixes <= {".parquet"} and suffixes:
        return ray.data.read_parquet(str(path))
    if suffixes <= {".arrow", ".feather"} and suffixes:
        import pyarrow.feather as feather

        return ray.data.from_arrow([feather.read_table(str(p)) for p in files if p.is_file()])
    raise ConfigError(f"data.path: {path} holds no .parquet or .arrow/.feather files (found {sorted(suffixes)})")


def _read_hf_disk(path: Path):
    import datasets
    import ray.data

    if not path.exists():
        raise ConfigError(f"data.path: {path} does not exist")
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise ConfigError(f"data.path: {path} is a DatasetDict without a 'train' split ({list(ds)})")
        ds = ds["train"]
    return ray.data.from_arrow(ds.data.table)


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
    floor = metrics.get("sliced_wasserstein_data_vs_data")
    fig.suptitle(f"sliced W1 samples vs data {metrics['sliced_wasserstein_samples_vs_data']:.3f}"
                 + (f" (data vs data {floor:.3f})" if floor is not None else "")
                 + f"; reconstruction MSE {metrics['reconstruction_mse']:.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""A data type defined outside the platform, for ``test_new_datatype.py``: sampled sine waves of random
frequency and phase. A config names it by import path, ``data.type: "sine_data:SineData"``."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from diled_platform.config import DataOptions
from diled_platform.datatypes import DataType, Metric, driver_dataset


@dataclass
class SineOptions(DataOptions):
    type: str = "sine_data:SineData"
    source: Literal["synthetic"] = "synthetic"
    n_train: int = 4000
    length: int = 16


def waves(n: int, length: int, seed: int) -> np.ndarray:
    """``n`` waves sin(2 pi f t + phase), f in [1, 3] cycles per window, t in [0, 1)."""
    rng = np.random.default_rng(seed)
    f, phase = rng.uniform(1, 3, (n, 1)), rng.uniform(0, 2 * np.pi, (n, 1))
    return np.sin(2 * np.pi * f * np.arange(length) / length + phase).astype(np.float32)


def dominant_frequency(x: np.ndarray) -> np.ndarray:
    return np.abs(np.fft.rfft(x, axis=1))[:, 1:].argmax(1) + 1


class SineData(DataType):
    name, Options, preset, harness_steps = "sine", SineOptions, "sine-cpu", 200
    metrics = (Metric("reconstruction_mse", "rec. MSE", False),
               Metric("frequency_histogram_l1", "frequency histogram L1, samples vs test", False))
    outputs = ("samples.csv", "eval.json")

    def load_splits(self):
        o = self.options
        x = waves(o.n_train, o.length, o.seed)
        n_val = max(1, int(len(x) * o.val_fraction))
        return {"train": x[n_val:], "val": x[:n_val], "test": waves(500, o.length, o.seed + 1)}

    def datasets(self):
        return {k: driver_dataset({"x": self.splits[k]}) for k in ("train", "val")}

    @torch.no_grad()
    def report(self, model_dir, out_dir, cfg, *, seed=0, tools=None):
        from diled import DiLED

        model = DiLED.from_pretrained(model_dir)
        test = self.splits["test"]
        recon = np.asarray(model.reconstruct({"x": torch.as_tensor(test)}))
        samples = np.asarray(model.generate(len(test), steps=cfg.run.report_ddim_steps, seed=seed))
        bins = np.arange(1, self.options.length // 2 + 2)
        hist = lambda x: np.histogram(dominant_frequency(x), bins=bins)[0] / len(x)  # noqa: E731
        metrics = {"reconstruction_mse": float(((recon - test) ** 2).mean()),
                   "data_variance": float(test.var()),
                   "frequency_histogram_l1": float(np.abs(hist(samples) - hist(test)).sum())}
        np.savetxt(Path(out_dir) / "samples.csv", samples[:100], delimiter=",", fmt="%.4f")
        (Path(out_dir) / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return metrics

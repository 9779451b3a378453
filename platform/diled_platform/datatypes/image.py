"""Images: Fashion-MNIST (Debian's idx files) or a user's folder of images, and the report a finished run
writes: grids of samples, reconstructions and interpolations, and metrics in the feature space of a small
classifier trained on the training split (saved with the run)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from diled_platform.options import ConfigError, DataOptions
from diled_platform.datatypes._reports import write_eval
from diled_platform.datatypes.base import DataType, Metric, driver_dataset

log = logging.getLogger("diled")


@dataclass
class ImageOptions(DataOptions):
    type: str = "image"
    # fashion_mnist: the Debian package's idx files (path: another folder of them); image_folder: a user's images
    source: Literal["fashion_mnist", "image_folder"] = "fashion_mnist"
    image_size: int = 28                        # image_folder: images are resized to this (square)
    image_channels: Literal[1, 3] = 1           # image_folder: 1 (grey) or 3 (colour)
    max_examples: int | None = None             # keep at most this many training images

    path_sources: ClassVar[tuple[str, ...]] = ("image_folder",)


class ImageData(DataType):
    name, Options, preset, harness_steps = "image", ImageOptions, "image-cpu", 1000
    metrics = (
        Metric("reconstruction_psnr_db", "rec. PSNR (dB)", True),
        Metric("reconstruction_mse", "rec. MSE", False),
        Metric("frechet_classifier_features.samples_vs_test", "Frechet distance, samples vs test (classifier features)", False),
        Metric("interpolation.path_length_ratio", "interp. path-length ratio (1 = straight)", False),
        Metric("interpolation.max_step_share", "interp. largest step share (1/8 = even)", False),
        Metric("interpolation.class_switches", "interp. class switches", False),
        Metric("samples_nearest_train_l2", "samples: median L2 to nearest training image", True),
    )
    outputs = ("samples.png", "reconstructions.png", "interpolations.png", "eval.json")

    def load_splits(self) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """``{split: (uint8 images, labels or None)}``: Fashion-MNIST's 60k training images split into
        train/val (seeded), its 10k test set as test; a user's folder split at random."""
        opts = self.options
        from diled.data.image import fashion_mnist, read_image_folder

        try:
            if opts.source == "fashion_mnist":
                x, y = fashion_mnist("train", opts.path)
                test = fashion_mnist("test", opts.path)
            elif opts.source == "image_folder":
                x, _ = read_image_folder(opts.path, opts.image_size, opts.image_channels)
                y, test = None, None
            else:
                raise ConfigError(f"data.source {opts.source!r} is not an image source")
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"data: {e}") from None
        order = np.random.default_rng(opts.seed).permutation(len(x))
        n_val = max(1, int(round(len(x) * opts.val_fraction)))
        n_test = 0 if test is not None else int(round(len(x) * opts.test_fraction))
        if len(x) - n_val - n_test < 1:
            raise ConfigError(f"data: {len(x)} images are too few for the validation/test fractions")
        pick = lambda idx: (x[np.sort(idx)], None if y is None else y[np.sort(idx)])  # noqa: E731
        splits = {"val": pick(order[:n_val]), "train": pick(order[n_val + n_test:])}
        splits["test"] = test if test is not None else pick(order[n_val:n_val + n_test])
        if opts.max_examples:
            splits["train"] = tuple(None if a is None else a[:opts.max_examples] for a in splits["train"])
        return splits

    def training_examples(self) -> np.ndarray:
        return self.splits["train"][0]

    def training_labels(self) -> tuple[list[str], list[int]]:
        """Fashion-MNIST's ten classes; a user's image folder has no labels (ValueError)."""
        from diled.data.image import FASHION_MNIST_CLASSES

        labels = self.splits["train"][1]
        if labels is None:
            raise ValueError(f"data.source {self.options.source!r} has no labels to guide generation with; "
                             f"set prior_stage.guide_steps=0")
        return list(FASHION_MNIST_CLASSES), [int(v) for v in labels]

    def datasets(self):
        return {name: driver_dataset({"x": self.splits[name][0].reshape(len(self.splits[name][0]), -1)})
                for name in ("train", "val")}

    def tools(self, directory: Path, full: bool = False, **options) -> dict[str, Any]:
        """The feature classifier the metrics use (trained on the training split, or loaded from
        ``directory``), and the data's own floor in its features (one test half against the other)."""
        classifier, info = feature_classifier(self.splits, Path(directory))
        floor = None if classifier is None else test_half_vs_half(classifier, self.splits)
        return {"classifier": classifier, "classifier_info": info, "test_half_vs_half": floor}

    def report(self, model_dir: Path, out_dir: Path, cfg, *, seed: int = 0, tools: dict | None = None) -> dict[str, Any]:
        tools = self.tools(out_dir) if tools is None else tools
        sizes = {k: v for k, v in (("n_eval", cfg.run.report_examples), ("n_samples", cfg.run.report_samples))
                 if v is not None}
        return image_report(model_dir, self.splits, out_dir, tools["classifier"], tools["classifier_info"],
                            steps=cfg.run.report_ddim_steps, seed=seed, **sizes)

    def reference(self, tools: dict | None = None) -> dict | None:
        if not tools or tools.get("test_half_vs_half") is None:
            return None
        return {"frechet_classifier_features": {"samples_vs_test": tools["test_half_vs_half"]}}

    def describe(self, tools: dict | None = None) -> dict:
        return {"feature_classifier": (tools or {}).get("classifier_info")}


def _tensor(images: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(images).float() / 255.0
    return x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)


def feature_classifier(splits: dict, out_dir: Path, n_train: int = 30000, epochs: int = 2, seed: int = 0):
    """Train (or load from ``out_dir``) the classifier whose features the metrics use; None without labels."""
    from safetensors.torch import load_file, save_file

    from diled.metrics.image import FeatureClassifier, batched, train_classifier

    x, y = splits["train"]
    if y is None:
        return None, None
    path = out_dir / "feature_classifier.safetensors"
    xt = _tensor(x[:n_train])
    if path.is_file():
        info = json.loads((out_dir / "feature_classifier.json").read_text())
        clf = FeatureClassifier(**info["config"])
        clf.load_state_dict(load_file(str(path)))
        return clf.eval(), info
    clf = train_classifier(xt, torch.as_tensor(y[:n_train]), epochs=epochs, seed=seed)
    save_file(clf.state_dict(), str(path))
    test_x, test_y = splits["test"]
    acc = float((batched(clf, _tensor(test_x)).argmax(-1) == torch.as_tensor(test_y)).float().mean())
    info = {"config": clf.config, "trained_on": int(len(xt)), "epochs": epochs, "test_accuracy": acc,
            "architecture": "2 conv + 2 linear layers; features: its 128-d penultimate layer"}
    (out_dir / "feature_classifier.json").write_text(json.dumps(info, indent=2) + "\n")
    return clf.eval(), info


@torch.no_grad()
def test_half_vs_half(classifier, splits: dict, n_eval: int = 2000) -> float:
    """The data's own floor for the samples' Frechet distance: the first ``n_eval`` test images' classifier
    features, one half against the other (what ``image_report`` reports as ``test_half_vs_half``)."""
    from diled.metrics.image import batched

    return _halves_distance(batched(classifier.features, _tensor(splits["test"][0][:n_eval])))


def _halves_distance(features: torch.Tensor) -> float:
    from diled.metrics.image import frechet_distance

    half = len(features) // 2
    return frechet_distance(features[:half], features[half:])


@torch.no_grad()
def image_report(model_dir: Path, splits: dict, out_dir: Path, classifier=None, classifier_info=None,
                 n_eval: int = 2000, n_samples: int = 2000, n_paths: int = 16, frames: int = 9,
                 steps: int = 50, seed: int = 0) -> dict[str, Any]:
    """Evaluate a trained image model on the test split; write samples.png, reconstructions.png,
    interpolations.png and eval.json into ``out_dir``."""
    from diled import DiLED
    from diled.guidance import guidable_classes
    from diled.metrics.image import batched, frechet_distance, interpolation_smoothness, psnr, save_grid

    torch.manual_seed(seed)
    model = DiLED.from_pretrained(model_dir).eval()
    codec = model.codec
    x = _tensor(splits["test"][0][:n_eval])
    metrics: dict[str, Any] = {"objective": model.objective, "n_test": len(x)}

    # reconstruction
    z = batched(lambda b: model.encode({"x": b}), x, 500)
    recon = batched(codec.decode_images, z, 500)
    metrics["reconstruction_mse"] = float((recon - x).pow(2).mean())
    metrics["reconstruction_psnr_db"] = float(psnr(recon, x).mean())
    pairs = torch.stack([x[:16], recon[:16]], 1).flatten(0, 1)  # input, reconstruction, input, ...
    save_grid(torch.cat([pairs[0::2], pairs[1::2]]), out_dir / "reconstructions.png", nrow=16,
              title="test images (top) and their reconstructions (bottom)")

    # generation from the prior
    gen = torch.Generator().manual_seed(seed)
    z_s = torch.cat([model.sample_latents(min(500, n_samples - i), steps=steps, generator=gen)
                     for i in range(0, n_samples, 500)])
    samples = batched(codec.decode_images, z_s, 500)
    save_grid(samples[:64], out_dir / "samples.png", nrow=8, title=f"samples (DDIM-{steps} from the prior)")
    assert samples.min() >= 0 and samples.max() <= 1
    # copies? each sample's nearest training image (L2) against each test image's nearest training image
    train = _tensor(splits["train"][0][:10000]).flatten(1)
    nearest = lambda a: torch.cdist(a.flatten(1), train).min(1).values  # noqa: E731
    metrics["samples_nearest_train_l2"] = float(nearest(samples[:500]).median())
    metrics["test_nearest_train_l2"] = float(nearest(x[:500]).median())
    metrics["samples_exact_copies"] = int((nearest(samples[:500]) < 1e-3).sum())

    # interpolation between test images: slerp between DDIM-inverted codes, sampled back
    a, b = x[:n_paths], x[n_paths:2 * n_paths]
    paths = torch.stack([codec.decode_images(model.interpolate_latents({"x": a[i:i + 1]}, {"x": b[i:i + 1]},
                                                                       num=frames, steps=steps))
                         for i in range(len(a))])
    save_grid(paths[:8].flatten(0, 1), out_dir / "interpolations.png", nrow=frames,
              title="interpolations between test images (slerp of DDIM-inverted codes)")

    if classifier is not None:
        metrics["feature_classifier"] = classifier_info
        f_test = batched(classifier.features, x)
        metrics["frechet_classifier_features"] = {
            "samples_vs_test": frechet_distance(batched(classifier.features, samples), f_test),
            "reconstructions_vs_test": frechet_distance(batched(classifier.features, recon), f_test),
            "test_half_vs_half": _halves_distance(f_test),
            "note": "Frechet distance in the 128-d features of the run's own Fashion-MNIST classifier (not FID)"}
        metrics["samples_class_histogram"] = torch.bincount(batched(classifier, samples).argmax(-1),
                                                            minlength=10).tolist()
        metrics["interpolation"] = interpolation_smoothness(classifier, paths)
        if guidable_classes(model):
            labels = splits["test"][1]
            test = None if labels is None else (f_test, torch.as_tensor(np.asarray(labels[:len(x)])))
            metrics["guided"] = guided_classes(model, classifier, metrics["samples_class_histogram"], out_dir,
                                               steps=steps, seed=seed, test=test,
                                               unguided_fd=metrics["frechet_classifier_features"]["samples_vs_test"])
    write_eval(out_dir, metrics)
    return metrics


@torch.no_grad()
def guided_classes(model, classifier, unguided_histogram: list[int], out_dir: Path, n: int = 200,
                   scale: float | None = None, steps: int = 50, seed: int = 0, test: tuple | None = None,
                   unguided_fd: float | None = None) -> dict[str, Any]:
    """Samples guided toward each class (``diled.guidance.guidable_classes``) at ``scale`` (None: 1.5 for a
    conditional prior, classifier-free; 3 for a classifier guide: where each met the 80% bar with the smallest per-class Frechet
    distances, docs/results.md), judged by the run's feature classifier (which the guide or the
    conditional prior never saw): the share classified as the target, against that class's share of the unguided
    samples; with ``test`` (the test images' classifier features and labels), each class's Frechet distance
    against that class's test images, beside ``unguided_fd`` (the unguided samples' against all test
    images) and a size-matched floor (as many random test images against all test images: what ``n``
    images score at best, the distance's small-sample bias).
    ``guided_samples.png`` holds a row of guided samples per class."""
    from diled.guidance import guidable_classes
    from diled.metrics.image import frechet_distance, save_grid

    classes, free = guidable_classes(model), bool(getattr(model.denoiser, "classes", None))
    scale = (1.5 if free else 3.0) if scale is None else scale
    total = max(1, sum(unguided_histogram))
    out: dict[str, Any] = {"n_per_class": n, "guidance": "classifier-free" if free else "classifier",
                           "guidance_scale": scale, "ddim_steps": steps, "by_class": {}}
    rows = []
    for i, name in enumerate(classes):
        z = model.sample_latents(n, steps=steps, generator=torch.Generator().manual_seed(seed), condition=i,
                                 guidance_scale=scale)
        images = model.codec.decode_images(z)
        hit = float((classifier(images).argmax(-1) == i).float().mean())
        out["by_class"][name] = {"judged_as_target": hit, "unguided_share": unguided_histogram[i] / total}
        if test is not None and int((test[1] == i).sum()) >= 10:
            features = classifier.features(images)
            out["by_class"][name]["frechet_vs_class_test"] = frechet_distance(features, test[0][test[1] == i])
        rows.append(images[:8])
    out["mean_judged_as_target"] = sum(v["judged_as_target"] for v in out["by_class"].values()) / len(classes)
    fds = [v["frechet_vs_class_test"] for v in out["by_class"].values() if "frechet_vs_class_test" in v]
    if fds and unguided_fd is not None:
        pick = torch.randperm(len(test[0]), generator=torch.Generator().manual_seed(seed))[:n]
        out.update({"unguided_frechet_vs_test": unguided_fd, "max_class_frechet": max(fds),
                    "max_class_frechet_vs_unguided": max(fds) / unguided_fd,
                    "size_matched_floor": frechet_distance(test[0][pick], test[0]),
                    "frechet_note": f"{n} guided samples of a class against that class's test images; the "
                                    f"floor: {n} random test images against all test images"})
    save_grid(torch.cat(rows), out_dir / "guided_samples.png", nrow=8,
              title=f"guided samples, one row per class ({', '.join(classes)}), scale {scale}")
    return out

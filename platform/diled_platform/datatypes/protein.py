"""Proteins: sequences with a measured fitness (GB1 in its own split; a user's .csv/.tsv/.fasta), and the
report a finished run writes: reconstruction, fitness prediction, generation and latent-space
optimisation on the held-out split."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from diled_platform.options import ConfigError, DataOptions
from diled_platform.datatypes._reports import write_eval
from diled_platform.datatypes.base import DataType, Metric, driver_dataset, replace_options

log = logging.getLogger("diled")


@dataclass
class ProteinOptions(DataOptions):
    type: str = "protein"
    # gb1: the GB1 fitness set (its own train/test split); protein_files: a user's .csv/.tsv/.fasta
    source: Literal["gb1", "protein_files"] = "gb1"
    column: str = "sequence"                    # protein_files (CSV): the sequence column
    fitness_column: str | None = "fitness"      # protein_files (CSV): the fitness column, or none
    max_examples: int | None = None             # keep at most this many training sequences

    path_sources: ClassVar[tuple[str, ...]] = ("protein_files",)


class ProteinData(DataType):
    name, Options, preset, harness_steps = "protein", ProteinOptions, "protein-cpu", 1500
    metrics = (
        Metric("residue_accuracy", "residue acc.", True),
        Metric("mutated_residue_accuracy", "acc. at mutated positions", True),
        Metric("fitness_mse", "fitness MSE", False),
        Metric("fitness_pearson", "fitness Pearson", True),
        Metric("fitness_spearman", "fitness Spearman", True),
        Metric("optimize_gradient.predicted_gain", "gradient ascent: predicted gain", True),
        Metric("optimize_gradient.novel", "gradient ascent: novel", True),
        Metric("optimize_gradient.measured_gain", "optimisation gain (measured in GB1)", True),
        Metric("optimize_sampling.predicted_gain", "sampling: predicted gain", True),
        Metric("samples_valid", "samples valid", True),
        Metric("samples_novel", "samples novel", True),
        Metric("samples_unique", "samples unique", True),
    )
    outputs = ("reconstructions.tsv", "samples.txt", "optimized.tsv", "eval.json", "latents_fitness.png")

    def load_splits(self):
        """Train / val / test Arrow tables (columns sequence, fitness): GB1 in its own split, a user's file
        in a seeded random one."""
        from diled.data.protein import read_gb1, read_protein_file, split_protein_table

        opts = self.options
        try:
            if opts.source == "gb1":
                return read_gb1(opts.path, max_train=opts.max_examples, seed=opts.seed)
            table = read_protein_file(opts.path, sequence_column=opts.column, fitness_column=opts.fitness_column)
            splits = split_protein_table(table, opts.val_fraction, opts.test_fraction, opts.seed)
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"data: {e}") from None
        if opts.max_examples:
            splits["train"] = splits["train"].slice(0, opts.max_examples)
        return splits

    def datasets(self):
        return {name: driver_dataset(self.splits[name].select(["sequence", "fitness"])) for name in ("train", "val")}

    def training_examples(self) -> list[str]:
        return self.splits["train"].column("sequence").to_pylist()

    def training_labels(self) -> tuple[list[str], list[int]]:
        """Two classes by measured fitness: ``top_decile`` (at least the training split's 90th percentile)
        and ``below_top_decile``; sequences without a fitness are unlabelled. ValueError without any."""
        fitness = np.asarray([np.nan if v is None else v for v in self.splits["train"].column("fitness").to_pylist()],
                             dtype=np.float64)
        known = ~np.isnan(fitness)
        if not known.any():
            raise ValueError("the training split has no fitness values to guide generation with; set "
                             "prior_stage.guide_steps=0")
        threshold = float(np.quantile(fitness[known], 0.9))
        return GUIDE_CLASSES, [-1 if not k else int(v >= threshold) for v, k in zip(fitness, known)]

    def training_values(self) -> tuple[str, list[float | None]]:
        """The measured fitness of each training sequence (None where unknown)."""
        return "fitness", self.splits["train"].column("fitness").to_pylist()

    def tools(self, directory: Path, full: bool = False, **options) -> dict[str, Any]:
        """The complete data set's splits as the reference: for GB1 all 530k variants, so that "novel"
        means "not among GB1's training variants" and optimised proposals that GB1 measured get their
        measured fitness (a training subset, ``max_examples``, would miss most)."""
        if self.options.source == "gb1" and self.options.max_examples:
            return {"reference": ProteinData(replace_options(self.options, max_examples=None)).splits}
        return {"reference": self.splits}

    def report(self, model_dir: Path, out_dir: Path, cfg, *, seed: int = 0, tools: dict | None = None) -> dict[str, Any]:
        tools = self.tools(out_dir) if tools is None else tools
        sizes = {k: v for k, v in (("n_eval", cfg.run.report_examples), ("n_samples", cfg.run.report_samples))
                 if v is not None}  # protein decodes mu directly: no DDIM steps in reconstruction
        return protein_report(model_dir, self.splits, out_dir, reference=tools["reference"], seed=seed, **sizes)


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


@torch.no_grad()
def _encode_all(model, seqs: list[str]) -> torch.Tensor:
    from diled.prior_training import encode_all

    return encode_all(model, seqs, batch_size=512)


@torch.no_grad()
def protein_report(model_dir: Path, splits: dict, out_dir: Path, n_eval: int = 2000, n_optimize: int = 200,
                   n_samples: int = 200, radius: float = 0.5, seed: int = 0,
                   reference: dict | None = None) -> dict[str, Any]:
    """Evaluate a trained protein model on the test split; write reconstructions.tsv, samples.txt,
    optimized.tsv, eval.json and latents_fitness.png into ``out_dir``.

    ``reference``: the complete data set's splits (default ``splits``; for GB1 the job passes all 530k
    variants, so that "novel" means "not among GB1's training variants" and optimised proposals that GB1
    measured get their measured fitness)."""
    from diled import DiLED
    from diled.metrics.protein import fitness_metrics, hamming
    from diled.optimize import gradient_ascent, latent_scale, sample_search

    torch.manual_seed(seed)
    model = DiLED.from_pretrained(model_dir).eval()
    codec = model.codec
    test = splits["test"].slice(0, n_eval).to_pydict()
    seqs, fitness = test["sequence"], np.asarray(test["fitness"], dtype=np.float64)
    reference = reference or splits
    training = set(reference["train"].column("sequence").to_pylist())
    consensus = _consensus(splits["train"].column("sequence").to_pylist())
    metrics: dict[str, Any] = {"objective": model.objective, "n_test": len(seqs)}

    # reconstruction and fitness prediction from the encoder means
    z = _encode_all(model, seqs)
    recons, accs = [], []
    for i in range(0, len(seqs), 512):
        batch = model.prepare_batch(codec.collate(seqs[i:i + 512]))
        recons += codec.decode(z[i:i + 512])
        accs += codec.residue_accuracy(batch, z[i:i + 512]).tolist()
    metrics["residue_accuracy"] = float(np.mean(accs))
    # most positions of a variant are the wild type: score the positions where the input differs from the
    # training consensus separately (what a decoder that ignores z cannot get right)
    hits = [(a[i] == b[i]) for a, b in zip(seqs, recons) for i in range(min(len(a), len(b), len(consensus)))
            if a[i] != consensus[i]]
    metrics["mutated_residue_accuracy"] = float(np.mean(hits)) if hits else float("nan")
    metrics["consensus_residue_accuracy"] = float(np.mean(
        [a[i] == consensus[i] for a in seqs for i in range(min(len(a), len(consensus)))]))
    metrics["exact_reconstruction"] = float(np.mean([a == b for a, b in zip(seqs, recons)]))
    pred = codec.predict_fitness(z).numpy()
    metrics.update(fitness_metrics(pred, fitness))
    with open(out_dir / "reconstructions.tsv", "w") as f:
        f.write("input\toutput\tfitness\tpredicted\n")
        for a, b, y, p in list(zip(seqs, recons, fitness, pred))[:500]:
            f.write(f"{a}\t{b}\t{y:.4f}\t{p:.4f}\n")

    # generation from the prior (DiLED's, the two-stage model's, the VAE's N(0, I); meaningless for the
    # autoencoder objective alone: its prior was never trained)
    if model.objective != "autoencoder":
        samples = model.generate(n_samples, steps=min(50, model.diffusion.T), seed=seed)
        valid = [s for s in samples if s and set(s) <= set("ACDEFGHIKLMNPQRSTVWY")]
        metrics.update({"samples": len(samples), "samples_valid": len(valid) / len(samples),
                        "samples_novel": sum(s not in training for s in samples) / len(samples),
                        "samples_unique": len(set(samples)) / len(samples),
                        "samples_mean_predicted_fitness": float(codec.predict_fitness(_encode_all(model, valid)).mean())
                        if valid else float("nan")})
        (out_dir / "samples.txt").write_text("\n".join(samples) + "\n")

    # latent-space optimisation from the weakest held-out sequences
    start_idx = np.argsort(fitness)[:n_optimize]
    starts = [seqs[i] for i in start_idx]
    z_start = z[start_idx]
    r = radius * latent_scale(z)
    lookup = {}
    for part in reference.values():
        lookup.update(zip(part.column("sequence").to_pylist(), part.column("fitness").to_pylist()))
    rows = []
    gen = torch.Generator().manual_seed(seed)
    for method, z_new in (("gradient", gradient_ascent(codec.predict_fitness, z_start, r)),
                          ("sampling", sample_search(codec.predict_fitness, z_start, r, generator=gen))):
        proposals = codec.decode(z_new)
        # judge the decoded sequences themselves: re-encode them, then predict
        before = codec.predict_fitness(z_start).numpy()
        after = codec.predict_fitness(_encode_all(model, proposals)).numpy()
        known = [(lookup[p], lookup[s]) for p, s in zip(proposals, starts) if p != s and p in lookup]
        metrics[f"optimize_{method}"] = {
            "n": len(starts), "radius": radius,
            "predicted_gain": float(np.mean(after - before)),
            "valid": float(np.mean([bool(p) and set(p) <= set("ACDEFGHIKLMNPQRSTVWY") for p in proposals])),
            "changed": float(np.mean([p != s for p, s in zip(proposals, starts)])),
            "novel": float(np.mean([p not in training and p != s for p, s in zip(proposals, starts)])),
            "mean_mutations_from_start": float(np.mean([hamming(p, s) for p, s in zip(proposals, starts)])),
            "measured_in_gb1": len(known),
            "measured_gain": float(np.mean([a - b for a, b in known])) if known else float("nan"),
        }
        rows += [(method, s, p, b, a, lookup.get(p, float("nan"))) for s, p, b, a in zip(starts, proposals, before, after)]
    with open(out_dir / "optimized.tsv", "w") as f:
        f.write("method\tstart\tproposal\tpredicted_before\tpredicted_after\tmeasured_if_known\n")
        for row in rows:
            f.write("\t".join(f"{x:.4f}" if isinstance(x, float) else str(x) for x in row) + "\n")

    if getattr(model.guide, "value", None) == "fitness" or getattr(model.guide, "classes", None) == GUIDE_CLASSES:
        # at least GUIDED_SAMPLES: about one sample in seven is a variant GB1 measured, and the measured-fitness
        # test wants tens per group (sampling and decoding 500 variants takes seconds)
        metrics["guided"] = guided_fitness(model, lookup, training, reference, out_dir, n=max(n_samples, GUIDED_SAMPLES),
                                           seed=seed)
    _latent_plot(z, fitness, out_dir / "latents_fitness.png", model.objective)
    write_eval(out_dir, metrics)
    return metrics


GUIDE_CLASSES = ["below_top_decile", "top_decile"]  # by the training split's measured fitness
GUIDED_SAMPLES = 500


@torch.no_grad()
def guided_fitness(model, lookup: dict, training: set, reference: dict, out_dir: Path, n: int = 200,
                   scale: float = 3.0, steps: int = 50, seed: int = 0) -> dict[str, Any]:
    """Samples guided toward the top decile (``top_decile`` for a class guide, ``">= y"`` with y the training
    split's 90th percentile for a value guide) against unguided ones from the same seed: validity, novelty,
    uniqueness, the fitness head's prediction, and, for the sequences GB1 measured, their measured fitness
    (with a one-sided Mann-Whitney test of guided above unguided) and the share at least the training
    split's 90th percentile; ``guided_fitness.png``: histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_fitness = np.asarray([v for v in reference["train"].column("fitness").to_pylist() if v is not None])
    threshold = float(np.quantile(train_fitness, 0.9))
    steps = min(steps, model.diffusion.T)
    target = "top_decile" if getattr(model.guide, "classes", None) == GUIDE_CLASSES else f">= {threshold:.4f}"
    out: dict[str, Any] = {"n": n, "guidance_scale": scale, "ddim_steps": steps, "target": target,
                           "threshold_measured_fitness": threshold}
    predicted, measured_by = {}, {}
    for name, condition in (("unguided", None), ("guided", target)):
        samples = model.generate(n, steps=steps, seed=seed, condition=condition, guidance_scale=scale)
        valid = [s for s in samples if s and set(s) <= set("ACDEFGHIKLMNPQRSTVWY")]
        measured = measured_by[name] = [lookup[s] for s in samples if s in lookup]
        predicted[name] = model.codec.predict_fitness(_encode_all(model, valid)).numpy() if valid else np.zeros(0)
        out[name] = {"valid": len(valid) / n, "novel": sum(s not in training for s in samples) / n,
                     "unique": len(set(samples)) / n,
                     "mean_predicted_fitness": float(predicted[name].mean()) if valid else float("nan"),
                     "measured_in_gb1": len(measured),
                     "mean_measured_fitness": float(np.mean(measured)) if measured else float("nan"),
                     "measured_top_decile_share": float(np.mean([m >= threshold for m in measured]))
                     if measured else float("nan")}
    if min(len(v) for v in measured_by.values()) >= 2:
        from scipy.stats import mannwhitneyu

        out["measured_guided_above_unguided_p"] = float(mannwhitneyu(measured_by["guided"], measured_by["unguided"],
                                                                     alternative="greater").pvalue)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, colour in (("unguided", "tab:gray"), ("guided", "tab:green")):
        ax.hist(predicted[name], bins=30, alpha=0.6, color=colour, label=f"{name} ({len(predicted[name])} valid)")
    ax.set_xlabel("predicted fitness (the model's head)")
    ax.set_ylabel("samples")
    ax.set_title(f"samples toward {target} (scale {scale})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "guided_fitness.png", dpi=120)
    plt.close(fig)
    return out


def _consensus(seqs: list[str]) -> str:
    """The most common residue at each position (for GB1: the wild type)."""
    from collections import Counter

    length = max(len(s) for s in seqs)
    return "".join(Counter(s[i] for s in seqs if len(s) > i).most_common(1)[0][0] for i in range(length))


def _latent_plot(z: torch.Tensor, fitness: np.ndarray, path: Path, title: str) -> None:
    """Test latents projected on their first two principal components, coloured by measured fitness."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zc = z - z.mean(0)
    _, _, v = torch.pca_lowrank(zc, q=2, center=False)
    xy = (zc @ v[:, :2]).numpy()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    order = np.argsort(fitness)  # high fitness drawn last, on top
    sc = ax.scatter(xy[order, 0], xy[order, 1], c=fitness[order], cmap="viridis", s=6)
    fig.colorbar(sc, ax=ax, label="measured fitness (GB1 log enrichment)")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"test latents ({title})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

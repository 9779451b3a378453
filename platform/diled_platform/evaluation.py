"""The comparison harness behind ``jobs/evaluate.py``: DiLED and its baselines trained by the same platform
(same codec, data, trainer and step budget; the baseline is a config change, ``model.objective``),
evaluated on one held-out split over several seeds, summarised as mean +/- std tables and plots.

Models (``MODELS``):
- ``diled``: the joint objective.
- ``vae``: the text-VAE recipe (``objective=vae``): Gaussian posterior, KL to N(0, I) with linear KL
  annealing over the first half of training and free bits (Optimus' fixes; ``diled.baselines.vae``).
- ``two-stage``: the autoencoder alone (``objective=autoencoder``), then the latent prior on its frozen
  latents (``objective=prior_only`` + ``model.init_from``) for the same number of steps again.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diled_platform.config import JobConfig, replace
from diled_platform.reports import lookup

log = logging.getLogger("diled")
MODELS = ("diled", "vae", "two-stage")


@dataclass(frozen=True)
class Metric:
    key: str                  # dotted path into a run's metrics
    label: str
    higher_is_better: bool


# ----------------------------------------------------------------------------- training
def model_runs(cfg: JobConfig, model: str, seed: int, vae: dict) -> list[JobConfig]:
    """The job configs that train ``model`` with ``seed`` (two for two-stage, run in order)."""
    base = replace(cfg, run={"seed": seed, "name": f"{model}-seed{seed}"})
    if model == "diled":
        return [replace(base, model={"objective": "diled"})]
    if model == "vae":
        return [replace(base, model={"objective": "vae", "vae": vae})]
    if model == "two-stage":
        stage1 = replace(base, model={"objective": "autoencoder"}, run={"name": f"two-stage-ae-seed{seed}"})
        folder = Path(cfg.run.storage_path) / f"two-stage-ae-seed{seed}" / "model"
        return [stage1, replace(base, model={"objective": "prior_only", "init_from": str(folder)})]
    raise ValueError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")


def train_or_load(cfg: JobConfig, model: str, seed: int, vae: dict) -> tuple[Path, float]:
    """Train ``model`` (each stage that has no finished ``model/`` folder yet, so an interrupted evaluation
    resumes where it stopped); the final model folder and the training seconds spent now."""
    from diled_platform.train import fit

    seconds, folder = 0.0, None
    for stage in model_runs(cfg, model, seed, vae):
        folder = Path(stage.run.storage_path) / stage.run.name / "model"
        if (folder / "config.json").is_file():
            log.info(f"{stage.run.name}: trained model found, loading {folder}")
            continue
        t0 = time.perf_counter()
        outcome = fit(stage)
        seconds += time.perf_counter() - t0
        if outcome.model_dir is None:
            raise RuntimeError("evaluation needs a local run.storage_path (the models are read back)")
    return folder, seconds


def _recorded_train_seconds(eval_json: Path) -> int | None:
    """The training seconds an earlier evaluation of this run recorded (None if there is none)."""
    try:
        seconds = json.loads(eval_json.read_text())["seconds"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    value = seconds.get("train_recorded", seconds.get("train"))
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


# ----------------------------------------------------------------------------- summaries
def seed_values(runs: list[dict], key: str) -> list[float]:
    """The finite values of metric ``key`` over the runs (a metric that is NaN in a run, e.g. a measured
    gain with no measured proposal, is left out of its mean rather than poisoning it)."""
    values = (lookup(r, key) for r in runs)
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(float(v))]


def summarize(results: dict[str, list[dict]], metrics: list[Metric]) -> dict[str, dict[str, tuple]]:
    """``{model: {key: (mean, std, n)}}`` over seeds (std: sample standard deviation; 0 with one seed)."""
    out = {}
    for model, runs in results.items():
        out[model] = {}
        for m in metrics:
            values = seed_values(runs, m.key)
            if values:
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                out[model][m.key] = (statistics.fmean(values), std, len(values))
    return out


def best_models(summary: dict, metric: Metric) -> set[str]:
    """The rule for bold: the best mean in the metric's direction (ties share it)."""
    means = {model: s[metric.key][0] for model, s in summary.items() if metric.key in s}
    if not means:
        return set()
    target = max(means.values()) if metric.higher_is_better else min(means.values())
    return {model for model, v in means.items() if v == target}


def _fmt(mean: float, std: float) -> str:
    digits = 3 if abs(mean) < 10 else 1
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(summary: dict, metrics: list[Metric], reference: dict | None = None,
                   reference_name: str = "held-out data") -> str:
    """Models as rows, metrics as columns (arrow = better direction), mean ± std over seeds; bold =
    ``best_models``. ``reference``: an un-bolded row of the same metrics on real held-out data."""
    header = ["model"] + [f"{m.label} {'↑' if m.higher_is_better else '↓'}" for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    bold = {m.key: best_models(summary, m) for m in metrics}
    for model, stats in summary.items():
        cells = [model]
        for m in metrics:
            if m.key not in stats:
                cells.append("n/a")
                continue
            text = _fmt(*stats[m.key][:2])
            cells.append(f"**{text}**" if model in bold[m.key] else text)
        lines.append("| " + " | ".join(cells) + " |")
    if reference:
        cells = [f"*{reference_name}*"]
        for m in metrics:
            v = lookup(reference, m.key)
            cells.append("" if v is None else f"*{v:.3f}*" if abs(v) < 10 else f"*{v:.1f}*")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(summary: dict, metrics: list[Metric], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "metric", "label", "higher_is_better", "mean", "std", "seeds"])
        for model, stats in summary.items():
            for m in metrics:
                if m.key in stats:
                    mean, std, n = stats[m.key]
                    w.writerow([model, m.key, m.label, m.higher_is_better, f"{mean:.6g}", f"{std:.6g}", n])


def plot_summary(results: dict[str, list[dict]], metrics: list[Metric], path: Path, title: str) -> None:
    """One panel per metric: each model's mean with a ±std bar and its seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    models = list(results)
    for ax, m in zip(axes.flat, metrics):
        for i, model in enumerate(models):
            values = seed_values(results[model], m.key)
            if not values:
                continue
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            ax.bar(i, statistics.fmean(values), yerr=std, color=f"C{i}", alpha=0.6, capsize=4)
            ax.scatter([i] * len(values), values, color="k", s=10, zorder=3)
        ax.set_xticks(range(len(models)), models, fontsize=8)
        ax.set_title(f"{m.label} {'↑' if m.higher_is_better else '↓'}", fontsize=9)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- tasks
class Task(ABC):
    """What differs per data type: its preset, data, shared evaluation tools, metrics and VAE setting."""

    name: str
    preset: str
    default_steps: int
    metrics: list[Metric]

    @abstractmethod
    def prepare(self, cfg: JobConfig, out: Path) -> JobConfig:
        """Load the data and the shared evaluation tools; the job config the models train with."""

    def vae_options(self, cfg: JobConfig) -> dict:
        steps = cfg.optim.max_steps
        return {"beta": 1.0, "anneal_steps": max(1, steps // 2), "free_bits": 0.0}

    @abstractmethod
    def evaluate(self, model_dir: Path, out_dir: Path, seed: int) -> dict[str, Any]:
        """Metrics of one trained model; its outputs go to ``out_dir``."""

    def reference(self) -> dict | None:
        return None

    def describe(self) -> dict:
        return {}


TEXT_METRICS = [
    Metric("reconstruction_bleu", "rec. BLEU", True),
    Metric("reconstruction_token_accuracy", "token acc.", True),
    Metric("generation_perplexity", "gen. PPL (ref. LM)", False),
    Metric("distinct_2", "distinct-2", True),
    Metric("self_bleu", "self-BLEU", False),
    Metric("mauve", "MAUVE-style", True),
    Metric("interpolation_perplexity", "interp. PPL", False),
    Metric("arithmetic_flip_rate", "flip rate", True),
]


class TextTask(Task):
    name, preset, default_steps, metrics = "text", "text-cpu", 250, TEXT_METRICS

    def __init__(self, n_eval: int = 300, n_samples: int = 300, n_pairs: int = 20, lm_steps: int = 800,
                 ddim_steps: int = 50, direction_sentences: int = 2000):
        self.n_eval, self.n_samples, self.n_pairs, self.lm_steps, self.ddim_steps = \
            n_eval, n_samples, n_pairs, lm_steps, ddim_steps
        self.direction_sentences = direction_sentences

    def prepare(self, cfg: JobConfig, out: Path) -> JobConfig:
        from diled.metrics.lm import INFO_NAME, ReferenceLM

        from diled_platform.data import text_splits
        from diled_platform.text import prepare_tokenizer, sentiment_probe

        splits, stats = text_splits(cfg.data)
        log.info(f"data: {stats.summary()}")
        self.train = splits["train"].to_pylist()
        self.test = splits["test"].to_pylist()
        self.val = splits["val"].to_pylist()
        train_texts = [r["text"] for r in self.train]
        cfg = prepare_tokenizer(cfg, out, train_texts)  # one BPE for every model and seed
        self.training_set = {t.lower() for t in train_texts}
        lm_dir = out / "reference_lm"
        if (lm_dir / INFO_NAME).is_file():
            self.lm = ReferenceLM.load(lm_dir)
        else:
            self.lm = ReferenceLM.train(train_texts, [r["text"] for r in self.val], lm_dir, steps=self.lm_steps,
                                        log=log.info)
        self.probe, self.labelled = sentiment_probe(self.train)
        self.refs = [r["text"] for r in self.test[:self.n_eval]]
        self.ref_features = self.probe.embed(self.refs)
        rest = self.test[self.n_eval:] or self.test
        self.pairs = [(rest[2 * i]["text"], rest[2 * i + 1]["text"]) for i in range(min(self.n_pairs, len(rest) // 2))]
        self.negatives = [r["text"] for r in self.test if r["label"] == "negative"][:200]
        from diled.codecs.text import load_decoder_tokenizer

        tok = load_decoder_tokenizer(cfg.model.codec_args["tokenizer"])
        self.tokens_per_sentence = statistics.fmean(len(tok(t)["input_ids"]) + 1 for t in train_texts[:5000])
        return cfg

    def vae_options(self, cfg: JobConfig) -> dict:
        # Optimus' KL weight 1 on the summed token NLL, free bits 0.5 nats per dimension; our reconstruction
        # term is the NLL per token, so the same objective per token has beta = 1 / tokens per sentence
        return {"beta": round(1.0 / self.tokens_per_sentence, 4), "anneal_steps": max(1, cfg.optim.max_steps // 2),
                "free_bits": 0.5}

    @torch.no_grad()
    def evaluate(self, model_dir: Path, out_dir: Path, seed: int) -> dict[str, Any]:
        from diled import DiLED
        from diled.metrics.distribution import mauve_score
        from diled.metrics.text import distinct_n, novelty, self_bleu

        from diled_platform.text import (generate_texts, interpolation_paths, reconstruct_texts,
                                         sentiment_arithmetic, write_text_outputs)

        torch.manual_seed(seed)
        model = DiLED.from_pretrained(model_dir)
        recons, metrics = reconstruct_texts(model, self.refs)
        (samples,) = generate_texts(model, self.n_samples, self.ddim_steps, seed)  # plain greedy, as every method
        nonempty = [s for s in samples if s.strip()] or [""]
        paths = interpolation_paths(model, self.pairs, num=5, steps=self.ddim_steps)
        inner = [s for p in paths for s in p[1:-1]]
        metrics.update({
            "generation_perplexity": self.lm.perplexity(nonempty),
            "distinct_1": distinct_n(samples, 1), "distinct_2": distinct_n(samples, 2),
            "self_bleu": self_bleu(samples), "novelty": novelty(samples, self.training_set),
            "empty_samples": len(samples) - len([s for s in samples if s.strip()]),
            "mauve": mauve_score(self.probe.embed(samples), self.ref_features, seed=seed),
            "interpolation_perplexity": self.lm.perplexity(inner),
        })
        arith, _ = sentiment_arithmetic(model, self.probe, self.labelled[:self.direction_sentences], self.negatives)
        metrics.update(arith)
        write_text_outputs(out_dir, self.refs, recons, samples, self.pairs, paths)
        return metrics

    def reference(self) -> dict:
        """The same metrics on real held-out sentences (validation against test), where they apply."""
        from diled.metrics.distribution import mauve_score
        from diled.metrics.text import distinct_n, self_bleu

        other = [r["text"] for r in self.val[:self.n_eval]]
        return {"generation_perplexity": self.lm.perplexity(self.refs), "distinct_2": distinct_n(other, 2),
                "self_bleu": self_bleu(other), "mauve": mauve_score(self.probe.embed(other), self.ref_features)}

    def describe(self) -> dict:
        return {"reference_lm": self.lm.info, "held_out_sentences": len(self.refs), "samples": self.n_samples,
                "interpolation_pairs": len(self.pairs), "ddim_steps": self.ddim_steps,
                "tokens_per_sentence": round(self.tokens_per_sentence, 2),
                "mauve_features": "all-MiniLM-L6-v2 mean-pooled sentence embeddings (the offline encoder), "
                                  "PCA 90%, k-means with (N + M) / 10 clusters, scaling 5",
                "sentiment_classifier": f"logistic regression on frozen all-MiniLM-L6-v2 embeddings of "
                                        f"{len(self.labelled)} training sentences",
                "sentiment_direction": f"mean latent of positive minus negative among the first "
                                       f"{min(self.direction_sentences, len(self.labelled))} of them"}


PROTEIN_METRICS = [
    Metric("residue_accuracy", "residue acc.", True),
    Metric("mutated_residue_accuracy", "acc. at mutated positions", True),
    Metric("fitness_mse", "fitness MSE", False),
    Metric("fitness_pearson", "fitness Pearson", True),
    Metric("fitness_spearman", "fitness Spearman", True),
    Metric("optimize_gradient.measured_gain", "optimisation gain (measured)", True),
    Metric("samples_novel", "samples novel", True),
    Metric("samples_unique", "samples unique", True),
]


class ProteinTask(Task):
    name, preset, default_steps, metrics = "protein", "protein-cpu", 1500, PROTEIN_METRICS

    def prepare(self, cfg: JobConfig, out: Path) -> JobConfig:
        from diled_platform.data import protein_splits

        self.splits = protein_splits(cfg.data)
        self.ref = (protein_splits(replace(cfg, data={"max_examples": None}).data)
                    if cfg.data.source == "gb1" else self.splits)
        return cfg

    def evaluate(self, model_dir: Path, out_dir: Path, seed: int) -> dict[str, Any]:
        from diled_platform.protein import protein_report

        return protein_report(model_dir, self.splits, out_dir, reference=self.ref)


IMAGE_METRICS = [
    Metric("reconstruction_psnr_db", "rec. PSNR (dB)", True),
    Metric("frechet_classifier_features.samples_vs_test", "Frechet distance (classifier features)", False),
    Metric("interpolation.path_length_ratio", "interp. path-length ratio", False),
]


class ImageTask(Task):
    name, preset, default_steps, metrics = "image", "image-cpu", 1000, IMAGE_METRICS

    def prepare(self, cfg: JobConfig, out: Path) -> JobConfig:
        from diled_platform.data import image_splits
        from diled_platform.image import feature_classifier, test_half_vs_half

        self.splits = image_splits(cfg.data)
        self.classifier, self.classifier_info = feature_classifier(self.splits, out)
        # the data's own floor in the same features, known before any model: one test half against the other
        self.test_halves = test_half_vs_half(self.classifier, self.splits)
        return cfg

    def evaluate(self, model_dir: Path, out_dir: Path, seed: int) -> dict[str, Any]:
        from diled_platform.image import image_report

        return image_report(model_dir, self.splits, out_dir, self.classifier, self.classifier_info)

    def reference(self) -> dict:
        return {"frechet_classifier_features": {"samples_vs_test": self.test_halves}}

    def describe(self) -> dict:
        return {"feature_classifier": self.classifier_info}


TASKS = {"text": TextTask, "protein": ProteinTask, "image": ImageTask}


# ----------------------------------------------------------------------------- the whole comparison
def run_comparison(task: Task, cfg: JobConfig, out: Path, seeds: list[int], models: list[str],
                   vae: dict | None = None) -> dict:
    """Train (or load) every model for every seed, evaluate each, write the tables, CSV, plot and JSON
    to ``out``; returns the summary. ``vae``: settings that replace the task's VAE defaults."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = replace(cfg, run={"storage_path": str(out / "runs")})
    t0 = time.perf_counter()
    cfg = task.prepare(cfg, out)
    prepare_s = time.perf_counter() - t0
    vae = {**task.vae_options(cfg), **(vae or {})}
    results: dict[str, list[dict]] = {m: [] for m in models}
    for seed in seeds:
        for model in models:
            model_dir, train_s = train_or_load(cfg, model, seed, vae)
            recorded = _recorded_train_seconds(model_dir.parent / "eval.json") if train_s == 0 else None
            t1 = time.perf_counter()
            metrics = task.evaluate(model_dir, model_dir.parent, seed)
            # train: spent by this invocation (0 when loaded); train_recorded: when the model was trained
            metrics["seconds"] = {"train": round(train_s), "evaluate": round(time.perf_counter() - t1),
                                  "train_recorded": round(train_s) if recorded is None else recorded}
            metrics["seed"], metrics["model_dir"] = seed, str(model_dir)
            (model_dir.parent / "eval.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
            results[model].append(metrics)
            log.info(f"{model} seed {seed}: " + ", ".join(
                f"{m.label} {lookup(metrics, m.key):.3f}" for m in task.metrics
                if isinstance(lookup(metrics, m.key), (int, float))))
    summary = summarize(results, task.metrics)
    reference = task.reference()
    table = markdown_table(summary, task.metrics, reference)
    wall = time.perf_counter() - t0
    trained = sum(r["seconds"]["train_recorded"] for rs in results.values() for r in rs)
    budget = (f"{cfg.optim.max_steps} steps per model (two-stage: {cfg.optim.max_steps} autoencoder + "
              f"{cfg.optim.max_steps} prior steps), batch {cfg.data.batch_size} x {cfg.scaling.num_workers} workers; "
              f"{len(seeds)} seeds ({', '.join(map(str, seeds))}); training {trained / 60:.0f} min in all, "
              f"this evaluation's wall time {wall / 60:.0f} min")
    if "vae" in models:
        budget += (f"; VAE: KL weight {vae['beta']:g}, annealed over {vae['anneal_steps']} steps, "
                   f"free bits {vae['free_bits']:g} nats per dimension")
    rule = ("mean ± sample std over seeds; **bold**: the best mean in the arrow's direction "
            "(↑ higher is better, ↓ lower is better)")
    (out / "table.md").write_text(f"# {task.name}: DiLED vs baselines ({task.preset})\n\n{table}\n\n{rule}. "
                                  f"Budget: {budget}.\n")
    write_csv(summary, task.metrics, out / "table.csv")
    plot_summary(results, task.metrics, out / "table.png",
                 f"{task.name}: {cfg.optim.max_steps} steps per model, {len(seeds)} seeds (bars: mean ± std; dots: seeds)")
    train_seconds = {m: [r["seconds"]["train"] for r in rs] for m, rs in results.items()}
    (out / "results.json").write_text(json.dumps(
        {"task": task.name, "preset": task.preset, "seeds": seeds, "budget": budget, "vae": vae,
         "prepare_seconds": round(prepare_s), "train_seconds": train_seconds, "setup": task.describe(),
         "reference": reference, "runs": results}, indent=2, default=str) + "\n")
    print(f"\n{table}\n\n{rule}.\nBudget: {budget}.")
    return summary

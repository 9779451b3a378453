"""The comparison harness behind ``jobs/evaluate.py``: DiLED and its baselines (``diled_platform.comparison.baselines``)
trained by the same platform (same codec, data, trainer and step budget; a baseline is a config change),
evaluated by their data type's one report on one held-out split over several seeds, summarised as
mean +/- std tables and plots over the data type's metric list. The jobs' ``--compare`` tables are the
same tables with one seed.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
import time
from pathlib import Path

from diled_platform.comparison.baselines import train
from diled_platform.config import JobConfig, replace
from diled_platform.datatypes import DataType, Metric
from diled_platform.datatypes._reports import lookup, write_eval

log = logging.getLogger("diled")
MODELS = ("diled", "vae", "two-stage")   # the harness's default line-up (any of baselines.BASELINES)


# ----------------------------------------------------------------------------- summaries
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


# ----------------------------------------------------------------------------- the whole comparison
def run_comparison(datatype: DataType, cfg: JobConfig, out: Path, seeds: list[int], models: list[str],
                   vae: dict | None = None, tool_options: dict | None = None) -> dict:
    """Train (or load) every model for every seed, evaluate each with the data type's report (its ``full``
    tools: text adds a reference LM), write the tables, CSV, plot and JSON to ``out``; returns the summary.
    ``vae``: settings that replace the data type's VAE defaults."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = replace(cfg, run={"storage_path": str(out / "runs")})
    t0 = time.perf_counter()
    cfg = datatype.prepare(cfg, out)  # one tokenizer (text) for every model and seed
    tools = datatype.tools(out, full=True, **(tool_options or {}))
    prepare_s = time.perf_counter() - t0
    vae = {**datatype.vae_options(cfg), **(vae or {})}
    results: dict[str, list[dict]] = {m: [] for m in models}
    for seed in seeds:
        for model in models:
            seeded = replace(cfg, run={"seed": seed})
            model_dir, train_s = train(seeded, model, f"{model}-seed{seed}", vae, datatype)
            recorded = _recorded_train_seconds(model_dir.parent / "eval.json") if train_s == 0 else None
            t1 = time.perf_counter()
            metrics = datatype.report(model_dir, model_dir.parent, seeded, seed=seed, tools=tools)
            # train: spent by this invocation (0 when loaded); train_recorded: when the model was trained
            metrics["seconds"] = {"train": round(train_s), "evaluate": round(time.perf_counter() - t1),
                                  "train_recorded": round(train_s) if recorded is None else recorded}
            metrics["seed"], metrics["model_dir"] = seed, str(model_dir)
            write_eval(model_dir.parent, metrics)
            results[model].append(metrics)
            log.info(f"{model} seed {seed}: " + ", ".join(
                f"{m.label} {lookup(metrics, m.key):.3f}" for m in datatype.metrics
                if isinstance(lookup(metrics, m.key), (int, float))))
    summary = summarize(results, list(datatype.metrics))
    reference = datatype.reference(tools=tools)
    table = markdown_table(summary, list(datatype.metrics), reference)
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
    (out / "table.md").write_text(f"# {datatype.name}: DiLED vs baselines\n\n{table}\n\n{rule}. "
                                  f"Budget: {budget}.\n")
    write_csv(summary, list(datatype.metrics), out / "table.csv")
    plot_summary(results, list(datatype.metrics), out / "table.png",
                 f"{datatype.name}: {cfg.optim.max_steps} steps per model, {len(seeds)} seeds (bars: mean ± std; dots: seeds)")
    train_seconds = {m: [r["seconds"]["train"] for r in rs] for m, rs in results.items()}
    (out / "results.json").write_text(json.dumps(
        {"data_type": datatype.name, "seeds": seeds, "budget": budget, "vae": vae,
         "prepare_seconds": round(prepare_s), "train_seconds": train_seconds, "setup": datatype.describe(tools=tools),
         "reference": reference, "runs": results}, indent=2, default=str) + "\n")
    print(f"\n{table}\n\n{rule}.\nBudget: {budget}.")
    return summary


def comparison_table(results: dict[str, dict], metrics: list[Metric]) -> str:
    """A job's ``--compare`` table: one run per model (one seed), the harness's table and rule."""
    return markdown_table(summarize({name: [m] for name, m in results.items()}, metrics), metrics)

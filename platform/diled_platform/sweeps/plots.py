"""The plots a sweep writes into its folder: the metric against w (one objective), the Pareto front of two
objectives with w and the schedule visible in the markers, and each objective against each parameter."""

from __future__ import annotations

import math
from pathlib import Path

MARKERS = {"constant": "o", "linear": "s", "cosine": "^"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finite(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _log_axis(ax, sweep, key: str, axis: str = "x") -> None:
    if sweep.space.get(key, {}).get("loguniform"):
        from matplotlib.ticker import NullFormatter

        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        (ax.xaxis if axis == "x" else ax.yaxis).set_minor_formatter(NullFormatter())


def _log_if_wide(ax, values: list[float], axis: str = "y") -> None:
    """A log axis when positive values span more than two orders of magnitude (a bad trial is often
    thousands of times off, and would flatten the rest into one line)."""
    values = [v for v in values if _finite(v)]
    if values and min(values) > 0 and max(values) / min(values) > 100:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def sweep_plot(rows: list[dict], sweep, path: Path) -> None:
    """The metric against w (log scale), one colour per schedule; hollow markers: stopped by ASHA."""
    plt = _plt()
    metric = sweep.metrics[0]
    key = f"best_{metric}"
    x_key = "model.w" if "model.w" in sweep.space else next(iter(sweep.space))
    fig, ax = plt.subplots(figsize=(6, 4))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(r.get("diffusion.schedule", "all")), []).append(r)
    for (name, members), colour in zip(sorted(groups.items()), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4):
        for stopped in (False, True):
            pts = [(r[x_key], r[key]) for r in members if r["stopped_early"] == stopped and _finite(r[x_key], r[key])]
            if pts:
                ax.scatter(*zip(*pts), label=f"{name}{' (stopped early)' if stopped else ''}",
                           facecolors="none" if stopped else colour, edgecolors=colour, s=50)
    _log_axis(ax, sweep, x_key)
    values = [r[key] for r in rows if _finite(r[key])]
    if values and max(values) - min(values) > 100 * max(1e-9, min(abs(v) for v in values) or 1):
        ax.set_yscale("symlog", linthresh=1.0)  # bad trials are orders of magnitude off
    ax.set_xlabel(x_key)
    ax.set_ylabel(f"{metric} (best report, {sweep.modes[0]})")
    ax.set_title(f"sweep {sweep.name}: {len(rows)} trials")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pareto_plot(rows: list[dict], sweep, path: Path) -> None:
    """The first two objectives of every trial at its last report: marker shape = schedule, colour = w
    (log scale), hollow = stopped early by ASHA, the Pareto front joined by a line and the promoted
    trial circled."""
    plt = _plt()
    from matplotlib.colors import LogNorm

    mx, my = sweep.metrics[:2]
    fig, ax = plt.subplots(figsize=(7, 5))
    ws = [r.get("model.w") for r in rows if _finite(r.get("model.w"))]
    norm = LogNorm(min(ws), max(ws)) if ws and min(ws) > 0 and max(ws) > min(ws) else None
    cmap = plt.get_cmap("viridis")
    seen = []
    for r in rows:
        x, y = r.get(f"last_{mx}"), r.get(f"last_{my}")
        if not _finite(x, y):
            continue
        schedule = str(r.get("diffusion.schedule", "constant"))
        colour = cmap(norm(r["model.w"])) if norm is not None and _finite(r.get("model.w")) else "tab:blue"
        if schedule not in seen:
            seen.append(schedule)
        ax.scatter([x], [y], marker=MARKERS.get(schedule, "D"), s=70, edgecolors=colour,
                   facecolors="none" if r["stopped_early"] else colour, linewidths=1.5)
    for schedule in seen:  # legend entries in grey: the colour is w's, not the schedule's
        ax.scatter([], [], marker=MARKERS.get(schedule, "D"), s=70, color="grey", label=schedule)
    _log_if_wide(ax, [r.get(f"last_{mx}") for r in rows], "x")
    _log_if_wide(ax, [r.get(f"last_{my}") for r in rows], "y")
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r[f"last_{mx}"])
    if front:
        ax.plot([r[f"last_{mx}"] for r in front], [r[f"last_{my}"] for r in front], "k--", lw=1,
                label="Pareto front")
    if norm is not None:
        from matplotlib.cm import ScalarMappable

        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="w")
    ax.set_xlabel(f"{mx} ({sweep.modes[0]} is better), last report")
    ax.set_ylabel(f"{my} ({sweep.modes[1]} is better), last report")
    stopped = sum(r["stopped_early"] for r in rows)
    ax.set_title(f"sweep {sweep.name}: {len(rows)} trials ({stopped} stopped early: hollow)", fontsize=10)
    ax.legend(fontsize=8, title="schedule (marker)", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sensitivity_plot(rows: list[dict], sweep, path: Path) -> None:
    """One panel per (objective, parameter): the objective's last report against the parameter's value,
    trials that ran the whole budget filled, those ASHA stopped hollow."""
    plt = _plt()
    params, metrics = list(sweep.space), sweep.metrics
    fig, axes = plt.subplots(len(metrics), len(params), figsize=(3.2 * len(params), 2.8 * len(metrics)),
                             squeeze=False)
    for i, metric in enumerate(metrics):
        for j, key in enumerate(params):
            ax = axes[i][j]
            choice = "choice" in sweep.space[key]
            levels = [str(v) for v in sweep.space[key]["choice"]] if choice else None
            for stopped in (False, True):
                pts = [(levels.index(str(r[key])) if choice else r[key], r[f"last_{metric}"]) for r in rows
                       if r["stopped_early"] == stopped and r.get(key) is not None and _finite(r[f"last_{metric}"])
                       and (not choice or str(r[key]) in levels)]
                if pts:
                    ax.scatter(*zip(*pts), s=30, facecolors="none" if stopped else "tab:blue", edgecolors="tab:blue")
            _log_if_wide(ax, [r.get(f"last_{metric}") for r in rows], "y")
            if choice:
                ax.set_xticks(range(len(levels)), levels, fontsize=8)
            else:
                _log_axis(ax, sweep, key)
            if i == len(metrics) - 1:
                ax.set_xlabel(key, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{metric} ({sweep.modes[i]})", fontsize=9)
    fig.suptitle(f"sweep {sweep.name}: each objective against each parameter (hollow: stopped early)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

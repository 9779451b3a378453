"""Protein metrics: correlation of predicted with measured fitness (no scipy needed)."""

from __future__ import annotations

import numpy as np


def pearson(a, b) -> float:
    """Pearson correlation of two equal-length sequences (NaN if either is constant)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"pearson needs two 1-D arrays of the same length >= 2, got {a.shape} and {b.shape}")
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def rankdata(x) -> np.ndarray:
    """Ranks 1..n, ties get their average rank (as scipy.stats.rankdata's default)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a, b) -> float:
    """Spearman rank correlation (Pearson on average ranks)."""
    return pearson(rankdata(a), rankdata(b))


def fitness_metrics(predicted, measured) -> dict[str, float]:
    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    keep = np.isfinite(m)
    p, m = p[keep], m[keep]
    return {"fitness_mse": float(((p - m) ** 2).mean()), "fitness_pearson": pearson(p, m),
            "fitness_spearman": spearman(p, m), "fitness_n": int(len(m))}


def hamming(a: str, b: str) -> int:
    """Positions that differ, plus the length difference."""
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))

"""Metrics, each named for what it computes."""

from diled.metrics.distribution import mmd_rbf, sliced_wasserstein

__all__ = ["mmd_rbf", "sliced_wasserstein"]

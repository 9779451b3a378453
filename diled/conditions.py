"""Conditions of a prior: class names, a class index from a name, the class embedding that a prior
built with classes adds to its time embedding (``NULL``, -1, is the learned "no condition"), and value
conditions (``">= y"``: a value of at least y, which a value guide steers toward). Shared by the priors
(``diled.denoiser``), guidance (``diled.guidance``) and the model.

A condition is a class name (``"positive"``), a class index, or a string ``">= y"`` with a number y."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

NULL = -1  # the class index of "no condition"
_AT_LEAST = re.compile(r"^\s*>=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def at_least(condition) -> float | None:
    """The y of a value condition ``">= y"`` (ValueError if y is not finite); None for any other condition."""
    if not isinstance(condition, str):
        return None
    match = _AT_LEAST.match(condition)
    if match is None:
        return None
    value = float(match.group(1))
    if not math.isfinite(value):
        raise ValueError(f"a value condition needs a finite number, got {condition!r}")
    return value


def check_classes(classes) -> list[str]:
    """``classes`` as a list of distinct non-empty names (ValueError naming the problem)."""
    if classes is None:
        return []
    if isinstance(classes, str) or not all(isinstance(c, str) and c for c in classes):
        raise ValueError(f"classes must be a list of non-empty names, got {classes!r}")
    classes = list(classes)
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct, got {classes}")
    return classes


def class_index(classes: list[str], condition) -> int:
    """The index of ``condition`` (a class name or an index) among ``classes``; ValueError listing them."""
    if not classes:
        raise ValueError("this model's prior has no classes: it takes no condition (train a conditional prior, "
                         "or guide it with a classifier)")
    if isinstance(condition, str):
        if condition not in classes:
            raise ValueError(f"unknown condition {condition!r}; this model knows {classes}")
        return classes.index(condition)
    if isinstance(condition, bool) or not isinstance(condition, int) or not 0 <= condition < len(classes):
        raise ValueError(f"a condition is a class name or an index in 0..{len(classes) - 1}, got {condition!r}")
    return condition


class ConditionEmbedding(nn.Module):
    """A class index [N] (``NULL`` = -1 for none) -> a vector [N x dim]; the null class is learned too."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, cond: torch.Tensor | None, n: int, device) -> torch.Tensor:
        if cond is None:
            cond = NULL
        cond = torch.as_tensor(cond, device=device).long().reshape(-1)
        if cond.numel() == 1:
            cond = cond.expand(n)
        if cond.shape != (n,) or bool(((cond < NULL) | (cond >= self.num_classes)).any()):
            raise ValueError(f"cond must be {n} class indices in -1..{self.num_classes - 1} (-1: none), "
                             f"got {cond.tolist()[:8]}")
        return self.table(torch.where(cond == NULL, torch.full_like(cond, self.num_classes), cond))


def training_condition(prior: nn.Module, cond: torch.Tensor | None, drop_prob: float) -> torch.Tensor | None:
    """What a prior trains on in the joint loss: a batch's class indices ``cond`` [N] (-1: unlabelled), each
    replaced by the null class with probability ``drop_prob`` (classifier-free guidance, Ho & Salimans 2022:
    the same prior also learns the unconditional model); None for a batch without classes (the null class).
    ValueError for class indices given to a prior built without classes."""
    if cond is None:
        return None
    if not getattr(prior, "classes", None):
        raise ValueError(f"the batch has class indices ('cond') but the {type(prior).__name__} prior was built "
                         f"without classes: build it with classes=[...] or leave 'cond' out")
    if not 0 <= drop_prob <= 1:
        raise ValueError(f"the condition's drop probability must be in [0, 1], got {drop_prob!r}")
    cond = cond.long().reshape(-1)
    return torch.where(torch.rand(cond.shape, device=cond.device) < drop_prob, torch.full_like(cond, NULL), cond)

"""Named beta schedules, computed in float64.

A schedule is a pure function ``T -> betas`` (a float64 array of length T, ``betas[t - 1]`` being
beta_t for t in 1..T). Names are a public contract: once a schedule is committed under a name its
numbers never change; a new behaviour gets a new name (the improved-diffusion convention).
"""

from __future__ import annotations

import math
from typing import Callable, Literal, get_args

import numpy as np

ScheduleName = Literal["constant", "linear", "cosine", "linear_wide"]

# DiLED's official code uses beta = 0.008 at every step with T = 1000, so that
# abar_T = 0.992 ** 1000 ~ 3.2e-4: the chain ends close enough to N(0, I).
CONSTANT_BETA = 0.008


def constant_betas(T: int, beta: float = CONSTANT_BETA) -> np.ndarray:
    """The same beta at every step (DiLED / EDDPM official code)."""
    return np.full(T, beta, dtype=np.float64)


def linear_betas(T: int, start: float = 1e-4, end: float = 0.02) -> np.ndarray:
    """Linear from 1e-4 to 0.02 (Ho et al. 2020, arXiv:2006.11239, section 4), not rescaled by T."""
    return np.linspace(start, end, T, dtype=np.float64)


def linear_wide_betas(T: int) -> np.ndarray:
    """Linear from 1e-4 to 0.05: with T = 200 the chain ends at abar_T = 0.006, where ``linear``'s 0.02 end
    leaves 0.13 of the signal; for latents scaled to a spread near 1 (``diled.prior_space``), whose z_T must be
    close to N(0, I) for sampling to start where training ended."""
    return linear_betas(T, 1e-4, 0.05)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Cosine abar (Nichol & Dhariwal 2021, arXiv:2102.09672, eq. 17), betas clipped at 0.999."""

    def abar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1.0 - abar((i + 1) / T) / abar(i / T), max_beta) for i in range(T)]
    return np.asarray(betas, dtype=np.float64)


_SCHEDULES: dict[str, Callable[[int], np.ndarray]] = {
    "constant": constant_betas,
    "linear": linear_betas,
    "cosine": cosine_betas,
    "linear_wide": linear_wide_betas,
}
assert set(_SCHEDULES) == set(get_args(ScheduleName))

SCHEDULE_NAMES: tuple[str, ...] = tuple(_SCHEDULES)


def check_schedule_name(name: str) -> str:
    if name not in _SCHEDULES:
        raise ValueError(f"unknown noise schedule {name!r}; valid names: {', '.join(SCHEDULE_NAMES)}")
    return name


def check_num_steps(T: int) -> int:
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 2:
        raise ValueError(f"T (number of diffusion steps) must be an integer >= 2, got {T!r}")
    return int(T)


def get_betas(name: str, T: int) -> np.ndarray:
    """``betas`` [T] float64 for the schedule ``name`` with ``T`` steps."""
    betas = _SCHEDULES[check_schedule_name(name)](check_num_steps(T))
    if not (np.all(betas > 0) and np.all(betas < 1)):
        raise ValueError(f"schedule {name!r} with T={T} gives betas outside (0, 1)")
    return betas

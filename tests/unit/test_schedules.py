import math

import numpy as np
import pytest

from diled.schedules import SCHEDULE_NAMES, get_betas


def test_constant_is_the_official_0008():
    betas = get_betas("constant", 1000)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    assert np.all(betas == 0.008)
    # abar_T = 0.992^1000 ~ 3.2e-4: the chain ends near N(0, I)
    assert np.prod(1 - betas) == pytest.approx(0.992**1000, rel=1e-12)


def test_linear_endpoints():
    betas = get_betas("linear", 1000)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    assert np.all(np.diff(betas) > 0)


def test_cosine_matches_nichol_dhariwal_abar():
    T, s = 1000, 0.008
    abar = np.cumprod(1 - get_betas("cosine", T))
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (1, 10, 500, 900):
        assert abar[t - 1] == pytest.approx(f(t / T) / f(0), rel=1e-9)
    assert get_betas("cosine", T).max() <= 0.999


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_every_schedule_is_a_valid_float64_schedule(name):
    for T in (2, 10, 1000):
        betas = get_betas(name, T)
        assert betas.dtype == np.float64 and betas.shape == (T,)
        assert np.all((betas > 0) & (betas < 1))


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="'sigmoid'.*constant, linear, cosine"):
        get_betas("sigmoid", 10)


@pytest.mark.parametrize("T", [1, 0, -5, 2.5, True])
def test_T_below_two_is_refused(T):
    with pytest.raises(ValueError, match=f"T .*{T!r}"):
        get_betas("constant", T)

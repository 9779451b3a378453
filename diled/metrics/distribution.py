"""Distances between two samples of vectors: sliced Wasserstein, MMD and MAUVE (the authors' mauve-text package)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance (Rabin et al. 2011) between samples ``x`` [N x D] and ``y`` [M x D]:
    the mean over random unit directions of the 1-D Wasserstein-1 distance of the projections, each
    computed exactly from quantiles (on a common grid of max(N, M) quantile levels)."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"sliced_wasserstein needs [N x D] and [M x D], got {tuple(x.shape)} and {tuple(y.shape)}")
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(x.shape[1], n_projections, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px, py = x.double().cpu() @ dirs, y.double().cpu() @ dirs
    m = max(px.shape[0], py.shape[0])
    levels = (torch.arange(m, dtype=torch.float64) + 0.5) / m
    qx = torch.quantile(px, levels, dim=0, interpolation="lower")
    qy = torch.quantile(py, levels, dim=0, interpolation="lower")
    return float((qx - qy).abs().mean())


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = (0.1, 0.3, 1.0, 3.0)) -> float:
    """Squared maximum mean discrepancy (Gretton et al. 2012), biased V-statistic, with a sum of RBF
    kernels exp(-||a - b||^2 / (2 h^2)) over ``bandwidths``. Zero iff the samples coincide in distribution
    (as the sample size grows)."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd_rbf needs [N x D] and [M x D], got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.double().cpu(), y.double().cpu()

    def k(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    return float(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())


MAUVE_SEEDS = (0, 1, 2)


def mauve(p: torch.Tensor, q: torch.Tensor, seeds: Sequence[int] = MAUVE_SEEDS) -> dict[str, float | list[float]]:
    """MAUVE (Pillutla et al. 2021) between feature samples ``p`` [N x D] (e.g. generated) and ``q``
    [M x D] (e.g. held-out data), computed by the authors' ``mauve-text`` package with its defaults
    (``num_buckets="auto"``: min(N, M) / 10 k-means clusters; PCA to 0.9 explained variance; scaling 5), once per k-means seed: ``{"mean": ..., "per_seed": [...]}``.

    In (0, 1]; about 1 for two samples of the same distribution. A score depends on the features and on
    the sample sizes: compare it with a real-against-real ceiling computed the same way."""
    if p.dim() != 2 or q.dim() != 2 or p.shape[1] != q.shape[1] or min(len(p), len(q)) < 10:
        raise ValueError(f"mauve needs two [n x D] samples with n >= 10, got {tuple(p.shape)} and {tuple(q.shape)}")
    try:
        import mauve as mauve_text
    except ImportError as err:  # pragma: no cover - a set-up problem, named
        raise ImportError("MAUVE needs the mauve-text package (and faiss-cpu): pip install mauve-text faiss-cpu "
                          "(scripts/setup.sh installs both)") from err
    p_np, q_np = p.detach().double().cpu().numpy(), q.detach().double().cpu().numpy()
    scores = [float(mauve_text.compute_mauve(p_features=p_np, q_features=q_np, seed=int(s), verbose=False).mauve)
              for s in seeds]
    return {"mean": sum(scores) / len(scores), "per_seed": scores}


MAUVE_MIN = 10  # its clustering needs tens of points: a tiny report has none


def mauve_of_texts(embed: Callable[[list[str]], torch.Tensor], samples: list[str], test: list[str],
                   ceiling: list[str] | None) -> dict:
    """``mauve`` of ``samples`` against ``test`` on the sentence embeddings ``embed`` gives ([N x D]) and,
    with ``ceiling`` (other real sentences, as many), the same score of those against ``test``: what
    real text reaches with this feature and size. Fewer than ``MAUVE_MIN`` texts: not computed (None)."""
    if min(len(samples), len(test)) < MAUVE_MIN:
        return {"mauve": None, "mauve_note": f"not computed: fewer than {MAUVE_MIN} samples or test sentences"}
    ref = embed(test)
    score = mauve(embed([s if s.strip() else "." for s in samples]), ref)
    out = {"mauve": score["mean"], "mauve_per_seed": score["per_seed"], "mauve_n": [len(samples), len(test)]}
    if ceiling is not None:
        out["mauve_ceiling_val_vs_test"] = mauve(embed(ceiling), ref)["mean"]
    return out

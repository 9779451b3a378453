"""Image metrics that need no download: a Frechet distance in the feature space of a small classifier
trained on the training split (not "FID": not Inception, not ImageNet features), PSNR, and a
classifier-based measure of how smoothly interpolations move between their endpoints."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image [N] in dB (inf for identical images)."""
    mse = (x.float() - y.float()).flatten(1).pow(2).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse)


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(a)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to feature sets ``a`` [N x F] and ``b`` [M x F]:
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), in float64 (0 for a set with itself)."""
    a, b = a.double(), b.double()
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two feature matrices with the same width and >= 2 rows, got {tuple(a.shape)}, {tuple(b.shape)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _sqrtm_psd(s_a)
    cross = _sqrtm_psd(root_a @ s_b @ root_a)
    return float((mu_a - mu_b).pow(2).sum() + torch.trace(s_a) + torch.trace(s_b) - 2 * torch.trace(cross))


class FeatureClassifier(nn.Module):
    """A small CNN classifier; ``features`` (the 128-d penultimate layer) is the space of the Frechet
    distance and of the interpolation check."""

    def __init__(self, channels: int = 1, size: int = 28, classes: int = 10):
        super().__init__()
        self.config = {"channels": channels, "size": size, "classes": classes}
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, 128), nn.ReLU())
        self.head = nn.Linear(128, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: int = 2, batch_size: int = 128,
                     lr: float = 2e-3, seed: int = 0) -> FeatureClassifier:
    """Train the feature classifier on ``images`` [N x C x H x W] in [0, 1] with integer ``labels``."""
    torch.manual_seed(seed)
    model = FeatureClassifier(images.shape[1], images.shape[2], int(labels.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(images), generator=g)
        for i in range(0, len(images), batch_size):
            idx = perm[i:i + batch_size]
            loss = nn.functional.cross_entropy(model(images[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def batched(fn, x: torch.Tensor, size: int = 1000) -> torch.Tensor:
    return torch.cat([fn(x[i:i + size]) for i in range(0, len(x), size)])


@torch.no_grad()
def interpolation_smoothness(classifier: FeatureClassifier, paths: torch.Tensor) -> dict[str, float]:
    """``paths`` [P x K x C x H x W]: P interpolations of K frames. Reports, averaged over paths:
    ``path_length_ratio`` (summed feature distance between consecutive frames over the endpoints' direct
    distance; 1 = a straight walk, large = detours or jumps), ``max_step_share`` (the largest single step's
    share of the path length; 1/(K-1) when evenly spaced), and ``class_switches`` (changes of the
    predicted class along the path; 1 when the endpoints differ is the ideal)."""
    p, k = paths.shape[:2]
    feats = batched(classifier.features, paths.flatten(0, 1)).view(p, k, -1)
    steps = (feats[:, 1:] - feats[:, :-1]).norm(dim=-1)
    direct = (feats[:, -1] - feats[:, 0]).norm(dim=-1).clamp(min=1e-8)
    length = steps.sum(1).clamp(min=1e-8)
    pred = batched(classifier, paths.flatten(0, 1)).argmax(-1).view(p, k)
    return {"path_length_ratio": float((length / direct).mean()),
            "max_step_share": float((steps.max(1).values / length).mean()),
            "class_switches": float((pred[:, 1:] != pred[:, :-1]).float().sum(1).mean())}


def save_grid(images: torch.Tensor, path, nrow: int, title: str | None = None) -> None:
    """A PNG grid of images [N x C x H x W] in [0, 1], ``nrow`` per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, c, h, w = images.shape
    rows = (n + nrow - 1) // nrow
    grid = np.ones((rows * (h + 2), nrow * (w + 2), c), dtype=np.float32)
    arr = images.permute(0, 2, 3, 1).cpu().numpy()
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[r * (h + 2) + 1:r * (h + 2) + 1 + h, col * (w + 2) + 1:col * (w + 2) + 1 + w] = arr[i]
    fig = plt.figure(figsize=(nrow * 0.6, rows * 0.6 + (0.4 if title else 0)))
    plt.imshow(grid.squeeze(-1) if c == 1 else grid, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
    plt.axis("off")
    if title:
        plt.title(title, fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)

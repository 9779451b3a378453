"""The image codec: a conv encoder to a latent vector and a conv decoder conditioned on it.

Images are ``channels x size x size`` with values in [0, 1] (uint8 inputs are divided by 255). They
travel as tensors ``[N x C x H x W]`` or, for services and Ray Data, as flat rows of ``C * H * W``
numbers (``data_dim``), so the vector paths of the platform carry them unchanged.

Likelihood ``-log p(x0 | z)`` summed over pixels: ``"bernoulli"`` (binary cross-entropy with the
intensity as a soft target, the usual choice for MNIST-like data) or ``"gaussian"`` with a fixed
``sigma``. Sized for 28 x 28 on CPU; ``width`` and ``blocks`` scale it up, ``size`` must be divisible by 4.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from diled.codecs.base import Codec, register_codec


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(8, c_out), nn.SiLU())


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.SiLU())


@register_codec
class ImageCodec(Codec):
    name = "image"

    def __init__(self, latent_dim: int = 32, size: int = 28, channels: int = 1, width: int = 32, blocks: int = 1,
                 likelihood: str = "bernoulli", sigma: float = 0.1):
        super().__init__()
        for key, value in (("latent_dim", latent_dim), ("size", size), ("channels", channels), ("width", width),
                           ("blocks", blocks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ImageCodec: {key} must be a positive integer, got {value!r}")
        if size % 4:
            raise ValueError(f"ImageCodec: size must be divisible by 4, got {size}")
        if width % 8:
            raise ValueError(f"ImageCodec: width must be a multiple of 8 (group norm), got {width}")
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"ImageCodec: likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        if not sigma > 0:
            raise ValueError(f"ImageCodec: sigma must be > 0, got {sigma}")
        self.latent_dim, self.size, self.channels = latent_dim, size, channels
        self.likelihood, self.sigma = likelihood, float(sigma)
        self.data_dim = channels * size * size
        self.config = {"latent_dim": latent_dim, "size": size, "channels": channels, "width": width,
                       "blocks": blocks, "likelihood": likelihood, "sigma": float(sigma)}
        w, s4 = width, size // 4
        self.encoder = nn.Sequential(
            _block(channels, w, 1), *[_block(w, w, 1) for _ in range(blocks - 1)],
            _block(w, 2 * w, 2), *[_block(2 * w, 2 * w, 1) for _ in range(blocks - 1)],
            _block(2 * w, 2 * w, 2), nn.Flatten(), nn.Linear(2 * w * s4 * s4, latent_dim))
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, 2 * w * s4 * s4), nn.SiLU())
        self.decoder = nn.Sequential(
            nn.Unflatten(1, (2 * w, s4, s4)), *[_block(2 * w, 2 * w, 1) for _ in range(blocks - 1)],
            _up(2 * w, w), *[_block(w, w, 1) for _ in range(blocks - 1)],
            _up(w, w), nn.Conv2d(w, channels, 3, padding=1))

    def get_config(self) -> dict[str, Any]:
        return dict(self.config)

    # ----------------------------------------------------------------- batches
    def _as_images(self, x) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        x = x.float()
        c, s = self.channels, self.size
        if x.dim() == 2 and x.shape[1] == self.data_dim:          # flat rows
            x = x.view(-1, c, s, s)
        elif x.dim() == 3 and c == 1 and x.shape[1:] == (s, s):    # N x H x W
            x = x.unsqueeze(1)
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(f"ImageCodec expects images of shape {c} x {s} x {s} (or rows of {self.data_dim} "
                             f"numbers), got {tuple(x.shape)}")
        if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise ValueError("ImageCodec expects pixel values in [0, 1] (or uint8 0-255)")
        return x

    def collate(self, examples) -> dict[str, torch.Tensor]:
        if isinstance(examples, (torch.Tensor, np.ndarray)):
            return {"x": self._as_images(examples)}
        try:
            arr = np.stack([np.asarray(e, dtype=np.float32 if not (isinstance(e, np.ndarray) and e.dtype == np.uint8)
                                       else np.uint8) for e in examples])
        except ValueError as e:
            raise ValueError(f"ImageCodec: examples of different shapes: {e}") from None
        return {"x": self._as_images(arr)}

    def collate_columns(self, columns) -> dict[str, torch.Tensor]:
        return {"x": self._as_images(np.stack(list(columns["x"])))}

    # ----------------------------------------------------------------- codec
    def encode(self, batch) -> torch.Tensor:
        return self.encoder(batch["x"] * 2 - 1)

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        """Logits (bernoulli) or means (gaussian) [N x C x H x W]."""
        return self.decoder(self.from_latent(z))

    def decode_images(self, z: torch.Tensor) -> torch.Tensor:
        """The decoded images [N x C x H x W] in [0, 1] (the likelihood's mean)."""
        out = self.decoder_output(z)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out.clamp(0, 1)

    def reconstruction_loss(self, batch, z) -> torch.Tensor:
        x, out = batch["x"], self.decoder_output(z).float()
        if self.likelihood == "bernoulli":
            nll = nn.functional.binary_cross_entropy_with_logits(out, x.float(), reduction="none")
        else:
            nll = (x - out) ** 2 / (2 * self.sigma ** 2) + math.log(self.sigma) + 0.5 * math.log(2 * math.pi)
        return nll.flatten(1).sum(1)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, **kwargs) -> list[list[float]]:
        """Flat rows of ``C * H * W`` pixel values in [0, 1] (JSON-friendly); ``decode_images`` for tensors."""
        return self.decode_images(z).flatten(1).tolist()

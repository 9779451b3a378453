"""Where the prior works: the encoder's latents, or the same latents standardised, u = (z - center) / scale.

A text latent is about 0.11 per number against the unit noise of the diffusion, so under the linear schedule
its signal-to-noise ratio falls below 1 within the first ~15 of 200 steps: most steps of training and of
sampling see noise alone. A prior trained on a finished model's latents (``diled.prior_training``) may instead
work on standardised latents (center: the latents' mean, scale: their spread), as latent diffusion scales its
autoencoder's latents (Rombach et al. 2022). The model maps at its boundary (``model.prior_space.to_prior``
and ``from_prior``): samples come back as ``center + scale * u``; inversion, editing, interpolation, the prior's
training terms and the guides read ``(z - center) / scale``. Saved in the model's ``config.json``.
"""

from __future__ import annotations

import math
from typing import Any

import torch


class PriorSpace:
    """The affine map between latents z [N x D] and the prior's coordinates u = (z - center) / scale;
    ``PriorSpace()`` (no center) is the identity: the prior works on the latents themselves."""

    def __init__(self, center=None, scale: float = 1.0):
        if center is None:
            self.center, self.scale = None, 1.0
            return
        center = torch.as_tensor(center, dtype=torch.float32)
        if center.dim() != 1 or not bool(torch.isfinite(center).all()):
            raise ValueError(f"prior_space center must be a finite vector [D], got shape {tuple(center.shape)}")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"prior_space scale must be a finite number > 0, got {scale!r}")
        self.center, self.scale = center, float(scale)

    @classmethod
    def fit(cls, z0: torch.Tensor, spread: float = 1.0) -> "PriorSpace":
        """Centred on the mean of the latents ``z0`` [N x D], scaled so that their standard deviation (one
        over all numbers: the prior's coordinates keep the latents' shape, only moved and scaled) is ``spread``."""
        if z0.dim() != 2 or len(z0) < 2:
            raise ValueError(f"PriorSpace.fit needs latents [N x D] with N >= 2, got shape {tuple(z0.shape)}")
        if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not 0 < spread < math.inf:
            raise ValueError(f"spread must be a finite number > 0, got {spread!r}")
        z0 = z0.detach().float().cpu()
        center = z0.mean(0)
        return cls(center, float((z0 - center).std()) / spread)

    @property
    def dim(self) -> int | None:
        """The latent size D; None for the identity."""
        return None if self.center is None else self.center.numel()

    def to_prior(self, z: torch.Tensor) -> torch.Tensor:
        """Latents [N x D] in the prior's coordinates."""
        return z if self.center is None else (z - self.center.to(z.device, z.dtype)) / self.scale

    def from_prior(self, u: torch.Tensor) -> torch.Tensor:
        """The prior's coordinates [N x D] back to latents."""
        return u if self.center is None else self.center.to(u.device, u.dtype) + self.scale * u

    def get_config(self) -> dict[str, Any]:
        if self.center is None:
            return {}
        return {"center": self.center.tolist(), "scale": self.scale}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "PriorSpace":
        """``get_config``'s inverse ({} is the identity)."""
        if not isinstance(config, dict) or (config and set(config) != {"center", "scale"}):
            raise ValueError(f"prior_space needs exactly the keys center and scale, got {config!r:.80}")
        return cls(config["center"], config["scale"]) if config else cls()

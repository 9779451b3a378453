"""A label head for the text codec: a linear classifier of the data's labels (e.g. sentiment) on the latent,
trained jointly with the DiLED loss as an auxiliary term, as the protein codec's fitness head is.

Why: with a latent that holds a sentence's words slot by slot, the difference between the mean latents of
positive and negative sentences is small against what the words put there, and adding it to a sentence's
latent barely changes the decoded sentence. The head reads the latent through noise of a fixed scale
(``noise`` per dimension), so it classifies well only if the encoder sets the classes apart by more than
that noise along one direction. Measured on the text-cpu model (docs/text.md, "Latent arithmetic: why the
shift does not flip, and a label head"): it lengthens the class-mean difference up to 3.5x, but the
decoder barely follows it (the arithmetic flips 1.1-1.5x as often as without the shift); what it gives
reliably is a jointly trained linear readout of the label from the representation. Examples without one
of the ``classes`` (unlabelled, or another label such as "neutral") add nothing.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LABEL_HEAD_KEYS = ("classes", "weight", "noise")


def check_label_head(options: dict) -> dict:
    """``options`` as the codec keeps them (``classes`` a list of distinct non-empty strings, at least two;
    ``weight`` > 0, default 1; ``noise`` >= 0, default 0.1); ValueError naming the key and value."""
    if not isinstance(options, dict):
        raise ValueError(f"label_head must be a mapping with keys {', '.join(LABEL_HEAD_KEYS)}, got {options!r}")
    unknown = sorted(set(options) - set(LABEL_HEAD_KEYS))
    if unknown:
        raise ValueError(f"label_head: unknown key(s) {unknown}; known: {', '.join(LABEL_HEAD_KEYS)}")
    classes = options.get("classes")
    if (not isinstance(classes, (list, tuple)) or len(classes) < 2
            or not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes)):
        raise ValueError(f"label_head.classes must be a list of at least two distinct non-empty strings, "
                         f"got {classes!r}")
    out = {"classes": list(classes), "weight": options.get("weight", 1.0), "noise": options.get("noise", 0.1)}
    for key, low in (("weight", "> 0"), ("noise", ">= 0")):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                value > 0 if low == "> 0" else value >= 0):
            raise ValueError(f"label_head.{key} must be a number {low}, got {value!r}")
        out[key] = float(value)
    return out


class LabelHead(nn.Module):
    """Logits of ``classes`` from a latent [N x D]; ``loss`` is the auxiliary term per example."""

    def __init__(self, latent_dim: int, classes: list[str], weight: float = 1.0, noise: float = 0.1):
        super().__init__()
        self.classes, self.weight, self.noise = list(classes), float(weight), float(noise)
        self.linear = nn.Linear(latent_dim, len(self.classes))

    def targets(self, labels: list) -> torch.Tensor:
        """Class indices [N] of ``labels``, matched by their text (an integer label 1 is class "1"); -1 for
        a label that is not one of the classes, or None."""
        index = {c: i for i, c in enumerate(self.classes)}
        return torch.tensor([-1 if label is None else index.get(str(label), -1) for label in labels],
                            dtype=torch.long)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z)

    def loss(self, z0: torch.Tensor, targets: torch.Tensor, features=None) -> torch.Tensor:
        """Cross-entropy [N] of the head on ``z0`` plus Gaussian noise of std ``noise`` (training and
        validation alike), read through ``features`` if given (the codec's sentence summary); 0 where the
        target is -1."""
        known = targets >= 0
        z = z0 + self.noise * torch.randn_like(z0) if self.noise else z0
        z = features(z) if features is not None else z
        ce = F.cross_entropy(self.linear(z).float(), targets.clamp(min=0), reduction="none")
        return torch.where(known, ce, torch.zeros_like(ce))

    @torch.no_grad()
    def predict(self, z: torch.Tensor) -> list[str]:
        """The most likely class of each latent (no noise)."""
        return [self.classes[i] for i in self.linear(z).argmax(-1).tolist()]

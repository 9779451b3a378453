"""A sentence-level path from a slotted text latent into the decoder, and slot dropout.

Why: with ``latent_slots`` K > 1 each slot holds a few tokens of the sentence and the decoder reads each
stretch from its own slot. What the whole sentence is about (its sentiment, its topic) is then spread over
the slots' word choices, and nothing in the decoder reads it as one thing: adding the difference between
the mean latents of positive and negative sentences to a sentence's latent barely changes what is decoded.
The sentence path gives the decoder one more input, a narrow summary of the whole latent
``s = A z`` (``width`` numbers, a linear map of all D), which it reads as one more memory position and as a
vector added to every token embedding. Slot dropout makes the decoder rely on it: in training each slot of
the decoder's view is replaced, with probability ``slot_dropout``, by a learned "missing" vector, so that
the stretch must be guessed from its neighbours and the summary (which always sees the whole latent).
``slot_dropout_after`` N keeps every slot in view for the first N training steps (the decoder first learns
to read the slots, then to do without some): the training loop says which step it is through
``codec.set_training_step(step)`` (``diled.training.train`` and the platform's trainer do).
With a label head (``diled.codecs._text_labels``) the head reads ``s``: the classes are set apart in the
numbers the decoder reads sentence-wide. Encoding, the prior and sampling are unchanged: z is still one
D-vector; only the decoder reads it in one more way.
"""

from __future__ import annotations

import torch
from torch import nn


def check_sentence_options(width, slot_dropout, latent_slots: int, after=0) -> tuple[int, float, int]:
    """``(width, slot_dropout, slot_dropout_after)`` as the codec keeps them; ValueError naming the argument
    and its value."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 0:
        raise ValueError(f"sentence_latent must be an integer >= 0 (0: off), got {width!r}")
    if isinstance(slot_dropout, bool) or not isinstance(slot_dropout, (int, float)) or not 0 <= slot_dropout < 1:
        raise ValueError(f"slot_dropout must be a number in [0, 1), got {slot_dropout!r}")
    if slot_dropout and latent_slots < 2:
        raise ValueError(f"slot_dropout={slot_dropout} needs latent_slots > 1 (there are {latent_slots})")
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ValueError(f"slot_dropout_after must be an integer >= 0 (training steps), got {after!r}")
    if after and not slot_dropout:
        raise ValueError(f"slot_dropout_after={after} needs slot_dropout > 0")
    return int(width), float(slot_dropout), int(after)


def decoder_view(codec, z: torch.Tensor | None) -> torch.Tensor | None:
    """The latent as the decoder sees it in a training step, some slots hidden (``drop_slots``); None when
    nothing is hidden (not training, no slot dropout, or before ``slot_dropout_after`` steps)."""
    if not (codec.training and codec.slot_dropout and z is not None):
        return None
    if codec.slot_dropout_after:
        step = getattr(codec, "training_step", None)
        if step is None:
            raise RuntimeError(f"slot_dropout_after={codec.slot_dropout_after} counts training steps: the training "
                               "loop must call codec.set_training_step(step) before each step")
        if step <= codec.slot_dropout_after:
            return None
    return drop_slots(z, codec.latent_slots, codec.slot_dropout, codec.missing_slot)


class SentencePath(nn.Module):
    """``s = A z`` [N x width] (``summary``) and what the decoder reads of it (``forward``): one memory
    position and an offset added to every token embedding (the offset starts at zero)."""

    def __init__(self, latent_dim: int, width: int, memory_width: int, n_embd: int):
        super().__init__()
        self.summary = nn.Linear(latent_dim, width)
        self.to_memory = nn.Linear(width, memory_width)
        self.to_embedding = nn.Linear(width, n_embd)
        self.position = nn.Parameter(0.02 * torch.randn(memory_width))  # tells its key from the slots'
        nn.init.zeros_(self.to_embedding.weight)
        nn.init.zeros_(self.to_embedding.bias)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory position [N x 1 x memory_width] and the embedding offset [N x n_embd] of ``z``."""
        s = self.summary(z)
        return (self.to_memory(s) + self.position.to(s.dtype)).unsqueeze(1), self.to_embedding(s)


def drop_slots(z: torch.Tensor, slots: int, p: float, missing: torch.Tensor) -> torch.Tensor:
    """``z`` [N x D] with each of its ``slots`` slots replaced by ``missing`` [D / slots] with probability
    ``p`` (independently per sentence and slot)."""
    view = z.view(z.shape[0], slots, -1)
    drop = torch.rand(z.shape[0], slots, 1, device=z.device) < p
    return torch.where(drop, missing.to(z.dtype).expand_as(view), view).reshape_as(z)

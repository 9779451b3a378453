"""The protein codec (ReLSO style): a transformer encoder over amino-acid tokens with attention pooling to
a small latent, a non-autoregressive decoder over positions, and a fitness regressor on the latent that
is trained jointly (its MSE is added to the DiLED loss with ``fitness_weight``).

Sequences of different lengths are padded and masked. The decoder predicts, at every position, one of
the 20 amino acids or "stop" (the position after the last residue; GB1's sequences all have the same
length, so there it never occurs). ``-log p(x0 | z)`` is the per-residue cross-entropy summed over the
sequence (stop included): the sequence's negative log-likelihood. (Text divides by the length, docs/design.md
section 1; for proteins most positions of a variant are the wild type, and the per-residue mean made the
one or two mutated positions so small a part of the loss that the decoder learned the wild type and
ignored z: measured on GB1, 0.05% accuracy at mutated positions. ``rec_reduction="mean"`` keeps it.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from diled.codecs.base import Codec, register_codec

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
PAD, STOP = 0, 21          # token ids: 0 pad (encoder input only), 1..20 residues, 21 stop (decoder class)
_INDEX = {a: i + 1 for i, a in enumerate(AMINO_ACIDS)}


def check_sequence(seq: str, where: str = "") -> str:
    """The upper-cased sequence, or a ValueError naming the first invalid residue and where it is."""
    if not isinstance(seq, str) or not seq.strip():
        raise ValueError(f"{where}empty or missing protein sequence")
    seq = seq.strip().upper()
    for pos, aa in enumerate(seq):
        if aa not in _INDEX:
            raise ValueError(f"{where}invalid residue {aa!r} at position {pos + 1} of {seq[:60]!r}"
                             f"{'...' if len(seq) > 60 else ''}; valid: the 20 standard amino acids {AMINO_ACIDS}")
    return seq


class AttentionPool(nn.Module):
    """A learned query attends over the positions (masked): [N x L x d] -> [N x d]."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(h).squeeze(-1).masked_fill(~mask, float("-inf"))
        return (scores.softmax(-1).unsqueeze(-1) * h).sum(1)


@register_codec
class ProteinCodec(Codec):
    """Amino-acid sequences up to ``max_length``; ``fitness`` (optional, float) in the batch trains the head.

    Args:
        latent_dim: the latent size (paper: 30).
        max_length: longest sequence (GB1: 55).
        dim, layers, heads: the transformer encoder's width, depth and heads.
        decoder_hidden, decoder_layers: the decoder: z -> [max_length x decoder_hidden] (a linear map plus
            learned position embeddings), then residual 1-D conv blocks (kernel 5), then per-position logits.
        fitness_hidden: the fitness regressor's hidden width (an MLP on z).
        fitness_weight: weight of the fitness MSE in the loss (0: unsupervised).
        dropout: in the encoder.
        rec_reduction: ``"sum"`` (the sequence NLL, default) or ``"mean"`` (per residue).
        pooling: ``"attention"`` (ReLSO) or ``"flatten"`` (position-specific; see ``to_latent``).
    """

    name = "protein"
    input_kind = "strings"

    auxiliary_terms = ("fitness_mse",)
    def __init__(self, latent_dim: int = 30, max_length: int = 55, dim: int = 128, layers: int = 2, heads: int = 4,
                 decoder_hidden: int = 128, decoder_layers: int = 2, fitness_hidden: int = 64,
                 fitness_weight: float = 1.0, dropout: float = 0.0, rec_reduction: str = "sum",
                 pooling: str = "attention"):
        super().__init__()
        for key, value in (("latent_dim", latent_dim), ("max_length", max_length), ("dim", dim), ("layers", layers),
                           ("heads", heads), ("decoder_hidden", decoder_hidden), ("decoder_layers", decoder_layers),
                           ("fitness_hidden", fitness_hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ProteinCodec: {key} must be a positive integer, got {value!r}")
        if dim % heads:
            raise ValueError(f"ProteinCodec: dim={dim} must be divisible by heads={heads}")
        if pooling not in ("attention", "flatten"):
            raise ValueError(f"ProteinCodec: pooling must be 'attention' or 'flatten', got {pooling!r}")
        if rec_reduction not in ("sum", "mean"):
            raise ValueError(f"ProteinCodec: rec_reduction must be 'sum' or 'mean', got {rec_reduction!r}")
        if fitness_weight < 0:
            raise ValueError(f"ProteinCodec: fitness_weight must be >= 0, got {fitness_weight}")
        self.latent_dim, self.max_length = latent_dim, max_length
        self.config = {"latent_dim": latent_dim, "max_length": max_length, "dim": dim, "layers": layers,
                       "heads": heads, "decoder_hidden": decoder_hidden, "decoder_layers": decoder_layers,
                       "fitness_hidden": fitness_hidden, "fitness_weight": float(fitness_weight),
                       "dropout": float(dropout), "rec_reduction": rec_reduction, "pooling": pooling}
        self.fitness_weight = float(fitness_weight)
        # encoder
        self.embed = nn.Embedding(len(AMINO_ACIDS) + 1, dim, padding_idx=PAD)
        self.position = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        block = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.pooling = pooling
        self.pool = AttentionPool(dim)
        # attention: ReLSO's pooling to one vector; flatten: a position-specific linear map of all positions
        # (padding zeroed), which sees a one-residue change at once (for sets of aligned variants like GB1)
        self.to_latent = nn.Linear(dim if pooling == "attention" else dim * max_length, latent_dim)
        # decoder over positions
        self.from_latent = nn.Linear(latent_dim, max_length * decoder_hidden)
        self.dec_position = nn.Parameter(torch.randn(max_length, decoder_hidden) * 0.02)
        self.dec_blocks = nn.ModuleList(
            nn.Sequential(nn.GroupNorm(1, decoder_hidden), nn.GELU(),
                          nn.Conv1d(decoder_hidden, decoder_hidden, 5, padding=2)) for _ in range(decoder_layers))
        self.to_logits = nn.Linear(decoder_hidden, len(AMINO_ACIDS) + 1)  # 20 residues + stop
        # fitness regressor on z
        self.fitness_head = nn.Sequential(nn.Linear(latent_dim, fitness_hidden), nn.GELU(),
                                          nn.Linear(fitness_hidden, 1))

    def get_config(self) -> dict[str, Any]:
        return dict(self.config)

    # ----------------------------------------------------------------- batches
    def collate(self, examples) -> dict[str, torch.Tensor]:
        """Examples: sequences, or dicts with ``sequence`` and optionally ``fitness``."""
        seqs, fits = [], []
        for i, e in enumerate(examples):
            seq, fit = (e.get("sequence"), e.get("fitness")) if isinstance(e, dict) else (e, None)
            seq = check_sequence(seq, where=f"example {i}: ")
            if len(seq) > self.max_length:
                raise ValueError(f"example {i}: sequence of length {len(seq)} is longer than max_length="
                                 f"{self.max_length}")
            seqs.append(seq)
            fits.append(float("nan") if fit is None else float(fit))
        ids = torch.zeros((len(seqs), self.max_length), dtype=torch.long)
        for i, seq in enumerate(seqs):
            ids[i, :len(seq)] = torch.tensor([_INDEX[a] for a in seq])
        lengths = torch.tensor([len(s) for s in seqs])
        return {"ids": ids, "lengths": lengths, "fitness": torch.tensor(fits, dtype=torch.float32)}

    def collate_columns(self, columns) -> dict[str, torch.Tensor]:
        seqs = [str(s) for s in columns["sequence"]]
        fits = columns.get("fitness")
        fits = [None] * len(seqs) if fits is None else [None if f is None or np.isnan(f) else float(f) for f in fits]
        return self.collate([{"sequence": s, "fitness": f} for s, f in zip(seqs, fits)])

    # ----------------------------------------------------------------- encoder / decoder / head
    def encode(self, batch) -> torch.Tensor:
        ids = batch["ids"]
        mask = ids != PAD
        h = self.embed(ids) + self.position[: ids.shape[1]]
        h = self.norm(self.encoder(h, src_key_padding_mask=~mask))
        if self.pooling == "flatten":
            h = h * mask.unsqueeze(-1)
            h = nn.functional.pad(h, (0, 0, 0, self.max_length - h.shape[1]))
            return self.to_latent(h.flatten(1))
        return self.to_latent(self.pool(h, mask))

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Per-position logits [N x max_length x 21] (20 residues, then stop)."""
        h = self.from_latent(z).view(z.shape[0], self.max_length, -1) + self.dec_position
        h = h.transpose(1, 2)
        for block in self.dec_blocks:
            h = h + block(h)
        return self.to_logits(h.transpose(1, 2))

    def _targets(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Class targets [N x L] (residue r -> r - 1, the stop position -> 20) and their mask."""
        ids, lengths = batch["ids"], batch["lengths"]
        pos = torch.arange(self.max_length, device=ids.device).unsqueeze(0)
        target = torch.where(pos < lengths.unsqueeze(1), ids - 1, torch.full_like(ids, STOP - 1))
        mask = pos <= lengths.unsqueeze(1)  # residues and the one stop position (if it fits)
        return target, mask

    def reconstruction_loss(self, batch, z) -> torch.Tensor:
        target, mask = self._targets(batch)
        nll = nn.functional.cross_entropy(self.logits(z).float().transpose(1, 2), target, reduction="none")
        total = (nll * mask.float()).sum(1)
        if self.config["rec_reduction"] == "mean":
            return total / batch["lengths"].float().clamp(min=1)
        return total

    def predict_fitness(self, z: torch.Tensor) -> torch.Tensor:
        return self.fitness_head(z).squeeze(-1)

    def auxiliary_losses(self, batch, z0, z1):
        if not self.fitness_weight or "fitness" not in batch:
            return {}
        y = batch["fitness"].float()
        known = torch.isfinite(y)
        pred = self.predict_fitness(z1).float()
        sq = torch.where(known, (pred - torch.nan_to_num(y)) ** 2, torch.zeros_like(pred))
        return {"fitness_mse": (sq, self.fitness_weight)}

    @torch.no_grad()
    def residue_accuracy(self, batch, z) -> torch.Tensor:
        """Share of residues decoded exactly (argmax), per sequence: [N]."""
        target, _ = self._targets(batch)
        hit = (self.logits(z).argmax(-1) == target)
        valid = torch.arange(self.max_length, device=z.device).unsqueeze(0) < batch["lengths"].unsqueeze(1)
        return (hit & valid).sum(1).float() / batch["lengths"].float().clamp(min=1)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, **kwargs) -> list[str]:
        """Argmax residues up to the first predicted stop (never at the first position: at least one
        residue); every character is one of the 20 amino acids."""
        logits = self.logits(z)
        logits[:, 0, STOP - 1] = float("-inf")
        out = []
        for row in logits.argmax(-1).tolist():
            stop = row.index(STOP - 1) if STOP - 1 in row else len(row)
            out.append("".join(AMINO_ACIDS[c] for c in row[:stop]))
        return out

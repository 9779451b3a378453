"""The latent prior's networks, ``prior(z_t, t, cond=None) -> eps``, chosen by name.

A prior never sees the schedule or the loss (LatentDiffusion owns those); it maps a noisy latent [N x D]
and an integer step [N] to a noise prediction [N x D]. Two architectures share that interface:

- ``mlp_skip``, ``MLPSkipNet``: DiLED's prior (after DiffAE's MLPSkipNet, Preechakul et al. 2022): the
  input is concatenated into every hidden layer, each layer is Linear -> LayerNorm -> scale by the time
  embedding ``h * (1 + cond)`` -> SiLU. It treats the latent as one flat vector.
- ``slot_transformer``, ``SlotTransformer``: for a latent made of K slots (the text codec's
  ``latent_slots``): a small transformer over the K slots as a sequence, as latent-sequence diffusion
  models do (LD4LG, Lovelace et al. 2023; DiT's adaLN-Zero time conditioning, Peebles & Xie 2023).

A ``slot_transformer`` built with ``self_condition=True`` also reads its own previous estimate of the clean
latent, ``z_self`` (self-conditioning, Chen et al. 2022 "Analog Bits"; used by LD4LG): the samplers pass
the last step's estimate, training passes one from a first, gradient-free pass on half of each batch and
zeros on the other half. ``self_conditioned(prior)`` says whether a prior takes it; ``prior_eps`` calls any
prior with it where it does.

``cond`` is where a condition enters: a prior built with ``classes`` (names) adds an embedding of the
class index (-1: the learned null class, also what no ``cond`` means) to its time embedding, for
classifier-free guidance (``diled.guidance``); priors built without classes refuse a ``cond``.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from diled.conditions import ConditionEmbedding, check_classes
from diled.checks import check_keys


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer steps (Vaswani et al. 2017; DDPM). ``t`` [N] -> [N x dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


# the paper's prior: an MLP with skips, 20 layers of 2048, a 128-d time embedding (CPU presets set their own)
PAPER_PRIOR = {"hidden": 2048, "depth": 20, "time_dim": 128}


class MLPSkipNet(nn.Module):
    """eps_theta(z_t, t): ``z_t`` [N x D], ``t`` [N] int in 1..T -> eps [N x D].

    Args:
        latent_dim: D, the size of the latent vector.
        hidden: width of every hidden layer (paper: 2048).
        depth: number of hidden layers (paper: 20).
        time_dim: size of the sinusoidal time embedding and of its MLP.
        dropout: dropout after each hidden activation.
        classes: class names the prior is conditioned on (none: unconditional).
    """

    def __init__(self, latent_dim: int, hidden: int = PAPER_PRIOR["hidden"], depth: int = PAPER_PRIOR["depth"],
                 time_dim: int = PAPER_PRIOR["time_dim"],
                 dropout: float = 0.0, classes: list[str] | None = None):
        super().__init__()
        for name, value in (("latent_dim", latent_dim), ("hidden", hidden), ("depth", depth), ("time_dim", time_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"MLPSkipNet: {name} must be a positive integer, got {value!r}")
        self.latent_dim, self.hidden, self.depth, self.time_dim, self.dropout = latent_dim, hidden, depth, time_dim, dropout
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        # Layer 0 sees z_t alone; every later layer sees [h, z_t] (the skip connection).
        self.layers = nn.ModuleList(
            nn.Linear(latent_dim if i == 0 else hidden + latent_dim, hidden) for i in range(depth))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(depth))
        self.time_proj = nn.ModuleList(nn.Linear(time_dim, hidden) for _ in range(depth))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden + latent_dim, latent_dim)
        _add_classes(self, classes, time_dim)

    def get_config(self) -> dict:
        return {"latent_dim": self.latent_dim, "hidden": self.hidden, "depth": self.depth,
                "time_dim": self.time_dim, "dropout": self.dropout, **_classes_config(self)}

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        _check_input(self, z_t, cond)
        t = t.reshape(-1).expand(z_t.shape[0]) if t.numel() == 1 else t
        # the network runs in its weights' dtype (bf16 under mixed precision) whatever the schedule's is
        z_t = z_t.to(self.out.weight.dtype)
        cond_all = self.time_mlp(timestep_embedding(t, self.time_dim).to(z_t.dtype)) + _class_vector(self, cond, z_t)
        h = z_t
        for i, (layer, norm, proj) in enumerate(zip(self.layers, self.norms, self.time_proj)):
            h = layer(h if i == 0 else torch.cat([h, z_t], dim=-1))
            h = norm(h) * (1 + proj(cond_all))
            h = self.drop(nn.functional.silu(h))
        return self.out(torch.cat([h, z_t], dim=-1))


class SlotTransformer(nn.Module):
    """eps_theta(z_t, t) for a latent of ``slots`` K slots: ``z_t`` [N x D] (D = K x D/K), ``t`` [N] -> [N x D].

    Each slot is projected to ``hidden`` and given a learned position; ``depth`` pre-LayerNorm transformer
    blocks attend across the K slots, each block's LayerNorms shifted and scaled and its residual branches
    gated by the time embedding (adaLN-Zero: the gates start at zero, so every block starts as the
    identity); a last adaptive LayerNorm and a linear map give each slot's noise.

    Args:
        latent_dim: D, a multiple of ``slots``.
        slots: K, the number of slots (the codec's ``latent_slots``).
        hidden: the width of the slot tokens.
        depth: the number of transformer blocks.
        heads: attention heads (``hidden`` must be a multiple).
        time_dim: size of the sinusoidal time embedding.
        mlp_ratio: the feed-forward width over ``hidden``.
        dropout: dropout in attention and feed-forward.
        classes: class names the prior is conditioned on (none: unconditional).
        self_condition: also read ``z_self`` [N x D], an earlier estimate of the clean latent (zeros: none),
            each slot of it projected and added to the slot's token.
    """

    def __init__(self, latent_dim: int, slots: int = 8, hidden: int = 256, depth: int = 4, heads: int = 4,
                 time_dim: int = 128, mlp_ratio: int = 4, dropout: float = 0.0, classes: list[str] | None = None,
                 self_condition: bool = False):
        super().__init__()
        for name, value in (("latent_dim", latent_dim), ("slots", slots), ("hidden", hidden), ("depth", depth),
                            ("heads", heads), ("time_dim", time_dim), ("mlp_ratio", mlp_ratio)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SlotTransformer: {name} must be a positive integer, got {value!r}")
        if latent_dim % slots:
            raise ValueError(f"SlotTransformer: slots={slots} must divide latent_dim={latent_dim}")
        if hidden % heads:
            raise ValueError(f"SlotTransformer: heads={heads} must divide hidden={hidden}")
        self.latent_dim, self.slots, self.hidden, self.depth, self.heads = latent_dim, slots, hidden, depth, heads
        self.time_dim, self.mlp_ratio, self.dropout = time_dim, mlp_ratio, dropout
        self.slot_dim = latent_dim // slots
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(self.slot_dim, hidden)
        self.pos = nn.Parameter(0.02 * torch.randn(slots, hidden))
        self.blocks = nn.ModuleList(_AdaLNBlock(hidden, heads, mlp_ratio, dropout) for _ in range(depth))
        self.final_norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.final_mod = nn.Linear(hidden, 2 * hidden)
        self.out = nn.Linear(hidden, self.slot_dim)
        if not isinstance(self_condition, bool):
            raise ValueError(f"SlotTransformer: self_condition must be true or false, got {self_condition!r}")
        self.self_condition = self_condition
        self.inp_self = nn.Linear(self.slot_dim, hidden, bias=False) if self_condition else None
        _add_classes(self, classes, hidden)

    def get_config(self) -> dict:
        return {"latent_dim": self.latent_dim, "slots": self.slots, "hidden": self.hidden, "depth": self.depth,
                "heads": self.heads, "time_dim": self.time_dim, "mlp_ratio": self.mlp_ratio, "dropout": self.dropout,
                **_classes_config(self), **({"self_condition": True} if self.self_condition else {})}

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                z_self: torch.Tensor | None = None) -> torch.Tensor:
        _check_input(self, z_t, cond)
        t = t.reshape(-1).expand(z_t.shape[0]) if t.numel() == 1 else t
        n = z_t.shape[0]
        z_t = z_t.to(self.out.weight.dtype)
        c = self.time_mlp(timestep_embedding(t, self.time_dim).to(z_t.dtype)) + _class_vector(self, cond, z_t)  # [N x H]
        h = self.inp(z_t.view(n, self.slots, self.slot_dim)) + self.pos.to(z_t.dtype)  # [N x K x H]
        if z_self is not None:
            if self.inp_self is None:
                raise ValueError("this SlotTransformer was built without self_condition, but z_self was given")
            if z_self.shape != z_t.shape:
                raise ValueError(f"z_self must have z_t's shape {tuple(z_t.shape)}, got {tuple(z_self.shape)}")
            h = h + self.inp_self(z_self.to(z_t.dtype).view(n, self.slots, self.slot_dim))
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_mod(nn.functional.silu(c)).unsqueeze(1).chunk(2, dim=-1)
        h = self.final_norm(h) * (1 + scale) + shift
        return self.out(h).reshape(n, self.latent_dim)


class _AdaLNBlock(nn.Module):
    """A pre-LayerNorm transformer block whose norms and residual gates come from the time embedding
    (DiT's adaLN-Zero). ``h`` [N x K x H], ``c`` [N x H] -> [N x K x H]."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp_ratio * hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_ratio * hidden, hidden))
        self.mod = ZeroLinear(hidden, 6 * hidden)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        n, k, width = h.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.mod(nn.functional.silu(c)).unsqueeze(1).chunk(6, dim=-1)
        x = self.norm1(h) * (1 + scale1) + shift1
        q, key, v = self.qkv(x).view(n, k, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        a = nn.functional.scaled_dot_product_attention(q, key, v, dropout_p=self.dropout if self.training else 0.0)
        h = h + gate1 * self.proj(a.transpose(1, 2).reshape(n, k, width))
        return h + gate2 * self.mlp(self.norm2(h) * (1 + scale2) + shift2)


class ZeroLinear(nn.Linear):
    """A linear map that starts at zero. Initialised inside its own constructor, so that it also holds
    under DeepSpeed's ``zero.Init``, which partitions each module as soon as its constructor returns."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


def _check_input(prior: nn.Module, z_t: torch.Tensor, cond) -> None:
    if z_t.dim() != 2 or z_t.shape[1] != prior.latent_dim:
        raise ValueError(f"{type(prior).__name__} expects z_t of shape [N x {prior.latent_dim}], got {tuple(z_t.shape)}")
    if cond is not None and not prior.classes:
        raise ValueError(f"{type(prior).__name__} was built without a condition, but cond was given")


def _add_classes(prior: nn.Module, classes, dim: int) -> None:
    """Give ``prior`` its class names and, if it has any, a class embedding of ``dim`` (the width its time
    embedding is added at)."""
    prior.classes = check_classes(classes)
    prior.class_embedding = ConditionEmbedding(len(prior.classes), dim) if prior.classes else None


def _classes_config(prior: nn.Module) -> dict:
    return {"classes": prior.classes} if prior.classes else {}


def _class_vector(prior: nn.Module, cond, z_t: torch.Tensor):
    """The class embedding of ``cond`` ([N x dim]; no ``cond``: the null class), 0 for a prior without classes."""
    if prior.class_embedding is None:
        return 0
    return prior.class_embedding(cond, z_t.shape[0], z_t.device).to(z_t.dtype)


def self_conditioned(prior: nn.Module) -> bool:
    """Whether ``prior`` (or the prior a guidance wrapper holds) reads its own previous estimate, ``z_self``."""
    return bool(getattr(prior, "self_condition", False))


def prior_eps(prior: nn.Module, z_t: torch.Tensor, t: torch.Tensor, cond=None, z_self=None) -> torch.Tensor:
    """``prior(z_t, t[, cond][, z_self=...])``: the optional arguments passed only where given, and ``z_self``
    only to a self-conditioned prior (zeros when it has no estimate yet: what training shows it)."""
    args = (z_t, t) if cond is None else (z_t, t, cond)
    if not self_conditioned(prior):
        return prior(*args)
    return prior(*args, z_self=torch.zeros_like(z_t) if z_self is None else z_self)


#: the priors by the name configs and saved models use
PRIORS: dict[str, type[nn.Module]] = {"mlp_skip": MLPSkipNet, "slot_transformer": SlotTransformer}


def prior_name(prior: nn.Module) -> str:
    """The registered name of a prior's class (what ``get_config`` of a model saves)."""
    for name, cls in PRIORS.items():
        if type(prior) is cls:
            return name
    raise ValueError(f"{type(prior).__name__} is not a registered prior; registered: {', '.join(PRIORS)}")


def build_prior(config: dict) -> nn.Module:
    """A prior from ``{"name": ..., **its arguments}`` (no name: ``mlp_skip``, as models saved before
    priors had names); an unknown name or argument is an error that names it."""
    config = dict(config)
    name = config.pop("name", "mlp_skip")
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; valid names: {', '.join(PRIORS)}")
    cls = PRIORS[name]
    valid = set(inspect.signature(cls.__init__).parameters) - {"self"}
    check_keys(config, valid, "argument(s)", f"for prior {name!r}")
    return cls(**config)

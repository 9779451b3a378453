"""Guided sampling in latent space: steer the prior toward a class, or toward a value of at least y.

Two standard ways, both cheap in a latent of a few hundred numbers, both wrapping a prior into another
``eps(z_t, t)`` that the unchanged DDIM/DDPM samplers call:

- classifier-free guidance (Ho & Salimans 2022): a prior built with ``classes`` takes the class as
  ``cond`` (an embedding added to its time embedding; -1, or no ``cond``, is the learned null class, which
  training shows it with probability ``drop_prob``); sampling mixes the two predictions,
  ``eps = eps(z, t, null) + s (eps(z, t, c) - eps(z, t, null))``: s = 1 is the conditional prior itself,
  s > 1 pushes further toward the class, s = 0 is the unconditional prior (``CFGPrior``);
- classifier guidance (Dhariwal & Nichol 2021): a classifier on noisy latents ``p(c | z_t, t)``
  (``LatentClassifier``, trained on the frozen encoder's latents) shifts each step by its gradient,
  ``eps = eps(z, t) - s sqrt(1 - abar_t) grad_z log p(c | z_t, t)`` (``ClassifierGuidedPrior``; the
  gradient is taken with autograd inside samplers that otherwise run without it);
- value guidance, the same with a regressor: ``LatentRegressor`` predicts a value (protein fitness) with its
  uncertainty, and a condition ``">= y"`` shifts each step by the gradient of log P(value >= y | z_t, t)
  (``AtLeastGuidedPrior``);
- composition: a list of conditions of different labels (text: a sentiment and a source, each with its own
  guide; ``model.guides`` holds the guides of labels beyond the first) is a product of experts,
  p(z | c1, c2) ~ p(z) p(c1 | z) p(c2 | z), as in LatentOps' composed controls and Liu et al. 2022's composed
  classifier-free guidance: each condition's shift of the unconditional eps is added (``ComposedPrior``).

None has batch-coupled layers: a seeded sample does not depend on what else is in its batch.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from diled.conditions import NULL, ConditionEmbedding, at_least, check_classes, class_index
from diled.denoiser import prior_eps, self_conditioned, timestep_embedding

__all__ = ["NULL", "ConditionEmbedding", "check_classes", "class_index", "at_least", "CFGPrior", "LatentClassifier",
           "ClassifierGuidedPrior", "LatentRegressor", "AtLeastGuidedPrior", "train_classifier", "train_regressor",
           "ComposedPrior", "model_weights_sha256", "save_guide", "load_guide", "load_guides", "guidable_classes",
           "model_conditions", "guided_prior"]

class CFGPrior(nn.Module):
    """Classifier-free guidance of a prior built with classes: ``eps(z_t, t)`` toward class ``cond``
    (an index, or one per row) with scale ``scale`` (see the module docstring). One batched forward
    computes the conditional and the null predictions together."""

    def __init__(self, prior: nn.Module, cond, scale: float = 1.0):
        super().__init__()
        if not getattr(prior, "classes", None):
            raise ValueError(f"{type(prior).__name__} was built without classes: it cannot be guided classifier-free")
        if not scale >= 0:
            raise ValueError(f"guidance_scale must be >= 0, got {scale!r}")
        self.prior, self.cond, self.scale = prior, cond, float(scale)

    @property
    def self_condition(self) -> bool:
        return self_conditioned(self.prior)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, z_self: torch.Tensor | None = None) -> torch.Tensor:
        n = z_t.shape[0]
        cond = _class_per_row(self.cond, n, z_t.device)
        if self.scale == 1.0:
            return prior_eps(self.prior, z_t, t, cond, z_self)
        both = prior_eps(self.prior, torch.cat([z_t, z_t]), torch.cat([t, t]),
                         torch.cat([cond, torch.full_like(cond, NULL)]), None if z_self is None else torch.cat([z_self, z_self]))
        eps_c, eps_u = both[:n], both[n:]
        return eps_u + self.scale * (eps_c - eps_u)

    def shift(self, z_t: torch.Tensor, t: torch.Tensor, z_self: torch.Tensor | None, eps_u: torch.Tensor) -> torch.Tensor:
        """What this guidance adds to the unconditional prediction ``eps_u`` (given, not recomputed)."""
        if self.scale == 0:
            return torch.zeros_like(eps_u)
        cond = _class_per_row(self.cond, z_t.shape[0], z_t.device)
        return self.scale * (prior_eps(self.prior, z_t, t, cond, z_self) - eps_u)


def _class_per_row(cond, n: int, device) -> torch.Tensor:
    """A class index (or one per row) as a long tensor [n]."""
    return torch.as_tensor(cond, device=device).long().reshape(-1).expand(n)


class LatentClassifier(nn.Module):
    """p(class | z_t, t): an MLP on the noisy latent and the step's sinusoidal embedding (LayerNorm, no
    batch-coupled layers). Trained on the frozen encoder's latents noised as the prior sees them."""

    def __init__(self, latent_dim: int, classes: list[str], hidden: int = 256, depth: int = 3, time_dim: int = 64):
        super().__init__()
        self.classes = check_classes(classes)
        if len(self.classes) < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {self.classes}")
        self.latent_dim, self.hidden, self.depth, self.time_dim = latent_dim, hidden, depth, time_dim
        layers, d = [], latent_dim + time_dim
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.SiLU()]
            d = hidden
        self.net = nn.Sequential(*layers, nn.Linear(d, len(self.classes)))

    def get_config(self) -> dict:
        return {"latent_dim": self.latent_dim, "classes": self.classes, "hidden": self.hidden, "depth": self.depth,
                "time_dim": self.time_dim}

    def forward(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1).expand(z_t.shape[0]) if t.numel() == 1 else t
        return self.net(torch.cat([z_t, timestep_embedding(t, self.time_dim).to(z_t.dtype)], dim=-1))


class ClassifierGuidedPrior(nn.Module):
    """Classifier guidance: the prior's eps shifted by the classifier's gradient toward class ``cond``."""

    def __init__(self, prior: nn.Module, classifier: LatentClassifier, diffusion, cond, scale: float = 1.0):
        super().__init__()
        if not scale >= 0:
            raise ValueError(f"guidance_scale must be >= 0, got {scale!r}")
        self.prior, self.classifier, self.diffusion, self.cond, self.scale = prior, classifier, diffusion, cond, float(scale)

    @property
    def self_condition(self) -> bool:
        return self_conditioned(self.prior)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, z_self: torch.Tensor | None = None) -> torch.Tensor:
        eps = prior_eps(self.prior, z_t, t, z_self=z_self)
        return eps if self.scale == 0 else eps + self.shift(z_t, t, z_self, eps)

    def shift(self, z_t: torch.Tensor, t: torch.Tensor, z_self: torch.Tensor | None, eps_u: torch.Tensor) -> torch.Tensor:
        """-s sqrt(1 - abar_t) grad log p(cond | z_t, t): what this guidance adds to ``eps_u`` (no prior pass)."""
        if self.scale == 0:
            return torch.zeros_like(eps_u)
        cond = _class_per_row(self.cond, z_t.shape[0], z_t.device)
        with torch.enable_grad():
            z = z_t.detach().float().requires_grad_(True)
            logp = self.classifier(z, t).log_softmax(-1).gather(1, cond[:, None]).sum()
            grad, = torch.autograd.grad(logp, z)
        sigma = self.diffusion._at(self.diffusion.sqrt_one_minus_alphas_cumprod, t).to(eps_u.dtype)
        return -self.scale * sigma * grad.to(eps_u.dtype)


class LatentRegressor(nn.Module):
    """p(y | z_t, t) = N(mean, std^2) for a value y (protein fitness): an MLP on the noisy latent and the
    step's embedding, as ``LatentClassifier``, with two outputs (the mean and the log std, in units of the
    training values' spread, which it keeps as buffers). It guides toward ``">= y"``: the gradient of
    log P(value >= y | z_t, t) = log Phi((mean - y) / std)."""

    def __init__(self, latent_dim: int, value: str = "value", hidden: int = 256, depth: int = 3, time_dim: int = 64):
        super().__init__()
        if not isinstance(value, str) or not value:
            raise ValueError(f"value must be a non-empty name, got {value!r}")
        self.value, self.latent_dim, self.hidden, self.depth, self.time_dim = value, latent_dim, hidden, depth, time_dim
        layers, d = [], latent_dim + time_dim
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.SiLU()]
            d = hidden
        self.net = nn.Sequential(*layers, nn.Linear(d, 2))
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))

    def get_config(self) -> dict:
        return {"latent_dim": self.latent_dim, "value": self.value, "hidden": self.hidden, "depth": self.depth,
                "time_dim": self.time_dim}

    def forward(self, z_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The predicted value's mean and std [N] each, in the values' own units."""
        t = t.reshape(-1).expand(z_t.shape[0]) if t.numel() == 1 else t
        out = self.net(torch.cat([z_t, timestep_embedding(t, self.time_dim).to(z_t.dtype)], dim=-1))
        return self.y_mean + self.y_std * out[:, 0], self.y_std * out[:, 1].clamp(-7, 5).exp()

    def log_prob_at_least(self, z_t: torch.Tensor, t: torch.Tensor, target: float) -> torch.Tensor:
        """log P(value >= target | z_t, t) [N] under the predicted Gaussian."""
        mean, std = self(z_t, t)
        return torch.special.log_ndtr((mean - target) / std)


class AtLeastGuidedPrior(nn.Module):
    """Value guidance: the prior's eps shifted by the gradient of log P(value >= ``target``) of a
    ``LatentRegressor`` (classifier guidance with the event "at least y" as the class)."""

    def __init__(self, prior: nn.Module, regressor: LatentRegressor, diffusion, target: float, scale: float = 1.0):
        super().__init__()
        if not scale >= 0:
            raise ValueError(f"guidance_scale must be >= 0, got {scale!r}")
        self.prior, self.regressor, self.diffusion = prior, regressor, diffusion
        self.target, self.scale = float(target), float(scale)

    @property
    def self_condition(self) -> bool:
        return self_conditioned(self.prior)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, z_self: torch.Tensor | None = None) -> torch.Tensor:
        eps = prior_eps(self.prior, z_t, t, z_self=z_self)
        return eps if self.scale == 0 else eps + self.shift(z_t, t, z_self, eps)

    def shift(self, z_t: torch.Tensor, t: torch.Tensor, z_self: torch.Tensor | None, eps_u: torch.Tensor) -> torch.Tensor:
        """What this guidance adds to ``eps_u`` (no prior pass), as ``ClassifierGuidedPrior.shift``."""
        if self.scale == 0:
            return torch.zeros_like(eps_u)
        with torch.enable_grad():
            z = z_t.detach().float().requires_grad_(True)
            grad, = torch.autograd.grad(self.regressor.log_prob_at_least(z, t, self.target).sum(), z)
        sigma = self.diffusion._at(self.diffusion.sqrt_one_minus_alphas_cumprod, t).to(eps_u.dtype)
        return -self.scale * sigma * grad.to(eps_u.dtype)


class ComposedPrior(nn.Module):
    """Several conditions at once: ``parts`` are guided priors (one per condition) around the same ``prior``;
    each part's shift of the unconditional prediction is added, ``eps = eps_u + sum_i (eps_i - eps_u)`` (a
    product of experts, see the module docstring). One unconditional prior pass is shared: a guide's part
    adds only its gradient, a classifier-free part one conditional pass."""

    def __init__(self, prior: nn.Module, parts: list[nn.Module]):
        super().__init__()
        self.prior = prior
        self.__dict__["parts"] = list(parts)  # not submodules: each wraps ``prior``, which is registered once

    @property
    def self_condition(self) -> bool:
        return self_conditioned(self.prior)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, z_self: torch.Tensor | None = None) -> torch.Tensor:
        eps_u = prior_eps(self.prior, z_t, t, z_self=z_self)
        return eps_u + sum(part.shift(z_t, t, z_self, eps_u) if hasattr(part, "shift") else part(z_t, t, z_self) - eps_u
                           for part in self.parts)


def _noised_batches(diffusion, z0: torch.Tensor, steps: int, batch_size: int, gen: torch.Generator):
    """(indices, z_t, t) batches of the latents ``z0`` noised as the prior sees them: z1 = z0 + sqrt(beta_1)
    eps', then q(z_t | z1) at a uniform t."""
    for _ in range(steps):
        idx = torch.randint(len(z0), (batch_size,), generator=gen)
        z1 = z0[idx] + diffusion.encoder_noise_std * torch.randn(z0[idx].shape, generator=gen)
        t = torch.randint(1, diffusion.T + 1, (batch_size,), generator=gen)
        yield idx, diffusion.q_sample(z1, t, eps=torch.randn(z1.shape, generator=gen)), t


def _fit(module: nn.Module, loss_fn, diffusion, z0: torch.Tensor, steps: int, batch_size: int, lr: float,
         seed: int) -> float:
    """AdamW on ``loss_fn(indices, z_t, t)`` over ``steps`` batches of noised latents (``_noised_batches``);
    the mean loss of the last tenth of the steps."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(module.parameters(), lr=lr)
    module.train()
    losses = []
    for idx, z_t, t in _noised_batches(diffusion, z0, steps, batch_size, gen):
        loss = loss_fn(idx, z_t, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    module.eval()
    tail = losses[-max(1, steps // 10):]
    return sum(tail) / len(tail)


def train_regressor(regressor: LatentRegressor, diffusion, z0: torch.Tensor, values: torch.Tensor, *,
                    steps: int = 2000, batch_size: int = 256, lr: float = 1e-3, seed: int = 0) -> dict:
    """Fit ``regressor`` to ``values`` [N] from latents ``z0`` [N x D] noised as the prior sees them, by the
    Gaussian negative log-likelihood (values standardised by their mean and spread, kept in the regressor).
    Returns a summary (the final NLL in standard units; a constant prediction scores 1.42)."""
    values = values.float()
    regressor.y_mean.fill_(float(values.mean()))
    regressor.y_std.fill_(float(values.std().clamp(min=1e-8)))
    def nll(idx, z_t, t):
        mean, std = regressor(z_t, t)
        y, scale = values[idx], regressor.y_std
        return nn.functional.gaussian_nll_loss(mean / scale, y / scale, (std / scale) ** 2, full=True)

    final = _fit(regressor, nll, diffusion, z0, steps, batch_size, lr, seed)
    return {"steps": steps, "final_nll": final, "constant_nll": 0.5 * math.log(2 * math.pi) + 0.5,
            "value": regressor.value, "value_mean": float(values.mean()), "value_std": float(values.std())}


def train_classifier(classifier: LatentClassifier, diffusion, z0: torch.Tensor, labels: torch.Tensor, *,
                     steps: int = 2000, batch_size: int = 256, lr: float = 1e-3, seed: int = 0) -> dict:
    """Fit ``classifier`` to ``labels`` [N] from latents ``z0`` [N x D] noised as the prior sees them
    (z1 = z0 + sqrt(beta_1) eps', then q(z_t | z1) at a uniform t). Returns a summary."""
    final = _fit(classifier, lambda idx, z_t, t: nn.functional.cross_entropy(classifier(z_t, t), labels[idx].long()),
                 diffusion, z0, steps, batch_size, lr, seed)
    return {"steps": steps, "final_loss": final, "chance_loss": math.log(len(classifier.classes))}


def guidable_classes(model) -> list[str]:
    """The class names ``model`` (a ``DiLED``) can be guided toward by its first label: those of a prior built
    with them (classifier-free), else its class guide's; [] if neither (a value guide has no classes)."""
    if getattr(model.denoiser, "classes", None):
        return list(model.denoiser.classes)
    guide = model.guide
    return list(guide.classes) if guide is not None and not isinstance(guide, LatentRegressor) else []


def _guide_conditions(guide) -> list[str]:
    return [f">= y ({guide.value} at least y)"] if isinstance(guide, LatentRegressor) else list(guide.classes)


def model_conditions(model) -> list[str]:
    """What ``model`` can be guided toward: ``guidable_classes``, or ``[">= y"]`` for a value guide
    (``LatentRegressor``) on a prior without classes; then the conditions of its further guides
    (``model.guides``, other labels), which compose with the first (a list of conditions)."""
    if isinstance(model.guide, LatentRegressor) and not getattr(model.denoiser, "classes", None):
        known = _guide_conditions(model.guide)
    else:
        known = guidable_classes(model)
    for guide in getattr(model, "guides", {}).values():
        known += [c for c in _guide_conditions(guide) if c not in known]
    return known


def _guide_for(model, condition, target):
    """The guide of ``model`` that knows ``condition``: a value guide for ``">= y"`` (``target`` not None),
    else a class guide whose classes name it, the first guide before the further ones (``model.guides``);
    None where the prior's own classes know it, or no guide does."""
    guides = [g for g in (model.guide, *getattr(model, "guides", {}).values()) if g is not None]
    if target is not None:
        return next((g for g in guides if isinstance(g, LatentRegressor)), model.guide)
    prior_classes = getattr(model.denoiser, "classes", None) or []
    if not isinstance(condition, str) or condition in prior_classes:
        return None if prior_classes else model.guide  # an index counts in the first label's classes
    return next((g for g in guides if isinstance(g, LatentClassifier) and condition in g.classes),
                None if prior_classes else model.guide)


def guided_prior(model, condition=None, guidance_scale: float = 1.0, classifier=None) -> nn.Module:
    """The prior of ``model`` to sample with: the prior itself with no ``condition``; toward the class
    ``condition`` (a name or an index) at ``guidance_scale``: classifier-free if the prior was built with
    classes, else guided by the guide whose classes name it (a ``LatentClassifier``: the model's ``guide``, or
    one of its ``guides``); toward ``">= y"`` (a value of at least y) by a ``LatentRegressor``. An explicit
    ``classifier`` is used in any case. A list of conditions of different labels composes them
    (``ComposedPrior``), with one ``guidance_scale`` for all or a list of one per condition. ValueError
    naming what the model knows."""
    prior = model.denoiser
    if condition is None:
        if classifier is not None:
            raise ValueError("a classifier guides toward a condition: pass condition=<class name or index>")
        return prior
    if isinstance(condition, (list, tuple)):
        return _composed(model, list(condition), guidance_scale, classifier)
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
        raise ValueError(f"guidance_scale must be a number (a list only with a list of conditions), got {guidance_scale!r}")
    target = at_least(condition)
    if classifier is None:
        classifier = _guide_for(model, condition, target)
        if getattr(model, "guides", None) and isinstance(condition, str) and target is None and \
                condition not in model_conditions(model):  # several labels: name them all
            raise ValueError(f"unknown condition {condition!r}; this model knows {model_conditions(model)}")
    if target is not None:
        if not isinstance(classifier, LatentRegressor):
            raise ValueError(f"condition {condition!r} asks for a value of at least {target}, which needs a value "
                             f"guide (prior_stage.guide: value); this model knows {model_conditions(model)}")
        return AtLeastGuidedPrior(prior, classifier, model.diffusion, target, guidance_scale)
    if isinstance(classifier, LatentRegressor):
        raise ValueError(f"unknown condition {condition!r}; this model's guide takes a value condition "
                         f"'>= y' ({classifier.value} at least y)")
    if classifier is not None:
        return ClassifierGuidedPrior(prior, classifier, model.diffusion, class_index(classifier.classes, condition),
                                     guidance_scale)
    return CFGPrior(prior, class_index(getattr(prior, "classes", []), condition), guidance_scale)


def _composed(model, conditions: list, guidance_scale, classifier) -> nn.Module:
    """``guided_prior`` for a list of conditions: one guided prior per condition, composed (``ComposedPrior``);
    ValueError for an empty list, a nested one, a scale list of another length, an explicit ``classifier``, or
    two conditions of the same label (a guide, or the prior's classes, steers toward one of its classes)."""
    if not conditions or any(c is None or isinstance(c, (list, tuple)) for c in conditions):
        raise ValueError(f"a composed condition is a non-empty list of single conditions, got {conditions!r}")
    scales = list(guidance_scale) if isinstance(guidance_scale, (list, tuple)) else [guidance_scale] * len(conditions)
    if len(scales) != len(conditions):
        raise ValueError(f"guidance_scale: one number for all conditions or one per condition ({len(conditions)}), "
                         f"got {guidance_scale!r}")
    if len(conditions) == 1:
        return guided_prior(model, conditions[0], scales[0], classifier)
    if classifier is not None:
        raise ValueError("classifier= guides toward one condition; a composition uses the model's guides")
    parts, labels = [], {}
    for condition, scale in zip(conditions, scales):
        part = guided_prior(model, condition, scale)
        label = id(getattr(part, "classifier", None) or getattr(part, "regressor", None) or model.denoiser)
        if label in labels:
            raise ValueError(f"conditions {labels[label]!r} and {condition!r} are of the same label: compose "
                             f"conditions of different labels (this model knows {model_conditions(model)})")
        labels[label] = condition
        parts.append(part)
    return ComposedPrior(model.denoiser, parts)


GUIDE_DIR = "guide"
GUIDES_DIR = "guides"  # guides of further labels, one folder each


def model_weights_sha256(model_dir: Path) -> str:
    """SHA-256 of a saved model's weight files (``model.safetensors`` or its shards, in name order): what a
    guide saved beside the model is tied to."""
    from diled.causal_lm import file_sha256
    from diled.persistence import weight_files

    files, _ = weight_files(Path(model_dir))
    return file_sha256(sorted(files, key=lambda p: p.name))


def save_guide(classifier: LatentClassifier | LatentRegressor, model_dir: str | Path, record: dict | None = None,
               label: str | None = None) -> Path:
    """Write the guide ``classifier`` (a ``LatentClassifier``, or a ``LatentRegressor`` for value conditions)
    into ``<model_dir>/guide/`` (config, weights, the model's SHA-256), or with ``label`` (the guide of a further
    label, e.g. "source") into ``<model_dir>/guides/<label>/``; written under a temporary name and renamed into
    place. ``DiLED.from_pretrained`` loads them as ``model.guide`` and ``model.guides[label]``."""
    import json
    import os
    import shutil

    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    if label is not None and not (isinstance(label, str) and label.replace("_", "").replace("-", "").isalnum()):
        raise ValueError(f"a guide's label is a name of letters, digits, '_' and '-', got {label!r}")
    target = model_dir / GUIDE_DIR if label is None else model_dir / GUIDES_DIR / label
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    kind = "regressor" if isinstance(classifier, LatentRegressor) else "classifier"
    config = {kind: classifier.get_config(), "model_sha256": model_weights_sha256(model_dir),
              "trained": record or {}}
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.detach().contiguous() for k, v in classifier.state_dict().items()}, str(tmp / "model.safetensors"))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def load_guides(model_dir: str | Path) -> dict[str, LatentClassifier | LatentRegressor]:
    """The guides of further labels saved beside a model (``<model_dir>/guides/<label>``), by label."""
    folder = Path(model_dir) / GUIDES_DIR
    labels = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / "config.json").is_file()) \
        if folder.is_dir() else []
    return {label: load_guide(model_dir, label) for label in labels}


def load_guide(model_dir: str | Path, label: str | None = None) -> LatentClassifier | LatentRegressor | None:
    """The guide saved beside a model (with ``label``: that further label's, ``save_guide``), None if there is
    none; ValueError if it was trained for other weights than the folder's (its SHA-256 differs)."""
    import json

    from safetensors.torch import load_file

    folder = Path(model_dir) / GUIDE_DIR if label is None else Path(model_dir) / GUIDES_DIR / label
    if not (folder / "config.json").is_file():
        return None
    config = json.loads((folder / "config.json").read_text())
    digest = model_weights_sha256(model_dir)
    if config.get("model_sha256") != digest:
        raise ValueError(f"{folder} was trained for a model whose weights have SHA-256 {config.get('model_sha256')}, "
                         f"but {model_dir} has {digest}: retrain the guide (or remove {folder})")
    guide = LatentRegressor(**config["regressor"]) if "regressor" in config else LatentClassifier(**config["classifier"])
    guide.load_state_dict(load_file(str(folder / "model.safetensors")))
    return guide.eval()

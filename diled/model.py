"""DiLED: a codec (learnable encoder + decoder), a latent prior network and a diffusion process, as one
``nn.Module`` (the one that DeepSpeed wraps). The public API of docs/design.md section 3.

The loss, per example with t ~ U{1..T} (docs/design.md section 1; Liu et al., ICML 2024):

    loss = mean_N[ L_rec / (T * lambda_t) ] + w * mean_N[ L_diff (t >= 2) or L_align (t == 1) ]

with ``L_rec = -log p(x0 | z1)``, ``z1 = mu(x0) + sqrt(beta_1) * eps'``. The reconstruction term is the
ELBO's, split evenly over the T steps, so encoder and decoder get gradient at every step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from diled.codecs.base import Codec, build_codec, codec_reference
from diled.checks import check_keys
from diled.conditions import training_condition
from diled.denoiser import build_prior, prior_name
from diled.diffusion import (LatentDiffusion, check_eta, check_sampler_name, check_temperature, ddim_invert, ddim_sample,
                             slerp)
from diled.prior_space import PriorSpace
from diled.persistence import (DEFAULT_SHARD_BYTES, check_pretrained_folder, load_into,
                               parameters_on_meta, save_sharded, weight_files)

CONFIG_NAME = "config.json"
FORMAT_VERSION = 1
DEFAULT_STEPS = 50  # DDIM steps when none are given: the largest of the usual 10/20/50
DEFAULT_W = 8.0     # the prior terms' weight: the paper's for text (protein and images: 1); CPU presets set their own

Via = Literal["latent", "inversion"]
Objective = Literal["diled", "autoencoder", "prior_only", "vae"]
OBJECTIVES = ("diled", "autoencoder", "prior_only", "vae")
MODEL_CLASSES: dict[str, type] = {}  # objective -> the DiLED subclass that trains it (filled by subclassing)


class DiLED(nn.Module):
    """Diffusion with a learnable encoder and decoder.

    Args:
        codec: the data type's encoder/decoder (``diled.codecs``), ``latent_dim`` D.
        denoiser: the prior, eps_theta(z_t, t) over D-dimensional latents (``diled.denoiser.PRIORS``).
        diffusion: the ``LatentDiffusion`` process (schedule, T).
        w: weight of the prior's terms (paper: 8 for text, 1 for protein and images).
        objective: ``"diled"`` (the joint loss) or ``"autoencoder"`` (the same codec and encoding noise,
            reconstruction only, the prior untouched: the baseline "without the diffusion prior", and the
            first stage of a two-stage model) or ``"prior_only"`` (the prior's terms on the latents of a
            frozen codec: the second stage, as in latent diffusion). The fourth, ``"vae"`` (the text-VAE
            baseline), is its own class, ``diled.baselines.VAE``; ``from_config`` builds it from a saved
            config that names it.
        vae: only the VAE's (an error here, naming its class).
        prior_temperature: the scale of the starting noise z_T ~ N(0, prior_temperature^2 I) when sampling
            from the prior (1 is the model as trained; below 1 pulls samples toward the prior's modes). Saved with
            the model (``"sampling"`` in its config), so every surface samples alike; it does not touch
            inversion, interpolation or editing, which start from codes.
        sampling_eta: DDIM's default eta (0: deterministic; 1: fresh noise at every step, DDPM's variance), saved
            beside the temperature; like it, not used by inversion, interpolation and editing (deterministic).
        prior_space: where the prior works (``diled.prior_space``): the latents standardised, or themselves.
    """

    #: the objectives this class trains (``diled.baselines.VAE`` has "vae")
    objectives: tuple[str, ...] = ("diled", "autoencoder", "prior_only")
    cond_drop = 0.1  # a batch's "cond" (class indices) reaches a conditional prior, each dropped with this probability

    def __init_subclass__(cls, **kwargs):
        """A subclass with objectives of its own (the VAE) is what ``from_config`` builds for them."""
        super().__init_subclass__(**kwargs)
        for objective in cls.objectives:
            if objective not in DiLED.objectives:
                MODEL_CLASSES[objective] = cls

    def __init__(self, codec: Codec, denoiser: nn.Module, diffusion: LatentDiffusion, w: float = DEFAULT_W,
                 objective: Objective = "diled", vae=None, prior_temperature: float = 1.0,
                 sampling_eta: float = 0.0, prior_space: PriorSpace | None = None):
        super().__init__()
        d_codec, d_prior = getattr(codec, "latent_dim", None), getattr(denoiser, "latent_dim", None)
        if d_codec != d_prior:
            raise ValueError(f"latent size mismatch: codec.latent_dim={d_codec} but denoiser.latent_dim={d_prior}")
        if not isinstance(diffusion, LatentDiffusion):
            raise TypeError(f"diffusion must be a LatentDiffusion, got {type(diffusion).__name__}")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            raise ValueError(f"w must be a number >= 0, got {w!r}")
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
        if objective not in self.objectives:
            home = "diled.baselines.VAE" if objective == "vae" else "diled.DiLED"
            raise ValueError(f"objective {objective!r} is trained by {home}, not {type(self).__name__} "
                             f"(its objectives: {', '.join(self.objectives)})")
        if vae is not None and "vae" not in self.objectives:
            raise ValueError(f"vae options are for objective 'vae' (diled.baselines.VAE), not {objective!r}")
        self.codec, self.denoiser, self.diffusion, self.w = codec, denoiser, diffusion, float(w)
        self.objective = objective
        self.prior_temperature = check_temperature(prior_temperature)
        self.sampling_eta = check_eta(sampling_eta)
        if prior_space is not None and prior_space.dim not in (None, d_codec):
            raise ValueError(f"prior_space has {prior_space.dim} numbers, the latent {d_codec}")
        self.prior_space = prior_space or PriorSpace()  # PriorSpace(): the prior works on the latents themselves
        # what an objective does not train is frozen, so optimisers (and DeepSpeed) never see it
        if objective in ("autoencoder", "vae"):
            self.denoiser.requires_grad_(False)
        elif objective == "prior_only":
            self.codec.requires_grad_(False)

    # the guides saved beside the model (``diled.guidance.save_guide``), not part of its weights or submodules:
    # ``guide`` steers sampling toward a class or value the prior does not know (None if none); ``guides``, by
    # label, those of further labels (text: the source), whose conditions compose with the first's
    guide = property(lambda self: self.__dict__.get("_guide"), lambda self, g: self.__dict__.__setitem__("_guide", g))
    guides = property(lambda self: self.__dict__.setdefault("_guides", {}),
                      lambda self, g: self.__dict__.__setitem__("_guides", dict(g)))

    def __setattr__(self, name: str, value) -> None:
        if name in ("guide", "guides"):  # nn.Module would register a module value as a submodule
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, value)

    @property
    def latent_dim(self) -> int:
        return self.codec.latent_dim

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ----------------------------------------------------------------- config
    def get_config(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "w": self.w, "objective": self.objective,
                "codec": {"name": codec_reference(type(self.codec)), **self.codec.get_config()},
                "denoiser": {"name": prior_name(self.denoiser), **self.denoiser.get_config()},
                "diffusion": self.diffusion.get_config(),
                "sampling": {"prior_temperature": self.prior_temperature, "eta": self.sampling_eta},
                **({"prior_space": self.prior_space.get_config()} if self.prior_space.dim else {})}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: str | Path | None = None) -> "DiLED":
        """Build an untrained model from ``{"codec": {...}, "denoiser": {...}, "diffusion": {...}, "w": ...}``;
        ``"objective": "vae"`` builds the VAE baseline (``diled.baselines.VAE``)."""
        known = {"format_version", "w", "objective", "codec", "denoiser", "diffusion", "vae", "sampling", "prior_space"}
        check_keys(config, known, "DiLED config key(s)")
        for key in ("codec", "denoiser", "diffusion"):
            if key not in config:
                raise ValueError(f"DiLED config is missing the {key!r} section")
        objective = config.get("objective", "diled")
        if objective not in cls.objectives and objective in MODEL_CLASSES:
            cls = MODEL_CLASSES[objective]  # the class that trains it (the VAE's, registered by diled.baselines)
        extra = {"vae": config["vae"]} if "vae" in config else {}
        if "prior_space" in config:
            extra["prior_space"] = PriorSpace.from_config(config["prior_space"])  # its size is checked when built
        sampling = config.get("sampling", {})
        check_keys(sampling, ["prior_temperature", "eta"], "DiLED config key(s)", "in sampling")
        return cls(build_codec(config["codec"], directory=directory), build_prior(config["denoiser"]),
                   LatentDiffusion(**config["diffusion"]), w=config.get("w", DEFAULT_W), objective=objective,
                   prior_temperature=sampling.get("prior_temperature", 1.0), sampling_eta=sampling.get("eta", 0.0),
                   **extra)

    # ----------------------------------------------------------------- training
    def prepare_batch(self, batch) -> dict[str, torch.Tensor]:
        """A batch ready for ``forward`` / ``codec.encode``: raw examples (a list) go through
        ``codec.collate``; tensors move to the model's device, floating ones to its dtype."""
        if not isinstance(batch, dict):
            batch = self.codec.collate(batch)
        p = next(self.parameters())
        # floating inputs follow the weights' dtype (bf16 under DeepSpeed on GPU); integer ids stay as they are
        return {k: (v.to(p.device, p.dtype) if v.is_floating_point() else v.to(p.device))
                if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def forward(self, batch, t: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The DiLED loss on a batch.

        Returns ``loss`` (scalar), ``rec`` [N] (-log p(x0 | z1)), ``diff`` [N] (L_diff, or L_align where
        t == 1), ``nelbo`` [N] (the w-free negative ELBO estimate ``rec + T * lambda_t * diff``, docs/design.md
        section 1), ``t`` [N], ``z0`` [N x D] (the detached encoder means) and ``mu_abs`` (mean |mu|, to
        watch the latent scale against sqrt(beta_1), docs/design.md section 7). ``t`` fixes the steps instead
        of drawing them. A batch's ``"cond"`` (class indices, -1 none) conditions a prior built with classes,
        each dropped to the null class with probability ``cond_drop`` (``diled.conditions.training_condition``).
        """
        batch = self.prepare_batch(batch)
        z0 = self.codec.encode(batch)
        n = z0.shape[0]
        if t is None:
            t = self.diffusion.sample_t(n, device=z0.device)
        else:
            t = self.diffusion.check_t(t.to(z0.device).reshape(-1).expand(n) if t.numel() == 1 else t.to(z0.device))
        z1 = z0 + self.diffusion.encoder_noise_std * torch.randn_like(z0)
        cond = training_condition(self.denoiser, batch.get("cond"), self.cond_drop)
        space = self.prior_space  # the prior reads (and its terms compare) the latents in its coordinates
        prior_terms = lambda a, b: self.diffusion.training_losses(  # noqa: E731
            self.denoiser, space.to_prior(a), space.to_prior(b), t, cond=cond)["diff"]
        if self.objective == "prior_only":  # second stage: the codec is frozen (no gradient reaches it)
            z0, z1 = z0.detach(), z1.detach()
            with torch.no_grad():
                rec = self.codec.reconstruction_loss(batch, z1)
            diff = prior_terms(z0, z1)
            return self.outputs(self.w * diff.mean(), rec, diff, self._nelbo(rec, diff, t), t, z0)
        rec = self.codec.reconstruction_loss(batch, z1)
        if self.objective == "diled":
            diff = prior_terms(z0, z1)
            loss = (rec * self.diffusion.rec_weight(t)).mean() + self.w * diff.mean()
        else:  # autoencoder: reconstruction only; the (frozen) prior's loss is only reported
            with torch.no_grad():
                diff = prior_terms(z0.detach(), z1.detach())
            loss = rec.mean()
        return self.outputs(loss, rec, diff, self._nelbo(rec.detach(), diff.detach(), t), t, z0, (batch, z1))

    def _nelbo(self, rec: torch.Tensor, diff: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # sum_t lambda_t [L_rec / (T lambda_t) + L_diff_t] estimated at the drawn t: comparable across w
        return rec.float() + diff.float() / self.diffusion.rec_weight(t).float()

    def outputs(self, loss: torch.Tensor, rec: torch.Tensor, diff: torch.Tensor, nelbo: torch.Tensor,
                t: torch.Tensor, z0: torch.Tensor, auxiliary: tuple | None = None) -> dict[str, torch.Tensor]:
        """The one output dict of ``forward`` (and of its subclasses'): ``diff`` is the prior's term per
        example (DiLED: L_diff, or L_align where t == 1; the VAE: its KL). ``auxiliary``: ``(batch, z1)``
        to add the codec's supervised terms (e.g. the protein fitness head), each [N] with its weight."""
        out = {"rec": rec, "diff": diff, "nelbo": nelbo, "t": t, "z0": z0.detach(), "mu_abs": z0.detach().abs().mean()}
        if auxiliary is not None:
            batch, z1 = auxiliary
            for name, (term, weight) in self.codec.auxiliary_losses(batch, z0, z1).items():
                loss = loss + weight * term.mean()
                out[name] = term
        return {"loss": loss, **out}

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def encode(self, batch) -> torch.Tensor:
        """The representation: encoder means mu(x0) [N x D]."""
        return self.codec.encode(self.prepare_batch(batch))

    def _steps(self, steps: int | None, sampler: str = "ddim") -> list[int]:
        """The step sequence; ``steps=None`` means DEFAULT_STEPS (or T if smaller) for DDIM, all T for DDPM."""
        if steps is None and sampler == "ddim":
            steps = min(DEFAULT_STEPS, self.diffusion.T)
        return self.diffusion.timesteps(steps)

    @property
    def conditions(self) -> list[str]:
        """What generation and editing can be guided toward (``diled.guidance.model_conditions``): the classes
        of a prior built with them, else its guide's classes, or ``[">= y"]`` for a value guide; [] if neither."""
        from diled.guidance import model_conditions

        return model_conditions(self)

    def guided_prior(self, condition=None, guidance_scale: float = 1.0, classifier=None) -> nn.Module:
        """The prior to sample with: the prior itself with no ``condition``, else the prior guided toward it
        (``diled.guidance.guided_prior``: a class by classifier-free guidance or by a classifier, ``">= y"`` by
        a value guide; ``classifier`` defaults to the model's ``guide``). ValueError naming what it knows."""
        from diled.guidance import guided_prior

        return guided_prior(self, condition, guidance_scale, classifier)

    def check_condition(self, condition, guidance_scale=1.0) -> None:
        """ValueError (naming what the model knows) unless generation can be guided toward ``condition``."""
        self.guided_prior(condition, guidance_scale)

    @torch.no_grad()
    def sample_latents(self, n: int, steps: int | None = None, sampler: str = "ddim", eta: float | None = None,
                       generator: torch.Generator | None = None, z_T: torch.Tensor | None = None,
                       condition=None, guidance_scale: float = 1.0, classifier=None,
                       prior_temperature: float | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """z1 [n x D] from the prior: DDIM on ``steps`` strided steps (eta: the model's ``sampling_eta``
        unless given), or DDPM ancestral (eta = 1; all T steps if ``steps`` is None); toward ``condition`` as
        ``guided_prior`` says. The start is ``z_T`` as given, else ``noise(n, generator, prior_temperature)``;
        with eta > 0 the steps' fresh noise is ``noise`` as given (``diled.diffusion.step_noise``), else
        drawn from ``generator`` on the way."""
        default = self.default_eta(sampler)  # checks the sampler's name
        prior = self.guided_prior(condition, guidance_scale, classifier)
        z_T = self.noise(n, generator, prior_temperature) if z_T is None else z_T
        return self.prior_space.from_prior(ddim_sample(self.diffusion, prior, z_T, self._steps(steps, sampler),
                                           default if eta is None else eta, generator, noise))

    def default_eta(self, sampler: str = "ddim") -> float:
        """The eta a sampler runs with when none is given: the model's ``sampling_eta`` for DDIM, 1 for DDPM."""
        return self.sampling_eta if check_sampler_name(sampler) == "ddim" else 1.0

    def noise(self, n: int, generator: torch.Generator | None = None,
              prior_temperature: float | None = None) -> torch.Tensor:
        """The starting noise of sampling, z_T ~ N(0, t^2 I) [n x D], t = ``prior_temperature`` (default:
        the model's), drawn on the CPU (the same numbers on every device) and moved."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        scale = self.prior_temperature if prior_temperature is None else check_temperature(prior_temperature)
        z = torch.randn((n, self.latent_dim), generator=generator, device="cpu")
        return (z if scale == 1.0 else z * scale).to(self.device)

    @torch.no_grad()
    def generate(self, n: int, steps: int | None = None, sampler: str = "ddim", seed: int | None = None,
                 generator: torch.Generator | None = None, condition=None, guidance_scale: float = 1.0,
                 classifier=None, prior_temperature: float | None = None, eta: float | None = None,
                 **decode_kwargs) -> list:
        """``n`` new items: sample z1 with the prior, decode it. The same generator (or ``seed``) also
        drives sampled decoding (``strategy="sample"``), so a seeded call is reproducible end to end.
        ``condition``, ``guidance_scale``, ``classifier``: guided generation (``guided_prior``);
        ``prior_temperature``, ``eta``: z_T's scale and DDIM's eta (default: the model's); a ``temperature`` in
        ``decode_kwargs`` is the decoder's (sampled decoding)."""
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        z1 = self.sample_latents(n, steps=steps, sampler=sampler, generator=generator, condition=condition,
                                 guidance_scale=guidance_scale, classifier=classifier,
                                 prior_temperature=prior_temperature, eta=eta)
        if generator is not None:
            decode_kwargs.setdefault("generator", generator)
        return self.codec.decode(z1, **decode_kwargs)

    @torch.no_grad()
    def edit_latents(self, batch, condition, strength: float = 0.5, guidance_scale: float = 1.0,
                     steps: int | None = None, classifier=None) -> torch.Tensor:
        """Guided editing (LatentOps' use, "make this review positive"): the inputs' encoder means are
        DDIM-inverted with the unconditional prior up to step ``strength`` x T, then sampled back down toward
        ``condition`` (``guided_prior``). ``strength`` 0 keeps the inputs' latents; 1 inverts all the way,
        keeping of each input only what its code z_T holds."""
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
            raise ValueError(f"strength must be a number in [0, 1], got {strength!r}")
        prior = self.guided_prior(condition, guidance_scale, classifier)
        z0 = self.encode(batch)
        top = round(strength * self.diffusion.T)
        ts = [t for t in self._steps(steps) if t <= top]
        if not ts:
            return z0
        return self.prior_space.from_prior(ddim_sample(self.diffusion, prior, ddim_invert(self.diffusion, self.denoiser,
                                                                              self.prior_space.to_prior(z0), ts), ts))

    @torch.no_grad()
    def edit(self, inputs, condition, strength: float = 0.5, guidance_scale: float = 1.0, steps: int | None = None,
             classifier=None, **decode_kwargs) -> list:
        """The inputs edited toward ``condition`` (``edit_latents``), decoded."""
        z = self.edit_latents(inputs, condition, strength=strength, guidance_scale=guidance_scale, steps=steps,
                              classifier=classifier)
        return self.codec.decode(z, **decode_kwargs)

    @torch.no_grad()
    def invert(self, batch, steps: int | None = None) -> torch.Tensor:
        """Deterministic DDIM codes z_T [N x D] of the inputs' encoder means."""
        return ddim_invert(self.diffusion, self.denoiser, self.prior_space.to_prior(self.encode(batch)), self._steps(steps))

    @torch.no_grad()
    def reconstruct_latents(self, batch, via: Via = "latent", steps: int | None = None) -> torch.Tensor:
        """The z1 [N x D] that ``reconstruct`` decodes: the encoder means (``via="latent"``), or the means
        DDIM-inverted to z_T and sampled back with the prior (``via="inversion"``)."""
        if via == "latent":
            return self.encode(batch)
        if via == "inversion":
            return self._through_prior(self.encode(batch), steps)
        raise ValueError(f"unknown via {via!r}; valid values: latent, inversion")

    @torch.no_grad()
    def reconstruct(self, batch, via: Via = "latent", steps: int | None = None, **decode_kwargs) -> list:
        """decode(encode(x)); ``via="inversion"`` goes through the prior: mu -> DDIM-invert -> z_T ->
        DDIM-sample -> z1 -> decode."""
        return self.codec.decode(self.reconstruct_latents(batch, via=via, steps=steps), **decode_kwargs)

    @torch.no_grad()
    def interpolate_latents(self, a, b, num: int = 5, steps: int | None = None, via: Via = "inversion") -> torch.Tensor:
        """The ``num`` latents z1 [num x D] that ``interpolate`` decodes."""
        if isinstance(num, bool) or not isinstance(num, int) or num < 2:
            raise ValueError(f"num must be an integer >= 2, got {num!r}")
        # a raw example is collated on its own; a collated batch contributes its first row
        za, zb = (self.encode(x)[:1] if isinstance(x, dict) else self.encode([x]) for x in (a, b))
        alphas = torch.linspace(0, 1, num).tolist()
        if via == "latent":
            return torch.cat([(1 - s) * za + s * zb for s in alphas])
        if via == "inversion":
            return self._slerp_through_prior(za, zb, alphas, steps)
        raise ValueError(f"unknown via {via!r}; valid values: latent, inversion")

    def _through_prior(self, z0: torch.Tensor, steps: int | None) -> torch.Tensor:
        """Encoder means [N x D] DDIM-inverted to z_T and sampled back to z1 with the prior."""
        ts = self._steps(steps)
        codes = ddim_invert(self.diffusion, self.denoiser, self.prior_space.to_prior(z0), ts)
        return self.prior_space.from_prior(ddim_sample(self.diffusion, self.denoiser, codes, ts))

    def _slerp_through_prior(self, za: torch.Tensor, zb: torch.Tensor, alphas: list[float],
                             steps: int | None) -> torch.Tensor:
        """Slerp between the DDIM codes of two means [1 x D], each point sampled back: [len(alphas) x D]."""
        ts = self._steps(steps)
        codes = ddim_invert(self.diffusion, self.denoiser, self.prior_space.to_prior(torch.cat([za, zb])), ts)
        z_T = torch.cat([slerp(codes[:1], codes[1:], s) for s in alphas])
        return self.prior_space.from_prior(ddim_sample(self.diffusion, self.denoiser, z_T, ts))

    @torch.no_grad()
    def interpolate(self, a, b, num: int = 5, steps: int | None = None, via: Via = "inversion",
                    **decode_kwargs) -> list:
        """``num`` decoded points from input ``a`` to input ``b`` (both ends included). ``via="inversion"``: slerp
        between the DDIM-inverted codes z_T, each sampled back (DiLED's text interpolation); ``via="latent"``:
        linear interpolation between the encoder means."""
        return self.codec.decode(self.interpolate_latents(a, b, num=num, steps=steps, via=via), **decode_kwargs)

    # ----------------------------------------------------------------- persistence
    def save_pretrained(self, directory: str | Path, max_shard_bytes: int = DEFAULT_SHARD_BYTES,
                        gather=None, write: bool = True, dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json`` and the weights (``model.safetensors``, or shards of at most
        ``max_shard_bytes`` with an index, written one at a time), plus any codec extras, to ``directory``.

        For a model whose parameters are partitioned across processes (ZeRO-3), every process calls this
        with ``gather`` (a context manager factory that makes a list of parameters whole, one shard at a
        time) and only the one with ``write=True`` writes. ``dtype`` casts floating weights (16-bit export)."""
        directory = Path(directory)
        skip = {f"codec.{key}" for key in self.codec.base_weight_keys()}  # held by a pretrained base, unchanged
        save_sharded(self, directory, max_shard_bytes=max_shard_bytes, gather=gather, write=write, dtype=dtype,
                     skip=skip)
        if write:
            (directory / CONFIG_NAME).write_text(json.dumps(self.get_config(), indent=2) + "\n")
            self.codec.save_extra(directory)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None) -> "DiLED":
        """Load a ``save_pretrained`` folder (safetensors + JSON; no pickle). The parameters are built on the
        meta device and each weight file's tensors are put in their place, one file at a time, so the peak
        is about the model plus one shard. ``dtype`` casts floating weights (default fp32, whatever dtype they were saved in);
        ``device`` is where the weights are read to (a GPU: straight there, not through host memory)."""
        if not Path(directory).is_dir():
            raise FileNotFoundError(f"DiLED.from_pretrained: no such directory: {directory}")
        directory = check_pretrained_folder(directory)
        config = json.loads((directory / CONFIG_NAME).read_text())
        version = config.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"{directory / CONFIG_NAME}: format_version {version} is not supported "
                             f"(this library reads version {FORMAT_VERSION})")
        with parameters_on_meta():
            model = cls.from_config(config, directory=directory)
        # one dtype throughout: a Hugging Face part may be built in the dtype its saved config names (a
        # bf16 training run's export says bfloat16), the rest of the model in fp32
        dtype = dtype or torch.float32
        model.to(dtype)  # meta tensors: nothing is allocated
        files, aliases = weight_files(directory)
        load_into(model, files, aliases, assign=True, dtype=dtype, device=str(device), base=model._base_weights())
        from diled.guidance import load_guide, load_guides

        model.guide, model.guides = load_guide(directory), load_guides(directory)
        for guide in (model.guide, *model.guides.values()):
            guide is not None and guide.to(device)
        return model.to(device).eval()  # the weights are there already; this moves the buffers

    def _base_weights(self) -> tuple[list[Path], str] | None:
        """The codec's pretrained base, where a folder saved without its frozen weights reads them from."""
        base = self.codec.base_weights()
        return None if base is None else (base[0], f"codec.{base[1]}")

    def load_weights(self, directory: str | Path, gather=None) -> "DiLED":
        """Copy the weights of a ``save_pretrained`` folder into this model (same architecture), one
        file at a time; ``gather`` as in ``save_pretrained`` for a partitioned model."""
        files, aliases = weight_files(Path(directory))
        load_into(self, files, aliases, gather=gather, base=self._base_weights())
        return self

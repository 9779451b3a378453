"""Ray Serve: one HTTP service for a trained DiLED model (any data type), loaded once per replica from a
``save_pretrained`` folder (no DeepSpeed).

    POST /encode       {"inputs": [...]}                          -> {"latents": [[...]], "latent_dim": D}
    POST /reconstruct  {"inputs": [...]} or {"latents": [[...]]}  -> {"outputs": [...]}
    POST /generate     {"n": 4, "steps": 50, "seed": 0, ...}      -> {"outputs": [...], "seed": 0}
    POST /interpolate  {"a": ..., "b": ..., "num": 5}             -> {"alphas": [...], "outputs": [...]}
    POST /edit         {"inputs": [...], "condition": "positive", "strength": 0.5}  -> {"outputs": [...]}
                       ("judged": true: per input the closest edit the model's saved judge accepts)
    GET  /healthz                                                 -> model, codec, latent size, T
    GET  /docs, /openapi.json                                     (FastAPI's OpenAPI page)

Inputs are strings for text models and lists of numbers for vector models. Requests are typed (pydantic,
unknown fields refused; ``schema.py``) and bounded (``MAX_ITEMS`` inputs, ``MAX_TEXT_CHARS``
characters, ``MAX_N`` samples, DDIM ``steps`` within 1..T); a bad request gets a 4xx that names the problem.

Concurrent requests are batched (``Batcher``: the next batch is what queued while the last one ran, so
batches grow with the load): encoder passes of different requests run as one forward; greedy
/reconstruct requests are encoded and decoded together; DDIM /generate requests with greedy decoding
are sampled and decoded together (each with its own seeded z_T, so a seed gives the same samples
whatever else is in the batch). The batch size and wait, and the model folder itself, come
from the deployment's ``user_config`` (which ``build_app`` derives from the application's checked
``args``), and a new ``user_config`` changes them without restarting a replica (``reconfigure``).

The HTTP layer (the API key, refusals before routing, error bodies) is ``http.py``; building and
deploying the application, ``deploy.py``.

Access: with an API key (``DILED_API_KEY`` or a file named by ``DILED_API_KEY_FILE``, or its SHA-256
given to ``build_app``), every POST needs ``Authorization: Bearer <key>``. Without a key the service is
for this machine only: ``jobs/serve.py`` binds it to 127.0.0.1 and refuses any other address unless told
``--insecure-no-auth``.
"""


import asyncio
import json
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Any

import torch
from ray import serve

from diled.checks import check_keys
from diled.diffusion import step_noise
from diled.editing import check_judge, judge_classes
from diled_platform.serving.batching import Batcher, check_batching
from diled_platform.serving.http import (BadRequest, api_key_digest, api_key_from_env, app, key_digest,
                                         set_api_key_digest)
from diled_platform.serving.schema import (DecodeOptions, EditRequest, EncodeRequest, EncodeResponse, GenerateRequest,
                                           GenerateResponse, InterpolateRequest, InterpolateResponse, OutputsResponse,
                                           ReconstructRequest)

log = logging.getLogger("diled.serve")

KEY_ENV, KEY_FILE_ENV = "DILED_API_KEY", "DILED_API_KEY_FILE"
PUBLIC_PATHS = {"/healthz", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
USER_CONFIG_KEYS = {"model_dir", "max_batch_size", "batch_wait_timeout_s", "api_key_sha256"}


def check_user_config(config: dict) -> None:
    """ValueError naming the key or value, unless ``config`` is a valid ``user_config`` of the service
    (``USER_CONFIG_KEYS``; a ``model_dir`` that is a ``save_pretrained`` folder: FileNotFoundError)."""
    from diled.persistence import check_pretrained_folder

    if not isinstance(config, dict):
        raise ValueError(f"user_config must be a mapping of {sorted(USER_CONFIG_KEYS)}, got {config!r}")
    check_keys(config, USER_CONFIG_KEYS, "user_config key(s)")
    check_batching(config.get("max_batch_size"), config.get("batch_wait_timeout_s"))
    if config.get("model_dir") is not None:
        check_pretrained_folder(config["model_dir"])
    digest = config.get("api_key_sha256")
    if digest is not None and not (isinstance(digest, str) and len(digest) == 64
                                   and all(c in "0123456789abcdef" for c in digest)):
        raise ValueError("user_config api_key_sha256 must be the key's SHA-256 as 64 lowercase hex digits "
                         "(diled_platform.serving.http.key_digest), not the key")


def _provenance(model_dir) -> dict | None:
    """Where a promoted model came from (a sweep writes ``provenance.json`` into ``best_model/``): the
    sweep, trial, its configuration and objective values, for ``/healthz``."""
    path = Path(model_dir) / "provenance.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return {k: data.get(k) for k in ("sweep", "trial_id", "params", "metric", "value", "chosen_by")}


def _groups(keys: list) -> dict[Any, list[int]]:
    """The indices of the batched requests that share each key (their options): one pass per key."""
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


def _options_key(kwargs: dict) -> tuple:
    return tuple(sorted(kwargs.items()))


def _split(rows: list, sizes: list[int]) -> list[list]:
    out, i = [], 0
    for k in sizes:
        out.append(rows[i:i + k])
        i += k
    return out


@serve.deployment(
    ray_actor_options={"num_cpus": 1},
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4,
                        "upscale_delay_s": 5, "downscale_delay_s": 30},
    health_check_period_s=10, health_check_timeout_s=30, max_ongoing_requests=32,
    # a new version (a changed setting) starts its replicas before the old ones stop: no gap in service
    max_surge_percent=100)
@serve.ingress(app)
class DiLEDService:
    """One replica: the model, a lock so that one computation uses the CPUs at a time, batched paths."""

    def __init__(self, model_dir: str | None = None, api_key_sha256: str | None = None,
                 torch_threads: int | None = None):
        # model_dir None: the model comes with user_config (reconfigure, which Serve calls before the
        # replica takes traffic), so a new model folder in a deploy swaps in place
        if torch_threads:
            torch.set_num_threads(torch_threads)
        if api_key_sha256 is None:
            key = api_key_from_env()
            api_key_sha256 = key_digest(key) if key else None
        self._base_key_digest = api_key_sha256  # what a user_config without a digest goes back to
        set_api_key_digest(api_key_sha256)
        self._lock = threading.Lock()
        self.model, self.model_dir, self.judge = None, None, None
        # how many batched calls served how many requests (in /healthz: shows batching at work)
        self.stats = {f"{path}_{what}": 0 for path in ("encode", "decode", "generate", "reconstruct")
                      for what in ("batches", "requests")}
        self._batchers = {name: Batcher(getattr(self, f"_{name}_batch"))
                          for name in ("encode", "decode", "generate", "reconstruct")}
        if model_dir is not None:
            self._load(model_dir)

    # ------------------------------------------------------------------ lifecycle
    def _load(self, model_dir: str) -> None:
        from diled import DiLED
        from diled.editing import load_judge

        model = DiLED.from_pretrained(model_dir).eval()
        provenance, judge = _provenance(model_dir), load_judge(model_dir)
        with self._lock:
            self.model, self.model_dir, self.provenance, self.judge = model, str(model_dir), provenance, judge
        log.info(f"serving {model_dir} ({model.codec.name}, latent {model.latent_dim}, T {model.diffusion.T})")

    def reconfigure(self, config: dict) -> None:
        """``user_config``: ``model_dir`` (load a new checkpoint in place), ``max_batch_size`` and
        ``batch_wait_timeout_s`` (both batched paths), ``api_key_sha256`` (rotate the key)."""
        check_user_config(config)  # a bad value is refused before anything changes
        size, wait = config.get("max_batch_size"), config.get("batch_wait_timeout_s")
        set_api_key_digest(config.get("api_key_sha256") or self._base_key_digest)
        if not api_key_digest():
            log.warning("DiLED service without an API key: keep it on 127.0.0.1")
        if config.get("model_dir") and str(config["model_dir"]) != self.model_dir:
            self._load(config["model_dir"])
        self.batching = {**getattr(self, "batching", {}),
                         **{k: config[k] for k in ("max_batch_size", "batch_wait_timeout_s") if k in config}}
        for batcher in self._batchers.values():
            batcher.configure(size, wait)

    def check_health(self) -> None:
        if self.model is None:
            raise RuntimeError("no model loaded")
        z = torch.zeros(1, self.model.latent_dim)
        with self._lock, torch.no_grad():
            eps = self.model.denoiser(z, torch.ones(1, dtype=torch.long))
        if not torch.isfinite(eps).all():
            raise RuntimeError("the prior returns non-finite values")

    async def _run(self, fn, *args, **kwargs):
        """Run model code in a thread (the event loop keeps accepting requests to batch), one at a time."""
        def locked():
            with self._lock, torch.no_grad():
                return fn(*args, **kwargs)
        return await asyncio.to_thread(locked)

    # ------------------------------------------------------------------ checks shared by the endpoints
    def _check_inputs(self, items: list) -> list:
        strings = self.model.codec.input_kind == "strings"
        kind = "strings" if strings else f"lists of {getattr(self.model.codec, 'data_dim', '?')} numbers"
        if strings != all(isinstance(x, str) for x in items) or (not strings and not all(isinstance(x, list) for x in items)):
            raise BadRequest(f"this is a {self.model.codec.name} model: inputs must be {kind}")
        if strings:
            empty = [i for i, x in enumerate(items) if not x.strip()]
            if empty:
                raise BadRequest(f"inputs {empty[:5]} are empty or blank")
        else:
            dim = self.model.codec.data_dim
            wrong = [i for i, x in enumerate(items) if len(x) != dim]
            if wrong:
                raise BadRequest(f"inputs {wrong[:5]} do not have {dim} numbers")
        try:  # the codec's own checks (e.g. invalid residues), here, before the input joins a shared batch
            self.model.codec.check_inputs(items)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        return items

    def _check_latents(self, latents: list[list[float]]) -> torch.Tensor:
        d = self.model.latent_dim
        wrong = [i for i, z in enumerate(latents) if len(z) != d]
        if wrong:
            raise BadRequest(f"latents {wrong[:5]} do not have {d} numbers (this model's latent size)")
        z = torch.tensor(latents, dtype=torch.float32)
        if not torch.isfinite(z).all():
            raise BadRequest("latents must be finite numbers")
        return z

    def _check_steps(self, steps: int | None) -> None:
        if steps is not None and steps > self.model.diffusion.T:
            raise BadRequest(f"steps={steps} is more than this model's T={self.model.diffusion.T}")

    def _decode_kwargs(self, req: DecodeOptions) -> dict:
        opts = {k: getattr(req, k) for k in DecodeOptions.model_fields}
        defaults, takes = DecodeOptions().model_dump(), self.model.codec.decode_options
        unsupported = sorted(k for k, v in opts.items() if k not in takes and v != defaults[k])
        if unsupported:
            raise BadRequest(f"this {self.model.codec.name} model's decoder takes no {', '.join(unsupported)} "
                             f"(its decoding options: {', '.join(takes) or 'none'})")
        return {k: v for k, v in opts.items() if k in takes and v is not None}

    @staticmethod
    def _generator(seed: int | None) -> tuple[torch.Generator, int]:
        seed = secrets.randbits(63) if seed is None else seed
        return torch.Generator().manual_seed(seed), seed

    # ------------------------------------------------------------------ batched paths
    async def _encode_batch(self, requests: list[list]) -> list[torch.Tensor]:
        """The encoder means of several requests' inputs in one forward pass."""
        self.stats["encode_batches"] += 1
        self.stats["encode_requests"] += len(requests)
        sizes = [len(r) for r in requests]
        flat = [x for r in requests for x in r]
        z = await self._run(self.model.encode, flat)
        return list(torch.split(z, sizes))

    async def _decode_batch(self, requests: list[tuple[torch.Tensor, dict]]) -> list[list]:
        """Decode several requests' latents; those with the same deterministic options share one batch."""
        self.stats["decode_batches"] += 1
        self.stats["decode_requests"] += len(requests)
        results: list[list | None] = [None] * len(requests)
        for key, idx in _groups([_options_key(kw) for _, kw in requests]).items():
            z = torch.cat([requests[i][0] for i in idx])
            rows = await self._run(self.model.codec.decode, z, **dict(key))
            for i, part in zip(idx, _split(rows, [requests[i][0].shape[0] for i in idx])):
                results[i] = part
        return results

    async def _generate_batch(self, requests: list[tuple]) -> list[tuple]:
        """DDIM sampling and greedy decoding of several /generate requests in one pass per (steps, eta, decoding
        options). Every request brings its own z_T, and with eta > 0 its own noise for every step, drawn from
        its own seeded generator before it joins (``diled.diffusion.step_noise``): a request's samples do not
        depend on the requests it shares a batch with."""
        self.stats["generate_batches"] += 1
        self.stats["generate_requests"] += len(requests)
        results: list[tuple | None] = [None] * len(requests)

        def sample_and_decode(z_T: torch.Tensor, steps: int | None, eta: float, noise, kw: dict) -> tuple:
            z = self.model.sample_latents(z_T.shape[0], steps=steps, sampler="ddim", eta=eta,
                                          z_T=z_T.to(self.model.device), noise=noise)
            return z, self.model.codec.decode(z, **kw)

        for (steps, eta, key), idx in _groups([(steps, eta, _options_key(kw))
                                               for _, steps, eta, _, kw in requests]).items():
            noise = torch.cat([requests[i][3] for i in idx], dim=1) if eta > 0 else None
            z, rows = await self._run(sample_and_decode, torch.cat([requests[i][0] for i in idx]), steps, eta,
                                      noise, dict(key))
            sizes = [requests[i][0].shape[0] for i in idx]
            for i, zs, part in zip(idx, torch.split(z, sizes), _split(rows, sizes)):
                results[i] = (zs, part)
        return results

    async def _reconstruct_batch(self, requests: list[tuple[list, dict]]) -> list[list]:
        """Encode and greedily decode several /reconstruct requests' inputs, one pass per decoding option
        set (encoder means in, decodes out: nothing random)."""
        self.stats["reconstruct_batches"] += 1
        self.stats["reconstruct_requests"] += len(requests)
        results: list[list | None] = [None] * len(requests)

        def encode_and_decode(items: list, kw: dict) -> list:
            return self.model.codec.decode(self.model.encode(items), **kw)

        for key, idx in _groups([_options_key(kw) for _, kw in requests]).items():
            rows = await self._run(encode_and_decode, [x for i in idx for x in requests[i][0]], dict(key))
            for i, part in zip(idx, _split(rows, [len(requests[i][0]) for i in idx])):
                results[i] = part
        return results

    async def _encode_batched(self, items: list) -> torch.Tensor:
        return await self._batchers["encode"].submit(items)

    async def _decode_batched(self, request: tuple[torch.Tensor, dict]) -> list:
        return await self._batchers["decode"].submit(request)

    async def _generate_batched(self, request: tuple) -> tuple:
        return await self._batchers["generate"].submit(request)

    async def _reconstruct_batched(self, request: tuple[list, dict]) -> list:
        return await self._batchers["reconstruct"].submit(request)

    async def _decode(self, z: torch.Tensor, kwargs: dict, generator: torch.Generator) -> list:
        if kwargs.get("strategy") == "sample":
            # sampled decoding consumes the request's own generator: not batched with others
            return await self._run(self.model.codec.decode, z, generator=generator, **kwargs)
        return await self._decode_batched((z, kwargs))

    # ------------------------------------------------------------------ endpoints
    @app.get("/healthz")
    def healthz(self) -> dict:
        m = self.model
        return {"status": "ok", "model_dir": self.model_dir, "codec": m.codec.name, "input_kind": m.codec.input_kind,
                "decode_options": [k for k in DecodeOptions.model_fields if k in m.codec.decode_options],
                "latent_dim": m.latent_dim,
                "T": m.diffusion.T, "schedule": m.diffusion.schedule, "pid": os.getpid(),
                "conditions": self._conditions(), "judge": judge_classes(self.judge) or None,
                "prior_temperature": m.prior_temperature,
                "eta": m.sampling_eta, "decoding": getattr(m.codec, "decoding", {}) or None,
                "torch_threads": torch.get_num_threads(), "batching": {**getattr(self, "batching", {}), **self.stats},
                **({"provenance": self.provenance} if self.provenance else {})}

    @app.post("/encode", response_model=EncodeResponse)
    async def encode(self, req: EncodeRequest) -> EncodeResponse:
        z = await self._encode_batched(self._check_inputs(req.inputs))
        return EncodeResponse(latents=z.tolist(), latent_dim=self.model.latent_dim)

    @app.post("/reconstruct", response_model=OutputsResponse)
    async def reconstruct(self, req: ReconstructRequest) -> OutputsResponse:
        if (req.inputs is None) == (req.latents is None):
            raise BadRequest("give exactly one of 'inputs' (to encode and decode) or 'latents' (to decode)")
        self._check_steps(req.steps)
        kwargs = self._decode_kwargs(req)
        generator, _ = self._generator(req.seed)
        if req.latents is not None:
            z = self._check_latents(req.latents)
        elif req.via == "latent" and kwargs.get("strategy") != "sample":  # deterministic: batched with others
            return OutputsResponse(outputs=await self._reconstruct_batched((self._check_inputs(req.inputs), kwargs)))
        elif req.via == "latent":
            z = await self._encode_batched(self._check_inputs(req.inputs))
        else:
            z = await self._run(self.model.reconstruct_latents, self._check_inputs(req.inputs), via="inversion",
                                steps=req.steps)
        return OutputsResponse(outputs=await self._decode(z, kwargs, generator))

    def _conditions(self) -> list[str]:
        """What generation and editing can be guided toward (``DiLED.conditions``)."""
        return self.model.conditions

    def _check_condition(self, condition, guidance_scale) -> None:
        try:
            self.model.check_condition(condition, guidance_scale)
        except ValueError as e:
            raise BadRequest(f"condition: {e}") from None

    def _check_judge(self, condition, kwargs: dict):
        # (no attribute named "classes" read here: Ray would try to pickle torch.classes with the app)
        try:
            check_judge(self.judge, self.model_dir, condition)
        except ValueError as e:
            raise BadRequest(f"judged: {e}") from None
        if kwargs.get("strategy") == "sample":
            raise BadRequest("strategy: judged editing decodes each candidate deterministically (greedy or beam)")
        return self.judge

    @app.post("/generate", response_model=GenerateResponse)
    async def generate(self, req: GenerateRequest) -> GenerateResponse:
        self._check_steps(req.steps)
        kwargs = self._decode_kwargs(req)
        generator, seed = self._generator(req.seed)
        if req.condition is not None:  # guided: its own pass (the guide's gradient per step), not batched
            self._check_condition(req.condition, req.guidance_scale)
            z = await self._run(self.model.sample_latents, req.n, steps=req.steps, sampler=req.sampler,
                                generator=generator, condition=req.condition, guidance_scale=req.guidance_scale,
                                prior_temperature=req.prior_temperature, eta=req.eta)
            outputs = await self._decode(z, kwargs, generator)
        elif req.sampler == "ddim" and kwargs.get("strategy") != "sample":
            # the same z_T and step noise as the unbatched path draws (sample_latents' draws from the generator)
            z_T = self.model.noise(req.n, generator, req.prior_temperature)
            eta = self.model.default_eta() if req.eta is None else req.eta
            noise = step_noise(req.n, self.model.latent_dim, self.model._steps(req.steps), generator) if eta > 0 else None
            z, outputs = await self._generate_batched((z_T, req.steps, eta, noise, kwargs))
        else:
            z = await self._run(self.model.sample_latents, req.n, steps=req.steps, sampler=req.sampler,
                                generator=generator, prior_temperature=req.prior_temperature, eta=req.eta)
            outputs = await self._decode(z, kwargs, generator)
        return GenerateResponse(outputs=outputs, seed=seed, latents=z.tolist() if req.return_latents else None)

    @app.post("/edit", response_model=OutputsResponse)
    async def edit(self, req: EditRequest) -> OutputsResponse:
        """The inputs edited toward ``condition``: DDIM-inverted to ``strength`` x T, sampled back guided."""
        self._check_steps(req.steps)
        self._check_condition(req.condition, req.guidance_scale)
        kwargs = self._decode_kwargs(req)
        if req.judged:  # per input the closest of a grid of edits that the model's judge accepts
            from diled.editing import edit_judged

            judge = self._check_judge(req.condition, kwargs)
            chosen = await self._run(edit_judged, self.model, self._check_inputs(req.inputs), req.condition,
                                     judge.probability, accept=req.accept, min_similarity=req.min_similarity,
                                     steps=req.steps, **kwargs)
            return OutputsResponse(outputs=chosen.outputs)
        generator, _ = self._generator(req.seed)
        z = await self._run(self.model.edit_latents, self._check_inputs(req.inputs), req.condition,
                            strength=req.strength, guidance_scale=req.guidance_scale, steps=req.steps)
        return OutputsResponse(outputs=await self._decode(z, kwargs, generator))

    @app.post("/interpolate", response_model=InterpolateResponse)
    async def interpolate(self, req: InterpolateRequest) -> InterpolateResponse:
        self._check_steps(req.steps)
        a, b = self._check_inputs([req.a, req.b])
        kwargs = self._decode_kwargs(req)
        generator, _ = self._generator(req.seed)
        z = await self._run(self.model.interpolate_latents, a, b, num=req.num, steps=req.steps, via=req.via)
        outputs = await self._decode(z, kwargs, generator)
        return InterpolateResponse(alphas=torch.linspace(0, 1, req.num).tolist(), outputs=outputs)


# ----------------------------------------------------------------------------- building the application

"""Ray Serve: one HTTP service for a trained DiLED model (any data type), loaded once per replica from a
``save_pretrained`` folder (no DeepSpeed).

    POST /encode       {"inputs": [...]}                          -> {"latents": [[...]], "latent_dim": D}
    POST /reconstruct  {"inputs": [...]} or {"latents": [[...]]}  -> {"outputs": [...]}
    POST /generate     {"n": 4, "steps": 50, "seed": 0, ...}      -> {"outputs": [...], "seed": 0}
    POST /interpolate  {"a": ..., "b": ..., "num": 5}             -> {"alphas": [...], "outputs": [...]}
    POST /edit         {"inputs": [...], "condition": "positive", "strength": 0.5}  -> {"outputs": [...]}
    GET  /healthz                                                 -> model, codec, latent size, T
    GET  /docs, /openapi.json                                     (FastAPI's OpenAPI page)

Inputs are strings for text models and lists of numbers for vector models. Requests are typed (pydantic,
unknown fields refused; ``serve_schema.py``) and bounded (``MAX_ITEMS`` inputs, ``MAX_TEXT_CHARS``
characters, ``MAX_N`` samples, DDIM ``steps`` within 1..T); a bad request gets a 4xx that names the problem.

Concurrent requests are batched (``Batcher``: the next batch is what queued while the last one ran, so
batches grow with the load): encoder passes of different requests run as one forward; greedy
/reconstruct requests are encoded and decoded together; DDIM /generate requests with greedy decoding
are sampled and decoded together (each with its own seeded z_T, so a seed gives the same samples
whatever else is in the batch). The batch size and wait, and the model folder itself, come
from the deployment's ``user_config`` and can be changed without restarting a replica (``reconfigure``).

Access: with an API key (``DILED_API_KEY`` or a file named by ``DILED_API_KEY_FILE``, or its SHA-256
given to ``build_app``), every POST needs ``Authorization: Bearer <key>``. Without a key the service is
for this machine only: ``jobs/serve.py`` binds it to 127.0.0.1 and refuses any other address unless told
``--insecure-no-auth``.
"""


import asyncio
import hashlib
import hmac
import inspect
import json
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from diled.persistence import check_pretrained_folder
from diled_platform.batching import Batcher, check_batching
from diled_platform.serve_schema import (ERROR_RESPONSES, MAX_BODY_BYTES, DecodeOptions, EditRequest,
                                         EncodeRequest, EncodeResponse, GenerateRequest, GenerateResponse, InterpolateRequest,
                                         InterpolateResponse, OutputsResponse, ReconstructRequest)

log = logging.getLogger("diled.serve")

KEY_ENV, KEY_FILE_ENV = "DILED_API_KEY", "DILED_API_KEY_FILE"
PUBLIC_PATHS = {"/healthz", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
USER_CONFIG_KEYS = {"model_dir", "max_batch_size", "batch_wait_timeout_s", "api_key_sha256"}


def _provenance(model_dir) -> dict | None:
    """Where a promoted model came from (a sweep writes ``provenance.json`` into ``best_model/``): the
    sweep, trial, its configuration and objective values, for ``/healthz``."""
    path = Path(model_dir) / "provenance.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return {k: data.get(k) for k in ("sweep", "trial_id", "params", "metric", "value", "chosen_by")}


class BadRequest(ValueError):
    """A request that passed the schema but not the model's own checks (a 422 with this message)."""


# ----------------------------------------------------------------------------- API key
def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_from_env(environ: dict | None = None) -> str | None:
    """The API key from ``DILED_API_KEY`` or the file named by ``DILED_API_KEY_FILE`` (never from the
    command line); None when neither is set. An empty key is an error, not "no key"."""
    environ = os.environ if environ is None else environ
    if environ.get(KEY_FILE_ENV):
        path = Path(environ[KEY_FILE_ENV])
        if not path.is_file():
            raise ValueError(f"{KEY_FILE_ENV}={path}: no such file")
        key = path.read_text().strip()
        if not key:
            raise ValueError(f"{KEY_FILE_ENV}={path}: the file is empty")
        return key
    if KEY_ENV in environ:
        key = environ[KEY_ENV].strip()
        if not key:
            raise ValueError(f"{KEY_ENV} is set but empty")
        return key
    return None


def check_bind(host: str, has_key: bool, insecure_no_auth: bool = False) -> None:
    """Refuse to serve beyond loopback without an API key unless explicitly told to."""
    if host not in LOOPBACK_HOSTS and not has_key and not insecure_no_auth:
        raise ValueError(f"refusing to bind the DiLED service to {host!r} without an API key: set {KEY_ENV} or "
                         f"{KEY_FILE_ENV}, bind to 127.0.0.1, or pass --insecure-no-auth if the network is private")


# ----------------------------------------------------------------------------- the FastAPI app
app = FastAPI(title="DiLED", description="Encode, reconstruct, generate and interpolate with a trained DiLED "
              "model (diffusion with a learnable encoder and decoder).", version="1", responses=ERROR_RESPONSES)


# The replica's key digest. Module state set through a module-level function: Serve ships the deployment
# class and the app by value (cloudpickle), so an attribute set on ``app`` inside a method would land on
# a copy that the middleware never sees.
_KEY = {"sha256": None}


def set_api_key_digest(digest: str | None) -> None:
    _KEY["sha256"] = digest or None


def _refusal(request: Request) -> JSONResponse | None:
    """What the app refuses before routing, in this order: a missing or wrong API key (401, when the app
    has one; not on the public paths), a POST body that is not JSON (415) or is declared larger than
    MAX_BODY_BYTES (413, before anything is read). None when the request may go on."""
    digest = _KEY["sha256"]
    if digest and request.url.path not in PUBLIC_PATHS:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key_digest(token.strip()), digest):
            return JSONResponse({"detail": "missing or wrong API key (send 'Authorization: Bearer <key>')"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
    if request.method == "POST":
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return JSONResponse({"detail": f"send the body as JSON with 'Content-Type: application/json' "
                                           f"(got {kind or 'no content type'!r})"}, status_code=415)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"the body is {length} bytes; the limit is {MAX_BODY_BYTES}"},
                                status_code=413)
    return None


class _Gate:
    """``_refusal`` as pure ASGI middleware: Starlette's ``@app.middleware("http")`` wraps every request
    in a task and a body stream, a cost paid on each request of a busy replica."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = _refusal(Request(scope))
            if refusal is not None:
                return await refusal(scope, receive, send)
        return await self.app(scope, receive, send)


app.add_middleware(_Gate)


@app.exception_handler(BadRequest)
async def _bad_request(request: Request, exc: BadRequest):
    return JSONResponse({"detail": str(exc)}, status_code=422)


def _json_safe(value, depth: int = 0):
    """An echo of (part of) a request that JSON can always encode: non-finite numbers as strings, long
    strings and lists cut, deep nesting elided."""
    import math

    if depth > 4:
        return "..."
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):  # a lone surrogate is echoed escaped: it has no UTF-8 encoding
        value = value if len(value) <= 200 else value[:200] + "..."
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value[:8]] + (["..."] if len(value) > 8 else [])
    if isinstance(value, dict):
        return {_json_safe(str(k)[:100], depth + 1): _json_safe(v, depth + 1) for k, v in list(value.items())[:16]}
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)[:200]


@app.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError):
    # FastAPI's own handler echoes the input, which fails to encode when it holds NaN or Infinity (a 500)
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", ""),
               "input": _json_safe(e.get("input"))} for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


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
    health_check_period_s=10, health_check_timeout_s=30, max_ongoing_requests=32)
@serve.ingress(app)
class DiLEDService:
    """One replica: the model, a lock so that one computation uses the CPUs at a time, batched paths."""

    def __init__(self, model_dir: str, api_key_sha256: str | None = None, torch_threads: int | None = None):
        if torch_threads:
            torch.set_num_threads(torch_threads)
        if api_key_sha256 is None:
            key = api_key_from_env()
            api_key_sha256 = key_digest(key) if key else None
        set_api_key_digest(api_key_sha256)
        self._lock = threading.Lock()
        self.model, self.model_dir = None, None
        # how many batched calls served how many requests (in /healthz: shows batching at work)
        self.stats = {f"{path}_{what}": 0 for path in ("encode", "decode", "generate", "reconstruct")
                      for what in ("batches", "requests")}
        self._batchers = {name: Batcher(getattr(self, f"_{name}_batch"))
                          for name in ("encode", "decode", "generate", "reconstruct")}
        self._load(model_dir)

    # ------------------------------------------------------------------ lifecycle
    def _load(self, model_dir: str) -> None:
        from diled import DiLED

        model = DiLED.from_pretrained(model_dir).eval()
        provenance = _provenance(model_dir)
        with self._lock:
            self.model, self.model_dir, self.provenance = model, str(model_dir), provenance
        log.info(f"serving {model_dir} ({model.codec.name}, latent {model.latent_dim}, T {model.diffusion.T})")

    def reconfigure(self, config: dict) -> None:
        """``user_config``: ``model_dir`` (load a new checkpoint in place), ``max_batch_size`` and
        ``batch_wait_timeout_s`` (both batched paths), ``api_key_sha256`` (rotate the key)."""
        unknown = set(config) - USER_CONFIG_KEYS
        if unknown:
            raise ValueError(f"unknown user_config keys {sorted(unknown)}; valid: {sorted(USER_CONFIG_KEYS)}")
        size, wait = config.get("max_batch_size"), config.get("batch_wait_timeout_s")
        check_batching(size, wait)  # a bad value is refused before anything changes
        if config.get("api_key_sha256"):
            set_api_key_digest(str(config["api_key_sha256"]))
        if not _KEY["sha256"]:
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

    async def _generate_batch(self, requests: list[tuple[torch.Tensor, int | None, dict]]) -> list[tuple]:
        """DDIM sampling and greedy decoding of several /generate requests in one pass each. Every request
        brings its own z_T, drawn from its own seeded generator before it joins, and DDIM with eta = 0
        draws nothing more: a request's samples do not depend on the requests it shares a batch with."""
        self.stats["generate_batches"] += 1
        self.stats["generate_requests"] += len(requests)
        results: list[tuple | None] = [None] * len(requests)

        def sample_and_decode(z_T: torch.Tensor, steps: int | None, kw: dict) -> tuple[torch.Tensor, list]:
            z = self.model.sample_latents(z_T.shape[0], steps=steps, sampler="ddim", z_T=z_T.to(self.model.device))
            return z, self.model.codec.decode(z, **kw)

        for (steps, key), idx in _groups([(steps, _options_key(kw)) for _, steps, kw in requests]).items():
            z, rows = await self._run(sample_and_decode, torch.cat([requests[i][0] for i in idx]), steps, dict(key))
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

    async def _generate_batched(self, request: tuple[torch.Tensor, int | None, dict]) -> tuple:
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
                "conditions": self._conditions(), "prior_temperature": m.prior_temperature,
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
        elif req.via == "latent" and kwargs.get("strategy", "greedy") == "greedy":
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

    def _check_condition(self, condition) -> None:
        try:
            self.model.check_condition(condition)
        except ValueError as e:
            raise BadRequest(f"condition: {e}") from None

    @app.post("/generate", response_model=GenerateResponse)
    async def generate(self, req: GenerateRequest) -> GenerateResponse:
        self._check_steps(req.steps)
        kwargs = self._decode_kwargs(req)
        generator, seed = self._generator(req.seed)
        if req.condition is not None:  # guided: its own pass (the guide's gradient per step), not batched
            self._check_condition(req.condition)
            z = await self._run(self.model.sample_latents, req.n, steps=req.steps, sampler=req.sampler,
                                generator=generator, condition=req.condition, guidance_scale=req.guidance_scale,
                                prior_temperature=req.prior_temperature)
            outputs = await self._decode(z, kwargs, generator)
        elif req.sampler == "ddim" and kwargs.get("strategy", "greedy") == "greedy":
            # the same z_T as the unbatched path draws (sample_latents' first draw from the generator)
            z_T = self.model.noise(req.n, generator, req.prior_temperature)
            z, outputs = await self._generate_batched((z_T, req.steps, kwargs))
        else:
            z = await self._run(self.model.sample_latents, req.n, steps=req.steps, sampler=req.sampler,
                                generator=generator, prior_temperature=req.prior_temperature)
            outputs = await self._decode(z, kwargs, generator)
        return GenerateResponse(outputs=outputs, seed=seed, latents=z.tolist() if req.return_latents else None)

    @app.post("/edit", response_model=OutputsResponse)
    async def edit(self, req: EditRequest) -> OutputsResponse:
        """The inputs edited toward ``condition``: DDIM-inverted to ``strength`` x T, sampled back guided."""
        self._check_steps(req.steps)
        self._check_condition(req.condition)
        kwargs = self._decode_kwargs(req)
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
def build_app(model_dir: str | Path, *, api_key_sha256: str | None = None, max_batch_size: int = 16,
              batch_wait_timeout_s: float = 0.005, min_replicas: int = 1, max_replicas: int = 2,
              target_ongoing_requests: float = 4, num_cpus: float = 1.0, torch_threads: int | None = None):
    """The Serve application for one model folder (``serve.run(build_app(...))``)."""
    model_dir = check_pretrained_folder(model_dir)
    check_batching(max_batch_size, batch_wait_timeout_s)
    if not 1 <= min_replicas <= max_replicas:
        raise ValueError(f"need 1 <= min_replicas <= max_replicas, got {min_replicas}, {max_replicas}")
    if torch_threads is not None and not (isinstance(torch_threads, int) and torch_threads >= 1):
        raise ValueError(f"torch_threads must be an int >= 1 (or unset: Ray's, 1 per CPU), got {torch_threads!r}")
    deployment = DiLEDService.options(
        ray_actor_options={"num_cpus": num_cpus},
        autoscaling_config={"min_replicas": min_replicas, "max_replicas": max_replicas,
                            "target_ongoing_requests": target_ongoing_requests,
                            "upscale_delay_s": 5, "downscale_delay_s": 30},
        user_config={"model_dir": str(model_dir), "max_batch_size": max_batch_size,
                     "batch_wait_timeout_s": batch_wait_timeout_s,
                     **({"api_key_sha256": api_key_sha256} if api_key_sha256 else {})})
    return deployment.bind(str(model_dir), api_key_sha256=api_key_sha256, torch_threads=torch_threads)


def app_builder(args: dict[str, Any]):
    """For Serve config files (``import_path: diled_platform.serve:app_builder``) and ``serve run``:
    ``args`` holds ``model_dir`` and optionally the other ``build_app`` keywords. Without
    ``api_key_sha256`` the key comes from the replicas' environment (``DILED_API_KEY`` / ``_FILE``)."""
    args = dict(args)
    if "model_dir" not in args:
        raise ValueError("the DiLED Serve application needs args.model_dir (a save_pretrained folder)")
    unknown = set(args) - set(inspect.signature(build_app).parameters)
    if unknown:
        raise ValueError(f"unknown args {sorted(unknown)} for the DiLED Serve application")
    return build_app(args.pop("model_dir"), **args)


# ----------------------------------------------------------------------------- config-file deployments
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "serve_config.yaml"


def serve_config(model_dir: str | Path, *, path: str | Path = DEFAULT_CONFIG, host: str | None = None,
                 port: int | None = None, api_key_sha256: str | None = None, **user_config) -> dict:
    """The Serve config of ``path`` (default ``platform/serve_config.yaml``) for ``model_dir``, with
    the HTTP address and ``user_config`` values (``max_batch_size``, ``batch_wait_timeout_s``) set."""
    import yaml

    model_dir = str(Path(model_dir).resolve())
    config = yaml.safe_load(Path(path).read_text())
    if host is not None:
        config.setdefault("http_options", {})["host"] = host
    if port is not None:
        config.setdefault("http_options", {})["port"] = port
    app_cfg = config["applications"][0]
    app_cfg["args"] = {**app_cfg.get("args", {}), "model_dir": model_dir}
    dep = app_cfg["deployments"][0]
    dep["user_config"] = {**dep.get("user_config", {}), "model_dir": model_dir, **user_config}
    if api_key_sha256:  # the digest, never the key; rotating it is a user_config update
        dep["user_config"]["api_key_sha256"] = api_key_sha256
    return config


def deploy(config: dict) -> None:
    """Deploy a Serve config the way ``serve run config.yaml`` / ``serve deploy`` do (declaratively, so a
    later deploy that changes only ``user_config`` reconfigures the running replicas instead of
    replacing them). Needs ``ray.init`` first; blocks until the application is running."""
    from ray.serve._private import api as serve_api  # Ray 2.60: what `serve run <config>` calls
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    client = serve_api.serve_start(http_options=schema.http_options.model_dump(),
                                   proxy_location=schema.proxy_location)
    client.deploy_apps(schema, _blocking=True)


def swap_model(config: dict, model_dir: str | Path) -> dict:
    """Point a deployed config at another model folder (``user_config``; no replica restarts)."""
    model_dir = str(check_pretrained_folder(model_dir))
    config = json.loads(json.dumps(config))
    config["applications"][0]["deployments"][0]["user_config"]["model_dir"] = model_dir
    deploy(config)
    return config


# ----------------------------------------------------------------------------- direct ingress
DIRECT_PORT = 30000


def direct_ingress_env(port: int = DIRECT_PORT, drain_s: float = 2.0) -> dict[str, str]:
    """The environment in which every replica of the app also serves HTTP itself, on ``port`` (a second
    replica on the next free port up to ``port + 100``), beside the proxy: Ray Serve's throughput-optimized
    mode with direct ingress (Ray >= 2.56). A request to a replica's own port skips the proxy and its
    hand-off to the replica (the request body fetched back from the proxy by an actor call, per request),
    so the serving path costs under a millisecond per request instead of ~3: on a 2-core machine batched
    /encode served 412 requests/s this way against 160 through the proxy (benchmarks/README.md). The
    proxy on ``http_options.port`` still balances across replicas. The app is the same (API key, limits,
    errors); a replica binds the same host.

    It must be in the environment of Ray's processes when they start: set it before an embedded
    ``ray.init`` (``jobs/serve.py --direct`` does), or before ``ray start`` on every node of a cluster.
    ``drain_s``: how long a stopping replica keeps answering (Ray's default, 30 s, is for an external
    load balancer to notice)."""
    if not isinstance(port, int) or not 1024 <= port <= 65535 - 100:
        raise ValueError(f"direct ingress port {port!r}: give an int in 1024..65435 (replicas use port..port+100)")
    if not drain_s >= 0:
        raise ValueError(f"direct ingress drain_s {drain_s!r}: give seconds >= 0")
    return {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 100),
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(drain_s)}


def direct_urls(app_name: str = "diled", host: str | None = None, timeout_s: float = 60.0) -> list[str]:
    """The HTTP addresses of the app's replicas' own servers (direct ingress), waiting up to ``timeout_s``
    for the first; [] when the cluster was not started with ``direct_ingress_env`` (then the controller lists
    only the proxies). ``host`` replaces the node's IP in the addresses (a replica binds the app's
    ``http_options.host``, e.g. 127.0.0.1). Needs ``ray.init`` and a deployed app."""
    import time

    import ray
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    start = time.monotonic()
    while True:
        groups = ray.get(client._controller.get_target_groups.remote(app_name))
        # a replica's own server is listed under the app's name; the proxies under ""
        targets = [t for g in groups if g.app_name == app_name and str(g.protocol).upper().endswith("HTTP")
                   for t in g.targets]
        waited = time.monotonic() - start
        if targets or waited > timeout_s or (waited > 5 and not any(g.app_name == app_name for g in groups)):
            return sorted(f"http://{host or t.ip}:{t.port}" for t in targets)
        time.sleep(0.5)

"""The HTTP layer of the Serve app, independent of the model: the FastAPI app every replica serves, the API
key (``DILED_API_KEY`` / ``DILED_API_KEY_FILE``, checked by its SHA-256 in an ASGI gate before routing), the
refusals made before a body is read (415, 413), and the error bodies (a 422 whose echo of the input always
encodes: non-finite numbers and lone surrogates escaped)."""

import hashlib
import hmac
import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from diled_platform.serving.schema import ERROR_RESPONSES, MAX_BODY_BYTES

KEY_ENV, KEY_FILE_ENV = "DILED_API_KEY", "DILED_API_KEY_FILE"
PUBLIC_PATHS = {"/healthz", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


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


def api_key_digest() -> str | None:
    """The SHA-256 of the API key this replica requires (None: no key)."""
    return _KEY["sha256"]


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

"""A small client for the DiLED HTTP service (``diled_platform.serving.app``); standard library only.

    from diled_platform.serving.client import DiLEDClient
    client = DiLEDClient("http://127.0.0.1:8000")        # API key from DILED_API_KEY / DILED_API_KEY_FILE
    z = client.encode(["a sentence", "another one"])     # [[...], [...]]
    client.generate(n=4, seed=0)                         # ["...", ...]
    client.reconstruct(["a sentence"]); client.interpolate("first", "second", num=5)
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


class DiLEDServiceError(RuntimeError):
    """The service answered with an error status; ``status`` and ``detail`` say which and why."""

    def __init__(self, status: int, detail: Any):
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


class DiLEDClient:
    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 120.0):
        if api_key is None:
            from diled_platform.serving.http import api_key_from_env
            api_key = api_key_from_env()
        self.url, self.api_key, self.timeout = url.rstrip("/"), api_key, timeout

    def request(self, path: str, body: dict | None = None) -> dict:
        """GET (``body`` None) or POST JSON to ``path``; the decoded JSON answer, or DiLEDServiceError."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url + path, data=data, headers=headers,
                                     method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                detail = json.loads(raw).get("detail", raw.decode(errors="replace"))
            except (ValueError, AttributeError):
                detail = raw.decode(errors="replace")
            raise DiLEDServiceError(e.code, detail) from None

    def health(self) -> dict:
        return self.request("/healthz")

    def encode(self, inputs: list) -> list[list[float]]:
        return self.request("/encode", {"inputs": list(inputs)})["latents"]

    def reconstruct(self, inputs: list | None = None, latents: list | None = None, **options) -> list:
        body = {k: v for k, v in (("inputs", inputs), ("latents", latents)) if v is not None}
        return self.request("/reconstruct", {**body, **options})["outputs"]

    def generate(self, n: int = 1, **options) -> list:
        return self.request("/generate", {"n": n, **options})["outputs"]

    def edit(self, inputs: list, condition, strength: float = 0.5, **options) -> list:
        return self.request("/edit", {"inputs": inputs, "condition": condition, "strength": strength,
                                      **options})["outputs"]

    def interpolate(self, a, b, num: int = 5, **options) -> list:
        return self.request("/interpolate", {"a": a, "b": b, "num": num, **options})["outputs"]

"""What the Serve tests share: tiny trained models, a test's Serve config, requests that must be refused,
and the schemathesis run. Used by test_serve.py (through the proxy) and test_serve_direct.py (a replica's
own server); not a test module."""

import socket
import time

import requests
import schemathesis
import torch
from hypothesis import HealthCheck, given, settings

from diled import DiLED, LatentDiffusion, MLPSkipNet, VectorCodec
from diled.codecs.text import TextCodec, train_bpe
from diled_platform.serving.deploy import serve_config

SENTENCES = [
    "the movie was bad and boring.", "what a great film, i loved it.", "a warm, funny and moving story.",
    "the acting is wooden and the plot is thin.", "the flight was late again and nobody told us.",
    "best customer service i have had in years.", "it drags on far too long.", "a clever script.",
]


def train(model, batch, steps=60, lr=3e-3):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    torch.manual_seed(0)
    model.train()
    for _ in range(steps):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    return model.eval()


def make_models(root):
    """A tiny trained text model and a tiny trained vector model, saved; returns (text dir, vector dir)."""
    tok = str(train_bpe(SENTENCES * 5, 400, root / "tok"))
    torch.manual_seed(0)
    codec = TextCodec(latent_dim=8, tokenizer=tok, max_length=24, encoder_trainable_layers=0,
                      decoder_config={"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 32})
    text = DiLED(codec, MLPSkipNet(8, hidden=32, depth=2, time_dim=16), LatentDiffusion("constant", 100), w=1.0)
    train(text, codec.collate(SENTENCES)).save_pretrained(root / "text")
    vec = DiLED(VectorCodec(data_dim=2, latent_dim=2), MLPSkipNet(2, hidden=32, depth=2, time_dim=16),
                LatentDiffusion("constant", 100), w=1.0)
    train(vec, {"x": torch.randn(64, 2)}).save_pretrained(root / "vector")
    return root / "text", root / "vector"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_for(model_dir, port, **kw):
    """platform/serve_config.yaml for a test: one replica of 0.5 CPU on 127.0.0.1:port."""
    config = serve_config(model_dir, host="127.0.0.1", port=port, **kw)
    dep = config["applications"][0]["deployments"][0]
    dep["autoscaling_config"].update(min_replicas=1, max_replicas=1)
    dep["ray_actor_options"]["num_cpus"] = 0.5
    return config


def health_when(url, predicate, timeout=60.0):
    """/healthz once ``predicate(health)`` holds (a reconfigure is applied asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        health = requests.get(url + "/healthz", timeout=30).json()
        if predicate(health) or time.monotonic() > deadline:
            return health
        time.sleep(0.2)


def post(url, path, body):
    return requests.post(url + path, json=body, timeout=60)


BAD = [
    ("/encode", "{not json", "json_invalid"),
    ("/encode", {"inputs": "one sentence"}, "inputs"),
    ("/encode", {"inputs": [1, 2]}, "string"),
    ("/encode", {"inputs": []}, "at least 1"),
    ("/encode", {"inputs": ["   "]}, "empty or blank"),
    ("/encode", {"inputs": ["x" * 5000]}, "at most 2000"),
    ("/encode", {"inputs": ["ok"] * 65}, "at most 64"),
    ("/encode", {"inputs": [[0.5, 1.0]]}, "text model"),
    ("/encode", {"inputs": ["ok"], "verbose": True}, "Extra inputs"),
    ("/generate", {"n": "5"}, "valid integer"),
    ("/generate", {"n": 0}, "greater than or equal"),
    ("/generate", {"n": 1000}, "less than or equal to 64"),
    ("/generate", {"steps": 101}, "T=100"),
    ("/generate", {"strategy": "nucleus"}, "'beam'"),
    ("/generate", {"num_beams": 0}, "greater than or equal to 1"),
    ("/generate", {"num_beams": 17}, "less than or equal to 16"),
    ("/reconstruct", {"inputs": ["a"], "length_penalty": 11}, "less than or equal to 10"),
    ("/generate", {"temperature": 0}, "greater than 0"),
    ("/reconstruct", {}, "exactly one"),
    ("/reconstruct", {"inputs": ["a"], "latents": [[0.0] * 8]}, "exactly one"),
    ("/reconstruct", {"latents": [[0.0] * 3]}, "latent size"),
    ("/reconstruct", '{"latents": [[1e400, 0, 0, 0, 0, 0, 0, 0]]}', "finite"),  # JSON's 1e400 parses to inf
    # NaN and Infinity, which Python's json and many clients write: a 422 whose echo of the input encodes
    ("/reconstruct", '{"latents": [[NaN, 0, 0, 0, 0, 0, 0, 0]]}', "finite"),
    ("/reconstruct", '{"latents": [[Infinity, 0, 0, 0, 0, 0, 0, 0]]}', "finite"),
    ("/encode", '{"inputs": [[-Infinity, 1.0]]}', "finite"),
    ("/generate", '{"temperature": NaN}', "finite"),
    # a lone UTF-16 surrogate is valid JSON but not Unicode: refused in every string field (pydantic's strict
    # strings), its echo escaped so that the 422 itself encodes
    ("/reconstruct", '{"inputs": ["fine", "a\\ud800b"]}', '"input":"a\\\\ud800b"'),
    ("/encode", '{"inputs": ["\\udfff"]}', "unable to parse raw data as a unicode string"),
    ("/interpolate", '{"a": "x", "b": "\\ud83d"}', "unable to parse raw data as a unicode string"),
    ("/generate", '{"n": 1, "condition": "pos\\ud800"}', "unable to parse raw data as a unicode string"),
    ("/interpolate", '{"a": [NaN, 1.0], "b": "y"}', "finite"),
    ("/interpolate", {"a": "x", "b": "y", "num": 1}, "greater than or equal"),
    ("/interpolate", {"a": "x"}, "missing"),
    # huge numbers, deep nesting, wrong types, empty lists
    ("/generate", {"n": 10 ** 30}, "less than or equal to 64"),
    ("/generate", {"seed": 10 ** 30}, "seed"),
    ("/reconstruct", {"latents": [[1e308] * 8]}, "finite"),
    ("/reconstruct", {"latents": []}, "at least 1"),
    ("/encode", "[" * 5000 + "]" * 5000, "error parsing the body"),  # deeper than Python's json parses
    ("/encode", '{"inputs": ' + "[" * 5000 + "]" * 5000 + "}", "error parsing the body"),
    ("/encode", '{"inputs": [[[["a"]]]]}', "string"),
    ("/encode", {"inputs": {"a": 1}}, "list"),
    ("/encode", "null", "dict"),
    ("/interpolate", {"a": None, "b": "y"}, "a"),
]


def check_schema(url: str, mode: str) -> None:
    """schemathesis (a client no one here wrote) generates requests for every operation from the app's own
    OpenAPI schema at ``url``, valid ones (mode "positive") or ones the schema forbids ("negative"): no
    5xx, and every response is one the schema documents (status, content type, body), and what the schema
    forbids is refused. Its pytest plugin's lazy loading does not work with this pytest, so each
    operation's strategy runs under Hypothesis directly."""
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    api = schemathesis.openapi.from_url(url + "/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} >= {"/encode", "/reconstruct", "/generate", "/interpolate", "/healthz"}
    for operation in operations:
        if mode == "negative" and operation.path == "/healthz":
            continue  # no parameters and no body: nothing it could be sent that the schema forbids
        @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case):
            # every other check stays on; a schema-valid request may still be refused (422) for what only
            # the loaded model decides: its latent size and T, text or vectors, blank texts
            case.call_and_validate(timeout=60, excluded_checks=[positive_data_acceptance])

        check()


def check_bad_request(url: str, path: str, body, message: str) -> None:
    """``body`` (a dict, or a str sent as is) posted to ``path`` gets a 4xx whose text holds ``message``,
    and the service still answers."""
    if isinstance(body, str):
        r = requests.post(url + path, data=body, headers={"Content-Type": "application/json"}, timeout=30)
    else:
        r = post(url, path, body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert message in r.text, r.text
    assert post(url, "/encode", {"inputs": ["still answering"]}).status_code == 200


def check_unreadable_bodies(url: str) -> None:
    """A body that is not JSON (415) or is declared larger than the limit (413) is refused before reading."""
    r = requests.post(url + "/encode", data='{"inputs": ["fine"]}', headers={"Content-Type": "text/plain"},
                      timeout=30)
    assert r.status_code == 415 and "application/json" in r.text
    huge = '{"inputs": ["' + "x" * (9 * 2**20) + '"]}'
    r = requests.post(url + "/encode", data=huge, headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "limit" in r.text
    assert post(url, "/encode", {"inputs": ["still answering"]}).status_code == 200


def kill_under_load(url: str, pid: int, seconds: float, clients: int = 4) -> list:
    """SIGKILL process ``pid`` (a replica) 1.5 s into ``seconds`` of ``clients`` clients posting to
    ``url``/encode back to back: every request's status code, or "dropped" for a reply cut off or a
    connection refused (it ended; a request that waited 30 s would raise ReadTimeout, not caught here)."""
    import concurrent.futures as cf
    import os
    import signal

    stop = time.monotonic() + seconds

    def client():
        codes = []
        while time.monotonic() < stop:
            try:
                codes.append(requests.post(url + "/encode", json={"inputs": SENTENCES[:2]}, timeout=30).status_code)
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
                codes.append("dropped")  # seen once in CI through the proxy: headers sent, body not
                time.sleep(0.05)  # a replica's own port stays closed until the new replica opens one
        return codes

    with cf.ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client) for _ in range(clients)]
        time.sleep(1.5)
        os.kill(pid, signal.SIGKILL)
        codes = [code for f in futures for code in f.result(timeout=180)]
    print("replica killed under load, status codes:", {c: codes.count(c) for c in set(codes)})
    return codes

"""The Serve app through a replica's own HTTP server (Ray Serve's direct ingress, set up by
``diled_platform.serving.deploy.direct_ingress_env``): the same answers as through the proxy, the same refusals
(schemathesis included), the API key, and a replica killed under load."""

import concurrent.futures as cf
import os
import time

import pytest
import requests
import torch

from diled import DiLED
from diled_platform.serving.deploy import deploy, direct_ingress_env, direct_urls
from diled_platform.serving.http import key_digest

from serve_checks import (BAD, SENTENCES, check_bad_request, check_schema, check_unreadable_bodies, config_for,
                          free_port, health_when, kill_under_load, make_models, post)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("serve-direct"))


@pytest.fixture(scope="module")
def service(models):
    """A local Ray started with the direct-ingress environment and the app deployed on it; yields (proxy
    URL, the replica's own URL, config)."""
    import ray
    from ray import serve

    direct_port = free_port()
    env = direct_ingress_env(direct_port, drain_s=0.5)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # Ray's processes, started now, inherit it
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20)
        port = free_port()
        config = config_for(models[0], port)
        deploy(config)
        urls = direct_urls(host="127.0.0.1")
        assert len(urls) == 1 and int(urls[0].rsplit(":", 1)[1]) in range(direct_port, direct_port + 101), urls
        yield f"http://127.0.0.1:{port}", urls[0], config
        serve.shutdown()
        ray.shutdown()
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_the_replica_answers_on_its_own_port_as_through_the_proxy(service, models):
    proxy, own, _ = service
    model = DiLED.from_pretrained(models[0]).eval()
    assert requests.get(own + "/healthz", timeout=30).json()["pid"] == \
        requests.get(proxy + "/healthz", timeout=30).json()["pid"]
    latents = post(own, "/encode", {"inputs": SENTENCES[:3]}).json()["latents"]
    torch.testing.assert_close(torch.tensor(latents), model.encode(SENTENCES[:3]))
    assert latents == post(proxy, "/encode", {"inputs": SENTENCES[:3]}).json()["latents"]
    for path, body in (("/generate", {"n": 2, "steps": 5, "seed": 0}), ("/reconstruct", {"inputs": SENTENCES[:2]}),
                       ("/interpolate", {"a": SENTENCES[0], "b": SENTENCES[1], "num": 3, "steps": 5})):
        answer = post(own, path, body)
        assert answer.status_code == 200 and answer.json() == post(proxy, path, body).json()
    assert post(own, "/generate", {"n": 2, "steps": 5, "seed": 0}).json()["outputs"] == model.generate(2, steps=5, seed=0)
    # batching works the same way on this path: concurrent requests share batches
    before = requests.get(own + "/healthz", timeout=30).json()["batching"]
    with cf.ThreadPoolExecutor(8) as pool:
        answers = [f.result().json()["latents"][0]
                   for f in [pool.submit(post, own, "/encode", {"inputs": [s]}) for s in SENTENCES * 4]]
    torch.testing.assert_close(torch.tensor(answers), model.encode(SENTENCES * 4), rtol=1e-4, atol=1e-5)
    after = requests.get(own + "/healthz", timeout=30).json()["batching"]
    assert after["encode_requests"] - before["encode_requests"] == 32
    assert after["encode_batches"] - before["encode_batches"] < 32


def test_unreadable_bodies_are_refused_on_the_replicas_port(service):
    check_unreadable_bodies(service[1])


@pytest.mark.parametrize("path,body,message", BAD, ids=[f"{p}:{m}" for p, _, m in BAD])
def test_bad_requests_get_a_4xx_on_the_replicas_port(service, path, body, message):
    check_bad_request(service[1], path, body, message)


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_generated_requests_on_the_replicas_port_get_no_5xx(service, mode):
    check_schema(service[1], mode)


def test_a_replica_killed_under_direct_load_is_replaced_and_no_request_hangs(service):
    """SIGKILL of the replica while 4 clients post to its own port: every request ends (a 200, a 5xx, a
    cut-off reply or a refused connection; one that waited 30 s would raise ReadTimeout here), Serve starts
    a new replica, and ``direct_urls`` gives its address, which answers."""
    _, own, _ = service
    pid = requests.get(own + "/healthz", timeout=30).json()["pid"]
    codes = kill_under_load(own, pid, 6.0)
    assert 200 in codes and all(c in (200, "dropped") or 500 <= c < 600 for c in codes), set(codes)
    deadline = time.monotonic() + 120
    while True:  # the new replica's own address (the port may differ from the old one's)
        urls = direct_urls(host="127.0.0.1", timeout_s=10)
        try:
            health = requests.get(urls[0] + "/healthz", timeout=10).json() if urls else {}
        except requests.exceptions.ConnectionError:
            health = {}
        if health.get("pid") not in (None, pid) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert health.get("pid") not in (None, pid), (urls, health)
    assert post(urls[0], "/encode", {"inputs": SENTENCES[:2]}).status_code == 200


def test_the_api_key_is_required_on_the_replicas_port(service, models):
    proxy, _, config = service
    key = "s3cret-token-for-tests"
    deploy(config_for(models[1], config["http_options"]["port"], api_key_sha256=key_digest(key)))
    health_when(proxy, lambda h: h["codec"] == "vector")
    own = direct_urls(host="127.0.0.1")[0]
    assert requests.get(own + "/healthz", timeout=30).status_code == 200  # probes need no key
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = requests.post(own + "/encode", json={"inputs": [[0.0, 1.0]]}, headers=headers, timeout=30)
        assert r.status_code == 401 and "API key" in r.text
    r = requests.post(own + "/encode", json={"inputs": [[0.0, 1.0]]}, headers={"Authorization": f"Bearer {key}"},
                      timeout=30)
    assert r.status_code == 200 and len(r.json()["latents"][0]) == 2


# ----------------------------------------------------------------------------- no Ray needed
@pytest.mark.parametrize("port,drain,message", [(80, 2.0, "port 80"), (65500, 2.0, "port 65500"),
                                                 ("30000", 2.0, "port '30000'"), (30000, -1.0, "drain_s -1.0")])
def test_direct_ingress_settings_are_checked(port, drain, message):
    with pytest.raises(ValueError, match=message):
        direct_ingress_env(port, drain_s=drain)
    env = direct_ingress_env(31000)
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1" and env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == "31000"


def test_serve_job_refuses_a_bad_direct_port(models):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(root / "jobs" / "serve.py"), "--model", str(models[0]), "--direct",
                          "--direct-port", "99"], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "direct ingress port 99" in out.stderr, out.stderr

"""The Serve app on a real local Ray: every endpoint against the model called directly, bad requests,
batching, swapping the model in place, refused deploys, the API key, the client and the CLI."""

import concurrent.futures as cf
import json
import threading
import time

import pytest
import requests
import torch

from diled import DiLED, LatentDiffusion, MLPSkipNet, SlotTransformer
from diled.codecs.text import TextCodec
from diled_platform.serving.client import DiLEDClient, DiLEDServiceError
from diled_platform.serving.deploy import app_builder, build_app, deploy, swap_model, update_in_place
from diled_platform.serving.http import api_key_from_env, check_bind, key_digest

from serve_checks import (BAD, SENTENCES, check_bad_request, check_schema, check_unreadable_bodies, config_for,
                          free_port, health_when, kill_under_load, make_models, post, train)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny trained text model and a tiny trained vector model, saved; returns (text dir, vector dir)."""
    return make_models(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def service(ray_local, models):
    """The app deployed from platform/serve_config.yaml on 127.0.0.1; yields (url, config)."""
    from ray import serve

    port = free_port()
    config = config_for(models[0], port)
    deploy(config)
    yield f"http://127.0.0.1:{port}", config
    serve.shutdown()


@pytest.fixture(scope="module")
def direct(models):
    return DiLED.from_pretrained(models[0]).eval()


def test_every_endpoint_answers_as_the_model_does(service, direct):
    service, _ = service
    client = DiLEDClient(service, api_key="")
    health = client.health()
    assert health["status"] == "ok" and health["codec"] == "text" and health["latent_dim"] == 8 and health["T"] == 100
    assert health["input_kind"] == "strings" and "num_beams" in health["decode_options"]
    assert health["decoding"] is None  # saved without a default decoding: greedy
    assert requests.get(service + "/docs", timeout=30).status_code == 200
    assert "/generate" in requests.get(service + "/openapi.json", timeout=30).json()["paths"]

    latents = client.encode(SENTENCES[:3])
    torch.testing.assert_close(torch.tensor(latents), direct.encode(SENTENCES[:3]))

    assert client.generate(n=3, steps=5, seed=0) == direct.generate(3, steps=5, seed=0)
    sampled = client.generate(n=3, steps=5, seed=1, strategy="sample", top_k=20, temperature=0.8)
    assert sampled == direct.generate(3, steps=5, seed=1, strategy="sample", top_k=20, temperature=0.8)
    assert client.generate(n=2, steps=5, seed=0, sampler="ddpm") == direct.generate(2, steps=5, seed=0, sampler="ddpm")
    beam = {"strategy": "beam", "num_beams": 3, "length_penalty": 0.6}
    assert client.generate(n=3, steps=5, seed=0, **beam) == direct.generate(3, steps=5, seed=0, **beam)
    assert client.reconstruct(SENTENCES[:3], **beam) == direct.reconstruct(SENTENCES[:3], **beam)
    full = client.request("/generate", {"n": 2, "steps": 5, "seed": 3, "return_latents": True})
    z = direct.sample_latents(2, steps=5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(torch.tensor(full["latents"]), z)
    assert full["seed"] == 3 and full["outputs"] == direct.codec.decode(z)

    assert client.reconstruct(SENTENCES[:4]) == direct.reconstruct(SENTENCES[:4])
    assert client.reconstruct(SENTENCES[:2], via="inversion", steps=10) == \
        direct.reconstruct(SENTENCES[:2], via="inversion", steps=10)
    assert client.reconstruct(latents=latents) == direct.codec.decode(torch.tensor(latents))

    assert client.interpolate(SENTENCES[0], SENTENCES[1], num=4, steps=10) == \
        direct.interpolate(SENTENCES[0], SENTENCES[1], num=4, steps=10)
    assert client.interpolate(SENTENCES[0], SENTENCES[1], num=3, via="latent") == \
        direct.interpolate(SENTENCES[0], SENTENCES[1], num=3, via="latent")


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_generated_requests_get_no_5xx_and_responses_match_the_schema(service, mode):
    """schemathesis against the app's own OpenAPI schema through the proxy (serve_checks.check_schema)."""
    check_schema(service[0], mode)





def test_bodies_that_are_not_json_or_too_large_are_refused_before_reading(service):
    check_unreadable_bodies(service[0])


@pytest.mark.parametrize("path,body,message", BAD, ids=[f"{p}:{m}" for p, _, m in BAD])
def test_bad_requests_get_a_4xx_that_says_why(service, path, body, message):
    check_bad_request(service[0], path, body, message)


def test_concurrent_requests_share_batches(service, direct, models):
    service, config = service
    # a longer batch wait so that concurrent requests meet in one batch (in place: no restart)
    pid = requests.get(service + "/healthz", timeout=30).json()["pid"]
    update_in_place(config, batch_wait_timeout_s=0.2, max_batch_size=8)
    before = health_when(service, lambda h: h["batching"]["batch_wait_timeout_s"] == 0.2)
    assert before["pid"] == pid and before["batching"]["max_batch_size"] == 8
    with cf.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(post, service, "/encode", {"inputs": [s]}) for s in SENTENCES]
        answers = [f.result().json()["latents"][0] for f in futures]
    torch.testing.assert_close(torch.tensor(answers), direct.encode(SENTENCES), rtol=1e-4, atol=1e-5)
    after = requests.get(service + "/healthz", timeout=30).json()["batching"]
    batches = after["encode_batches"] - before["batching"]["encode_batches"]
    served = after["encode_requests"] - before["batching"]["encode_requests"]
    assert served == len(SENTENCES) and batches < served, (batches, served)

    # /generate (DDIM, greedy) and /reconstruct (greedy) are batched end to end; each request's answer
    # is the one the model gives it alone (its own seed, its own inputs), whatever it was batched with
    with cf.ThreadPoolExecutor(8) as pool:
        gen = [pool.submit(post, service, "/generate", {"n": 1 + seed % 3, "steps": 5, "seed": seed})
               for seed in range(8)]
        rec = [pool.submit(post, service, "/reconstruct", {"inputs": SENTENCES[i:i + 2]}) for i in range(0, 8, 2)]
        generated = [f.result().json()["outputs"] for f in gen]
        reconstructed = [f.result().json()["outputs"] for f in rec]
    assert generated == [direct.generate(1 + seed % 3, steps=5, seed=seed) for seed in range(8)]
    assert reconstructed == [direct.reconstruct(SENTENCES[i:i + 2]) for i in range(0, 8, 2)]
    final = requests.get(service + "/healthz", timeout=30).json()["batching"]
    for path, count in (("generate", 8), ("reconstruct", 4)):
        served = final[f"{path}_requests"] - after[f"{path}_requests"]
        batches = final[f"{path}_batches"] - after[f"{path}_batches"]
        assert served == count and batches < served, (path, batches, served)

    # with eta > 0 every step adds noise: each request brings its own, so batching still changes nothing
    with cf.ThreadPoolExecutor(8) as pool:
        gen = [pool.submit(post, service, "/generate", {"n": 1 + seed % 3, "steps": 5, "seed": seed, "eta": 1.0})
               for seed in range(8)]
        generated = [f.result().json()["outputs"] for f in gen]
    assert generated == [direct.generate(1 + seed % 3, steps=5, seed=seed, eta=1.0) for seed in range(8)]
    assert generated != [direct.generate(1 + seed % 3, steps=5, seed=seed) for seed in range(8)]
    last = requests.get(service + "/healthz", timeout=30).json()["batching"]
    served = last["generate_requests"] - final["generate_requests"]
    assert served == 8 and last["generate_batches"] - final["generate_batches"] < served


def test_user_config_swaps_the_model_in_place(service, models):
    service, config = service
    pid = requests.get(service + "/healthz", timeout=30).json()["pid"]
    swap_model(config, models[1])
    health = health_when(service, lambda h: h["codec"] == "vector")
    assert health["pid"] == pid and health["codec"] == "vector" and health["model_dir"] == str(models[1])
    vec = DiLED.from_pretrained(models[1]).eval()
    client = DiLEDClient(service, api_key="")
    torch.testing.assert_close(torch.tensor(client.encode([[0.5, 1.0], [-1.0, 2.0]])),
                               vec.encode([[0.5, 1.0], [-1.0, 2.0]]))
    assert client.generate(n=4, steps=5, seed=0) == vec.generate(4, steps=5, seed=0)
    for body, message in (({"inputs": ["text"]}, "lists of 2 numbers"), ({"inputs": [[1.0, 2.0, 3.0]]}, "2 numbers")):
        r = post(service, "/encode", body)
        assert r.status_code == 422 and message in r.text, r.text
    r = post(service, "/generate", {"n": 2, "top_k": 5})
    assert r.status_code == 422 and "takes no top_k" in r.text and "decoding options: none" in r.text, r.text
    assert health["input_kind"] == "arrays" and health["decode_options"] == []
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        swap_model(config, models[1].parent)


def test_cli_calls_the_service(service, models, capsys):
    from diled_platform.__main__ import main

    service, config = service
    swap_model(config, models[0])
    health_when(service, lambda h: h["codec"] == "text")
    direct = DiLED.from_pretrained(models[0]).eval()
    assert main(["generate", "--url", service, "-n", "2", "--seed", "0", "--steps", "5"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["output"] for x in lines] == direct.generate(2, steps=5, seed=0)
    beam = ["--strategy", "beam", "--num-beams", "2", "--length-penalty", "0.5"]
    assert main(["generate", "--url", service, "-n", "2", "--seed", "0", "--steps", "5", *beam]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["output"] for x in lines] == direct.generate(2, steps=5, seed=0, strategy="beam", num_beams=2,
                                                           length_penalty=0.5)
    assert main(["reconstruct", "--url", service, *beam, *SENTENCES[:2]]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["output"] for x in lines] == direct.reconstruct(SENTENCES[:2], strategy="beam", num_beams=2,
                                                              length_penalty=0.5)
    assert main(["encode", "--url", service, SENTENCES[0]]) == 0
    z = json.loads(capsys.readouterr().out.splitlines()[0])["latent"]
    torch.testing.assert_close(torch.tensor([z]), direct.encode(SENTENCES[:1]))
    with pytest.raises(SystemExit, match="refused"):
        main(["generate", "--url", service, "-n", "1000"])


# a tiny random Llama (grouped KV heads, rotary positions): the causal-LM kind with no download
TINY_LLAMA = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}


@pytest.mark.parametrize("vocabulary", ["wordpiece", "transplanted bpe, latent slots", "causal lm (llama), latent slots"])
def test_a_model_with_a_bert_or_causal_lm_decoder_serves_unchanged(service, models, tmp_path, vocabulary):
    service, config = service
    torch.manual_seed(0)
    preset_form = vocabulary != "wordpiece"  # the text-cpu preset's: a transplanted BPE and latent slots
    tok = str(models[0].parent / "tok") if preset_form else None
    kind = {"decoder_kind": "causal_lm", "decoder_config": TINY_LLAMA} if "llama" in vocabulary else \
        {"decoder_kind": "bert", "decoder_layers": 1}
    # the preset's default decoding too: beam search, which requests that name no strategy get
    decoding = {"strategy": "beam", "num_beams": 3, "length_penalty": 0.6} if preset_form else None
    codec = TextCodec(latent_dim=8, **kind, encoder_layers=1,
                      encoder_trainable_layers=0, max_length=24, tokenizer=tok,
                      latent_slots=4 if preset_form else 1, slot_tokens=6, decoding=decoding)
    # the preset's prior after its prior stage: a transformer over the latent slots
    prior = (SlotTransformer(8, slots=4, hidden=16, depth=1, heads=2, time_dim=16) if preset_form
             else MLPSkipNet(8, hidden=32, depth=2, time_dim=16))
    model = DiLED(codec, prior, LatentDiffusion("constant", 100), w=1.0)
    path = train(model, codec.collate(SENTENCES), steps=20).save_pretrained(tmp_path / "bert")
    swap_model(config, path)
    assert health_when(service, lambda h: h["model_dir"] == str(path))["decoding"] == decoding
    direct = DiLED.from_pretrained(path).eval()
    client = DiLEDClient(service, api_key="")
    torch.testing.assert_close(torch.tensor(client.encode(SENTENCES[:2])), direct.encode(SENTENCES[:2]))
    assert client.reconstruct(SENTENCES[:3]) == direct.reconstruct(SENTENCES[:3])
    assert client.generate(n=2, steps=5, seed=0) == direct.generate(2, steps=5, seed=0)
    if decoding:  # the default is the saved beam search, and a request can still ask for greedy
        z = direct.sample_latents(2, steps=5, generator=torch.Generator().manual_seed(0))
        assert client.generate(n=2, steps=5, seed=0) == direct.codec.decode(z, **decoding)
        assert client.generate(n=2, steps=5, seed=0, strategy="greedy") == direct.codec.decode(z, strategy="greedy")
    assert client.interpolate(SENTENCES[0], SENTENCES[1], num=3, steps=5) == \
        direct.interpolate(SENTENCES[0], SENTENCES[1], num=3, steps=5)
    swap_model(config, models[0])
    assert health_when(service, lambda h: h["model_dir"] == str(models[0]))["codec"] == "text"


def test_guided_generate_and_edit(service, models, tmp_path):
    """A model whose prior knows classes, and a guide of a further label beside it: /healthz lists both labels'
    classes, /generate with a condition and /edit give the library's answers, composed conditions too (and so
    does the CLI, local and remote), and a condition the model does not know, or two of one label, is a 422
    that names the known ones."""
    import subprocess
    import sys

    from diled import VectorCodec
    from diled.guidance import LatentClassifier, save_guide

    service, config = service
    torch.manual_seed(0)
    model = DiLED(VectorCodec(2, 2, hidden=16, depth=1),
                  MLPSkipNet(2, hidden=16, depth=2, time_dim=8, classes=["low", "high"]),
                  LatentDiffusion("constant", 20), w=1.0, prior_temperature=0.6, sampling_eta=1.0).eval()
    path = model.save_pretrained(tmp_path / "conditional")
    save_guide(LatentClassifier(2, ["west", "east"], hidden=16, depth=1, time_dim=8), path, label="side")
    model = DiLED.from_pretrained(path)
    swap_model(config, path)
    health = health_when(service, lambda h: h["model_dir"] == str(path))
    assert health["conditions"] == ["low", "high", "west", "east"]
    assert health["prior_temperature"] == 0.6 and health["eta"] == 1.0
    client = DiLEDClient(service, api_key="")
    # the model's own prior temperature and eta by default (the batched path), or the request's
    assert client.generate(n=3, steps=5, seed=4) == model.generate(3, steps=5, seed=4)
    assert client.generate(n=3, steps=5, seed=4, prior_temperature=1.0) == \
        model.generate(3, steps=5, seed=4, prior_temperature=1.0) != model.generate(3, steps=5, seed=4)
    assert client.generate(n=3, steps=5, seed=4, eta=0.0) == \
        model.generate(3, steps=5, seed=4, eta=0.0) != model.generate(3, steps=5, seed=4)
    for bad in ({"prior_temperature": 2.5}, {"eta": 1.5}, {"eta": -0.1}):
        r = post(service, "/generate", {"n": 1, **bad})
        assert r.status_code == 422 and next(iter(bad)) in r.text, r.text
    # guided, the same numbers up to the last bits (in another process the BLAS may sum the guidance mix in
    # another order: on an AMD EPYC one number differed by 1.5e-8)
    close = lambda a, b: torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-5, atol=1e-6)  # noqa: E731
    close(client.generate(n=3, steps=5, seed=1, condition="high", guidance_scale=2.0),
          model.generate(3, steps=5, seed=1, condition="high", guidance_scale=2.0))
    close(client.edit([[1.0, 2.0], [0.0, -1.0]], "low", strength=0.6, steps=5),
          model.edit([[1.0, 2.0], [0.0, -1.0]], "low", strength=0.6, guidance_scale=3.0, steps=5))
    # composed: a class of the prior (classifier-free) and one of the further guide's, a scale each
    composed = model.generate(3, steps=5, seed=1, condition=["high", "east"], guidance_scale=[2.0, 1.5])
    close(client.generate(n=3, steps=5, seed=1, condition=["high", "east"], guidance_scale=[2.0, 1.5]), composed)
    close(client.edit([[1.0, 2.0]], ["low", "west"], strength=0.6, steps=5),
          model.edit([[1.0, 2.0]], ["low", "west"], strength=0.6, guidance_scale=3.0, steps=5))
    for where in (("--model", str(path)), ("--url", service)):
        out = subprocess.run([sys.executable, "-m", "diled_platform", "generate", *where, "-n", "3", "--steps", "5",
                              "--seed", "1", "--condition", "high", "--condition", "east", "--guidance", "2", "--guidance", "1.5"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        close([json.loads(line)["output"] for line in out.stdout.splitlines()], composed)
    for path_, body in (("/generate", {"n": 1, "condition": "sideways"}),
                        ("/edit", {"inputs": [[1.0, 2.0]], "condition": "sideways"})):
        r = post(service, path_, body)
        assert r.status_code == 422 and "this model knows ['low', 'high', 'west', 'east']" in r.json()["detail"], r.text
    r = post(service, "/generate", {"n": 1, "condition": ["low", "high"]})
    assert r.status_code == 422 and "'low' and 'high' are of the same label" in r.json()["detail"], r.text
    r = post(service, "/generate", {"n": 1, "condition": ["low", "east"], "guidance_scale": [1.0, 2.0, 3.0]})
    assert r.status_code == 422 and "one per condition (2)" in r.json()["detail"], r.text
    assert post(service, "/edit", {"inputs": [[1.0, 2.0]], "condition": "low", "strength": 1.5}).status_code == 422
    r = post(service, "/generate", {"n": 1, "condition": ">= 1.5"})   # a value condition, and no value guide
    assert r.status_code == 422 and "needs a value guide" in r.json()["detail"], r.text
    swap_model(config, models[0])
    health = health_when(service, lambda h: h["model_dir"] == str(models[0]))
    assert health["conditions"] == []  # the text model's prior has no classes and it has no guide
    r = post(service, "/generate", {"n": 1, "condition": "positive"})
    assert r.status_code == 422 and "has no classes" in r.json()["detail"]


def test_a_replica_killed_under_load_is_replaced_and_no_request_hangs(service, models):
    """SIGKILL of the only replica while 4 clients keep posting: every request ends (a 200, or for those in
    flight a 5xx or a dropped connection; a request that waited more than 30 s would raise here), Serve
    starts a new replica and the endpoint answers again."""
    service, config = service
    health_when(service, lambda h: h["codec"] == "text")
    pid = requests.get(service + "/healthz", timeout=30).json()["pid"]
    codes = kill_under_load(service, pid, 8.0)
    assert 200 in codes and codes.count("dropped") <= 4, codes   # at most the 4 in flight are cut off
    assert all(c in (200, "dropped") or 500 <= c < 600 for c in codes), set(codes)
    health = health_when(service, lambda h: h["pid"] != pid, timeout=120)
    assert health["pid"] != pid and health["codec"] == "text"
    assert post(service, "/encode", {"inputs": SENTENCES[:2]}).status_code == 200


def test_a_bad_deploy_is_refused_and_the_running_version_keeps_answering(service, models):
    """The same Serve config deployed again with max_batch_size 0, while a client keeps posting: Serve's
    build of the application refuses it (the value named), no running replica is touched, every request
    gets a 200; a good deploy afterwards still goes through in place."""
    service, config = service
    deploy(config)
    health = health_when(service, lambda h: h["codec"] == "text")
    codes, stop = [], threading.Event()

    def client():
        while not stop.is_set():
            codes.append(post(service, "/generate", {"n": 2, "steps": 3, "seed": 0}).status_code)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        for key, value in (("max_batch_size", 0), ("batch_wait_timeout_s", -1.0)):
            bad = json.loads(json.dumps(config))
            bad["applications"][0]["args"][key] = value
            with pytest.raises(RuntimeError, match=rf"{key} must be .*got {value}"):
                deploy(bad)
        time.sleep(3)  # the refused version is not rolled out later either
    finally:
        stop.set()
        thread.join()
    assert len(codes) >= 3 and set(codes) == {200}, codes
    again = requests.get(service + "/healthz", timeout=30).json()
    assert again["pid"] == health["pid"] and again["model_dir"] == health["model_dir"]
    # a user_config written into the file by hand is checked before Serve is asked
    hand = json.loads(json.dumps(config))
    hand["applications"][0]["deployments"][0]["user_config"] = {"model_dir": str(models[0]), "max_batch_size": 0}
    with pytest.raises(ValueError, match="max_batch_size must be an integer >= 1, got 0"):
        deploy(hand)
    deploy(config)
    assert requests.get(service + "/healthz", timeout=30).json()["pid"] == health["pid"]


def test_api_key_is_required_when_configured(service, models):
    service, config = service
    key = "s3cret-token-for-tests"
    deploy(config_for(models[1], config["http_options"]["port"], api_key_sha256=key_digest(key)))
    health_when(service, lambda h: h["codec"] == "vector")
    assert requests.get(service + "/healthz", timeout=30).status_code == 200  # probes need no key
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
        r = requests.post(service + "/encode", json={"inputs": [[0.0, 1.0]]}, headers=headers, timeout=30)
        assert r.status_code == 401 and "API key" in r.text
    assert DiLEDClient(service, api_key=key).encode([[0.0, 1.0]])
    with pytest.raises(DiLEDServiceError) as err:
        DiLEDClient(service, api_key="wrong").generate(n=1)
    assert err.value.status == 401


# ----------------------------------------------------------------------------- no Ray needed
def test_api_key_sources(tmp_path):
    assert api_key_from_env({}) is None
    assert api_key_from_env({"DILED_API_KEY": " abc "}) == "abc"
    (tmp_path / "key").write_text("from-file\n")
    assert api_key_from_env({"DILED_API_KEY_FILE": str(tmp_path / "key"), "DILED_API_KEY": "x"}) == "from-file"
    with pytest.raises(ValueError, match="empty"):
        api_key_from_env({"DILED_API_KEY": ""})
    with pytest.raises(ValueError, match="no such file"):
        api_key_from_env({"DILED_API_KEY_FILE": str(tmp_path / "missing")})


def test_binding_beyond_loopback_needs_a_key():
    check_bind("127.0.0.1", has_key=False)
    check_bind("0.0.0.0", has_key=True)
    check_bind("0.0.0.0", has_key=False, insecure_no_auth=True)
    with pytest.raises(ValueError, match="without an API key"):
        check_bind("0.0.0.0", has_key=False)


def test_a_user_config_is_checked_before_serve_sees_it(tmp_path, models):
    from diled_platform.serving.app import check_user_config

    check_user_config({"model_dir": str(models[0]), "max_batch_size": 4, "batch_wait_timeout_s": 0.01,
                       "api_key_sha256": key_digest("k")})
    for config, message in (([], "must be a mapping"), ({"max_batch": 4}, "unknown user_config key"),
                            ({"max_batch_size": 0}, "max_batch_size must be an integer >= 1, got 0"),
                            ({"max_batch_size": True}, "got True"),
                            ({"batch_wait_timeout_s": -1}, "batch_wait_timeout_s"),
                            ({"api_key_sha256": "s3cret"}, "64 lowercase hex digits")):
        with pytest.raises(ValueError, match=message):
            check_user_config(config)
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        check_user_config({"model_dir": str(tmp_path)})
    with pytest.raises(ValueError, match="unknown setting"):
        update_in_place({}, max_batch=4)  # refused before anything is deployed


def test_app_building_checks(tmp_path, models):
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        build_app(tmp_path)
    with pytest.raises(ValueError, match="model_dir"):
        app_builder({})
    with pytest.raises(ValueError, match="unknown args"):
        app_builder({"model_dir": str(models[0]), "api_key": "abc"})
    with pytest.raises(ValueError, match="min_replicas"):
        build_app(models[0], min_replicas=3, max_replicas=2)
    for threads in (0, -2, 1.5):
        with pytest.raises(ValueError, match=f"torch_threads must be an int >= 1.*got {threads}"):
            build_app(models[0], torch_threads=threads)


def test_serve_job_refuses_a_public_address_without_a_key(models):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DILED_API_KEY")}
    out = subprocess.run([sys.executable, str(root / "jobs" / "serve.py"), "--model", str(models[0]),
                          "--host", "0.0.0.0"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "without an API key" in out.stderr
    out = subprocess.run([sys.executable, str(root / "jobs" / "serve.py"), "--model", str(models[0].parent)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "neither a save_pretrained folder" in out.stderr


def test_judged_editing_gives_the_same_edits_through_serve_the_cli_and_python(service, models, tmp_path):
    """A text model with a sentiment guide and a judge saved beside it: /healthz names the judge's classes,
    and a judged /edit, the CLI's `edit --judged` (local and against the service) and
    ``diled.editing.edit_judged`` give the same edits; without a judge, or decoding by sampling, a 4xx."""
    import shutil
    import subprocess
    import sys

    from diled.editing import edit_judged, load_judge, save_judge
    from diled.guidance import LatentClassifier, save_guide
    from diled.metrics.sentiment import TfidfSentiment

    service, config = service
    guided, judged = tmp_path / "guided", tmp_path / "judged"
    shutil.copytree(models[0], guided)
    torch.manual_seed(0)
    save_guide(LatentClassifier(8, ["negative", "positive"], hidden=16, depth=1, time_dim=8), guided)
    shutil.copytree(guided, judged)
    moods = ["negative", "positive", "positive", "negative", "negative", "positive", "negative", "positive"]
    save_judge(TfidfSentiment().fit(SENTENCES * 2, moods * 2), judged)
    inputs = [SENTENCES[0], SENTENCES[4]]
    model = DiLED.from_pretrained(judged)
    expected = edit_judged(model, inputs, "positive", load_judge(judged).probability, accept=0.6, min_similarity=2.0,
                           steps=5)  # the CLI's and Serve's default floor for text
    cli = lambda *a: subprocess.run([sys.executable, "-m", "diled_platform", "edit", "--condition", "positive",  # noqa: E731
                                     "--judged", "--accept", "0.6", "--steps", "5", *a, *inputs],
                                    capture_output=True, text=True, timeout=300)
    out = cli("--model", str(judged))
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["output"] for line in out.stdout.splitlines()] == expected.outputs
    swap_model(config, judged)
    health = health_when(service, lambda h: h["model_dir"] == str(judged))
    assert health["judge"] == ["negative", "positive"] and health["conditions"] == ["negative", "positive"]
    client = DiLEDClient(service, api_key="")
    assert client.edit(inputs, "positive", judged=True, accept=0.6, steps=5) == expected.outputs
    out = cli("--url", service)
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["output"] for line in out.stdout.splitlines()] == expected.outputs
    r = post(service, "/edit", {"inputs": inputs, "condition": "positive", "judged": True, "strategy": "sample"})
    assert r.status_code == 422 and "decodes each candidate deterministically" in r.json()["detail"], r.text
    r = post(service, "/edit", {"inputs": inputs, "condition": "positive", "judged": True, "accept": 1.0})
    assert r.status_code == 422 and "accept" in r.text, r.text
    swap_model(config, guided)  # a guide but no judge
    health = health_when(service, lambda h: h["model_dir"] == str(guided))
    assert health["judge"] is None
    r = post(service, "/edit", {"inputs": inputs, "condition": "positive", "judged": True})
    assert r.status_code == 422 and "no judge is saved beside this model" in r.json()["detail"], r.text
    out = cli("--model", str(guided))
    assert out.returncode != 0 and "no judge is saved beside this model" in out.stderr
    swap_model(config, models[0])
    health_when(service, lambda h: h["model_dir"] == str(models[0]))

"""A data type that the platform has never seen, added as a user would: a codec file, a data-type file and a
preset in a folder of their own (``plugins/``, put on PYTHONPATH here; nothing in the repository's shared
files names it), then trained, compared with a baseline, evaluated and served through the generic jobs."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = Path(__file__).resolve().parent / "plugins"
PRESET = str(PLUGINS / "sine-cpu.yaml")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGINS), env.get("PYTHONPATH")]))
    return env


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, env=_env(), cwd=cwd)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_plugin_is_not_part_of_the_platform():
    import diled.codecs
    import diled_platform.datatypes as datatypes

    assert "sine" not in diled.codecs.builtin_codec_names() and "sine" not in datatypes.builtin_names()
    tracked = subprocess.run(["git", "grep", "-l", "sine_data\\|sine_codec", "--", "diled", "platform", "jobs"],
                             cwd=ROOT, capture_output=True, text=True).stdout
    assert tracked == ""


def test_a_new_data_type_trains_evaluates_and_serves_through_the_generic_jobs(tmp_path):
    # train, with the autoencoder baseline beside it
    out = _run([str(ROOT / "jobs/train.py"), "--preset", PRESET, f"--run.storage_path={tmp_path}",
                "--compare", "autoencoder"], tmp_path)
    run = tmp_path / "sine"
    metrics = json.loads((run / "eval.json").read_text())
    assert metrics["reconstruction_mse"] < metrics["data_variance"]  # it learnt to reconstruct
    assert 0 <= metrics["frequency_histogram_l1"] <= 2
    assert (run / "samples.csv").is_file() and (tmp_path / "sine-autoencoder" / "eval.json").is_file()
    assert "| model | rec. MSE ↓ |" in (run / "comparison.md").read_text() and "| autoencoder |" in out.stdout
    saved = json.loads((run / "model" / "config.json").read_text())
    assert saved["codec"]["name"] == "sine_codec:SineCodec"  # found again by import path in any process

    # the run is tracked in the local MLflow store beside the runs: config, metrics over steps, report files
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tracked,) = client.search_runs([client.get_experiment_by_name("diled").experiment_id],
                                    filter_string="attributes.run_name = 'sine'")
    assert tracked.data.params["data.type"] == "sine_data:SineData" and tracked.data.params["optim.max_steps"] == "120"
    assert [m.step for m in client.get_metric_history(tracked.info.run_id, "train_loss")] == [40, 80, 120]
    assert [m.step for m in client.get_metric_history(tracked.info.run_id, "val_rec")] == [60, 120]
    assert tracked.data.metrics["eval_reconstruction_mse"] == pytest.approx(metrics["reconstruction_mse"])
    assert {"eval.json", "samples.csv"} <= {a.path for a in client.list_artifacts(tracked.info.run_id)}

    # the comparison harness, one seed
    _run([str(ROOT / "jobs/evaluate.py"), "--preset", PRESET, "--models", "diled", "autoencoder", "--seeds", "0",
          "--steps", "60", "--out", str(tmp_path / "eval")], tmp_path)
    table = (tmp_path / "eval" / "table.md").read_text()
    assert "frequency histogram L1" in table and "| autoencoder |" in table

    # the Serve app on the trained model
    port = _free_port()
    serve = subprocess.Popen([sys.executable, str(ROOT / "jobs/serve.py"), "--model", str(run), "--port", str(port)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert serve.poll() is None, serve.stdout.read()[-4000:]
            try:
                health = requests.get(url + "/healthz", timeout=5).json()
                if health.get("status") == "ok":
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the Serve app did not come up"
            time.sleep(1)
        assert health["input_kind"] == "arrays"
        wave = np.sin(2 * np.pi * 2 * np.arange(16) / 16).tolist()  # 2 cycles per window
        z = requests.post(url + "/encode", json={"inputs": [wave]}, timeout=60).json()["latents"]
        assert len(z) == 1 and len(z[0]) == 4
        (recon,) = requests.post(url + "/reconstruct", json={"inputs": [wave]}, timeout=60).json()["outputs"]
        assert len(recon) == 16
        bad = requests.post(url + "/encode", json={"inputs": [wave[:5]]}, timeout=60)
        assert bad.status_code == 422 and "do not have 16 numbers" in bad.text
        samples = requests.post(url + "/generate", json={"n": 3, "steps": 10}, timeout=60).json()["outputs"]
        assert len(samples) == 3 and all(len(s) == 16 for s in samples)
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()

"""`ray job submit` against a local head started by cluster/local_head.sh: a good job succeeds, a bad one
is reported as failed. Uses its own ports; `stop` runs `ray stop`, so no other Ray may run meanwhile
(the in-process Ray of the platform tests is shut down per module)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def head():
    env = {**os.environ, "RAY_HEAD_PORT": "6399", "RAY_DASHBOARD_PORT": "8299", "RAY_NUM_CPUS": "2",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["bash", str(ROOT / "cluster/local_head.sh"), "start"], env=env, check=True,
                   capture_output=True, timeout=120)
    try:
        yield {**env, "RAY_ADDRESS": "http://127.0.0.1:8299"}
    finally:
        subprocess.run(["bash", str(ROOT / "cluster/local_head.sh"), "stop"], env=env, capture_output=True,
                       timeout=120)


def submit(env, *args):
    ray = str(Path(sys.executable).parent / "ray")
    return subprocess.run([ray, "job", "submit", "--working-dir", str(ROOT), "--", "python",
                           "jobs/train_vectors.py", *args], env=env, capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


def test_submitted_job_runs_to_completion(head, tmp_path):
    out = submit(head, "--optim.max_steps=40", "--run.checkpoint_every=20", "--run.name=submitted",
                 f"--run.storage_path={tmp_path}", "--data.n_train=2000")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "succeeded" in out.stdout + out.stderr
    assert (tmp_path / "submitted" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "submitted" / "samples.png").is_file()


def test_failing_job_reports_failure(head, tmp_path):
    out = submit(head, "--optim.lrr=1", f"--run.storage_path={tmp_path}")
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "failed" in text.lower() and "optim.lrr" in text

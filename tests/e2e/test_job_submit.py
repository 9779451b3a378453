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
    """``ray job submit`` of jobs/train_vectors.py; ``args`` before a "--" are options of the submit itself."""
    ray = str(Path(sys.executable).parent / "ray")
    own, job = (args[:args.index("--")], args[args.index("--") + 1:]) if "--" in args else ((), args)
    return subprocess.run([ray, "job", "submit", "--working-dir", str(ROOT), *own, "--", "python",
                           "jobs/train_vectors.py", *job], env=env, capture_output=True, text=True,
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


def test_a_submitted_run_survives_ray_stop_and_resumes_by_name(head, tmp_path):
    """Under `ray job submit` a relative run.storage_path would live in Ray's unpacked copy of the working
    directory; the job writes to DILED_RUNS (else ~/diled) instead and prints where. After `ray stop` and a
    new `ray start` the folder is there, and the same run name resumes from its last checkpoint."""
    import json
    import re

    runs = tmp_path / "runs"
    env_json = json.dumps({"env_vars": {"DILED_RUNS": str(runs)}})
    args = ["--run.name=durable", "--run.checkpoint_every=20", "--data.n_train=2000", "--run.report=false"]
    first = submit(head, "--runtime-env-json", env_json, "--", *args, "--optim.max_steps=40")
    text = first.stdout + first.stderr
    assert first.returncode == 0, text[-3000:]
    printed = Path(re.search(r"run folder: (\S+)", text).group(1))
    assert printed == runs / "runs" / "durable", printed  # the default run.storage_path "runs", under DILED_RUNS

    local_head = ["bash", str(ROOT / "cluster/local_head.sh")]
    subprocess.run([*local_head, "stop"], env=head, check=True, capture_output=True, timeout=120)
    checkpoints = sorted(p.name for p in printed.glob("checkpoint_*") if (p / "train_state.json").is_file())
    assert checkpoints and (printed / "model" / "model.safetensors").is_file(), list(printed.iterdir())
    subprocess.run([*local_head, "start"], env=head, check=True, capture_output=True, timeout=120)

    second = submit(head, "--runtime-env-json", env_json, "--", *args, "--optim.max_steps=60")
    text = second.stdout + second.stderr
    assert second.returncode == 0, text[-3000:]
    assert "resuming at step 40" in text, text[-3000:]
    steps = [json.loads((p / "train_state.json").read_text())["step"] for p in printed.glob("checkpoint_*")
             if (p / "train_state.json").is_file()]
    assert max(steps) == 60, steps

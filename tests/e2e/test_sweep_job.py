"""jobs/sweep.py interrupted with Ctrl-C and run again: the sweep resumes instead of starting over."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.mark.parametrize("objectives", [{"metric": "val_nelbo", "mode": "min"},
                                        {"metric": ["val_rec", "val_prior_fd"], "mode": ["min", "min"]}],
                         ids=["one-metric", "pareto"])
def test_interrupted_sweep_resumes(tmp_path, objectives):
    sweep = {"name": "resume", "preset": "vector-cpu", "num_samples": 5, "seed": 0, "max_concurrent_trials": 1,
             **objectives,
             "overrides": {"optim.max_steps": 160, "run.checkpoint_every": 40, "scaling.num_workers": 1,
                           "data.n_train": 2000, "run.val_batches": 2},
             "space": {"model.w": {"loguniform": [0.1, 10.0]}, "optim.lr": {"loguniform": [3.0e-4, 3.0e-3]}}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    cmd = [sys.executable, str(ROOT / "jobs" / "sweep.py"), "--sweep", str(tmp_path / "sweep.yaml"),
           "--storage-path", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    trials = tmp_path / "resume" / "trials"

    def finished():  # trials with a checkpoint at max_steps
        done = set()
        for p in trials.glob("*/checkpoint_*/train_state.json"):
            try:
                if json.loads(p.read_text())["step"] == 160:
                    done.add(p.parent.parent.name)
            except (OSError, ValueError):  # being written or rotated away right now
                pass
        return done

    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and not finished():
        time.sleep(0.5)  # interrupt once the first trial has finished
    time.sleep(1.0)
    finished_before = finished()
    first.send_signal(signal.SIGINT)
    out1, _ = first.communicate(timeout=300)
    assert first.returncode == 130, out1[-3000:]
    assert "run the same command again to resume" in out1
    assert finished_before, out1[-3000:]
    stamps = {p: p.stat().st_mtime for t in finished_before for p in (trials / t).glob("checkpoint_*")}

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    ids = {p.name for p in trials.iterdir()}
    assert len(ids) == 5 and finished_before <= ids
    # the trials that had finished were not trained again
    assert {p: p.stat().st_mtime for p in stamps} == stamps
    rows = (tmp_path / "resume" / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 5
    assert (tmp_path / "resume" / "best_model" / "model.safetensors").is_file()
    if isinstance(objectives["metric"], list):
        assert "Pareto front (val_rec, val_prior_fd):" in second.stdout
        assert (tmp_path / "resume" / "pareto.png").is_file() and (tmp_path / "resume" / "sensitivity.png").is_file()

"""Faults injected from outside the training function: a training worker process SIGKILLed mid-run by the
test, and the newest checkpoint's weights truncated on disk. The run resumes from the last good
checkpoint and ends with the same number of steps, or stops with an error that names the bad file.

None of them can hang the suite: every wait has a deadline (a registered checkpoint within
``COMMIT_WAIT_S``, the job's end within ``FINISH_WAIT_S``; together below the tests' pytest timeout),
and whatever happens, each job's whole process group (its driver, embedded Ray and workers) is killed at
the test's end (the ``jobs`` fixture) and a simulated cluster is shut down, so nothing outlives a test.
Ray Train itself would wait: a worker group that cannot start for want of resources is retried without
end (``FailureConfig.controller_failure_limit`` -1, what a cluster whose autoscaler adds nodes wants), so
the bound is the test's deadlines and the kill."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STEPS = 600
COMMIT_WAIT_S, FINISH_WAIT_S = 300, 450   # 750 s in all, below the 900 s timeout


@pytest.fixture
def jobs():
    """Start jobs with ``jobs(tmp_path, name, ...)``; each one's process group is killed at the test's end."""
    started = []

    def start(*args, **kwargs):
        started.append(_job(*args, **kwargs))
        return started[-1]

    yield start
    for job in started:
        if job.poll() is None:
            try:
                os.killpg(job.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            job.wait(timeout=30)


def _wait_for_commit(job, run: Path) -> None:
    """Until Ray Train has registered a checkpoint of ``run``; fails (not waits) after ``COMMIT_WAIT_S``."""
    deadline = time.monotonic() + COMMIT_WAIT_S
    while not _committed(run):
        assert job.poll() is None and time.monotonic() < deadline, _finish(job, 60)[-3000:]
        time.sleep(0.2)


def _job(tmp_path, name, *extra, address: str | None = None):
    """jobs/train_vectors.py in a process of its own: an embedded Ray, or the cluster at ``address``."""
    args = [sys.executable, str(ROOT / "jobs/train_vectors.py"), f"--run.name={name}", f"--run.storage_path={tmp_path}",
            f"--optim.max_steps={STEPS}", "--run.checkpoint_every=100", "--run.log_every=100", "--run.report=false",
            "--model.prior_hidden=64", "--model.prior_depth=2", *extra]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # an embedded Ray of its own
    if address:
        env["RAY_ADDRESS"] = address
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
                            start_new_session=True)


def _checkpoints(run: Path) -> list[Path]:
    return sorted(p for p in run.glob("checkpoint_*") if (p / "train_state.json").is_file())


def _committed(run: Path) -> list[str]:
    """The checkpoints Ray Train has registered (every rank reported them). A checkpoint folder can be on
    disk before that: a worker killed in between leaves it unregistered, and the run restarts from the
    one before."""
    try:
        snapshot = json.loads((run / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):  # not written yet, or being written
        return []
    return [c["checkpoint_dir_name"] for c in snapshot.get("checkpoint_results", [])]


def _train_workers(job: subprocess.Popen) -> list[psutil.Process]:
    """This job's Ray Train worker processes (descendants of its driver, so not another test's Ray)."""
    found = []
    for proc in psutil.Process(job.pid).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _finish(job, timeout=FINISH_WAIT_S) -> str:
    try:
        out, _ = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        raise
    return out


def test_a_training_worker_killed_from_outside_is_replaced_and_the_run_resumes(tmp_path, jobs):
    job = jobs(tmp_path, "killed")
    run = tmp_path / "killed"
    _wait_for_commit(job, run)  # kill once a checkpoint is registered, before the run ends
    workers = _train_workers(job)
    assert workers, "no RayTrainWorker process under the job"
    workers[-1].send_signal(signal.SIGKILL)
    out = _finish(job)
    assert job.returncode == 0, out[-4000:]
    states = [json.loads((c / "train_state.json").read_text()) for c in _checkpoints(run)]
    assert max(s["step"] for s in states) == STEPS
    assert "resuming at step" in out, out[-4000:]  # the replacement group started from a checkpoint
    assert json.loads((run / "metrics.json").read_text())["step"] == STEPS


def test_a_truncated_checkpoint_is_named_and_an_earlier_good_one_is_not_lost(tmp_path, jobs):
    out = _finish(jobs(tmp_path, "cut", "--optim.max_steps=200", "--run.num_to_keep=2"))
    run = tmp_path / "cut"
    good, newest = _checkpoints(run)[-2:]
    shards = sorted(newest.rglob("*model_states.pt")) + sorted(newest.rglob("*optim_states.pt"))
    assert shards, sorted(str(p.relative_to(newest)) for p in newest.rglob("*"))
    bad = shards[0]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    job = jobs(tmp_path, "cut", "--optim.max_steps=300")
    out = _finish(job)
    assert job.returncode != 0, out[-3000:]
    # the error names the file that cannot be read
    named = [line for line in out.splitlines() if "cannot resume from checkpoint" in line and bad.name in line]
    assert named and "cannot be read" in named[0], out[-4000:]
    assert (good / "train_state.json").is_file() and json.loads((good / "train_state.json").read_text())["step"] == 100


def test_a_whole_node_killed_mid_run_is_survived_once_a_node_replaces_it(tmp_path, jobs):
    """Two simulated worker nodes (``ray.cluster_utils.Cluster``, one training worker each) and a CPU-less
    head; once a checkpoint is registered the test adds a fresh node and kills one worker node outright (its
    raylet and every process on it). Ray Train restarts the worker group on the new node and the run
    resumes from the last registered checkpoint to the same final step."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        job = jobs(tmp_path, "node", "--scaling.num_workers=2", "--scaling.cpus_per_worker=0.9",
                   address=cluster.address)
        run = tmp_path / "node"
        _wait_for_commit(job, run)
        registered = max(json.loads((run / name / "train_state.json").read_text())["step"] for name in _committed(run))
        # the replacement joins first (a spare node, or the autoscaler's), then the node dies outright: the
        # restarted worker group has somewhere to go at once. (Added after the kill, the restart hung once in
        # a full-suite run waiting for resources; alone it passed.)
        cluster.add_node(num_cpus=1)
        cluster.remove_node(nodes[1], allow_graceful=False)
        out = _finish(job)
        assert job.returncode == 0, out[-4000:]
        resumed = [int(m) for m in re.findall(r"resuming at step (\d+)", out)]
        assert resumed, out[-4000:]
        assert resumed[0] >= registered, (resumed, registered)  # no registered checkpoint was lost
        assert json.loads((run / "metrics.json").read_text())["step"] == STEPS
    finally:
        cluster.shutdown()

"""The files of cluster/ parse, point at entry points that exist, and keep the job API private."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"


def load_all(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def entry_scripts(command: str) -> list[str]:
    return [w for w in shlex.split(command) if w.endswith(".py")]


@pytest.mark.parametrize("path", sorted(CLUSTER.rglob("*.yaml")), ids=lambda p: p.name)
def test_yaml_parses(path):
    assert load_all(path)


def test_launcher_keeps_the_dashboard_on_loopback():
    cfg = load_all(CLUSTER / "ray-cluster.gpu.yaml")[0]
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert cfg["head_node_type"] in cfg["available_node_types"]
    # the project is installed on every node from the mounted repository
    assert any("-e /home/ubuntu/diled" in c for c in cfg["setup_commands"])


def test_kuberay_manifests():
    cluster = load_all(CLUSTER / "kuberay" / "raycluster.yaml")[0]
    job = load_all(CLUSTER / "kuberay" / "rayjob.yaml")[0]
    assert cluster["kind"] == "RayCluster" and job["kind"] == "RayJob"
    for spec in (cluster["spec"], job["spec"]["rayClusterSpec"]):
        assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"  # not exposed beyond the cluster
        assert spec["rayVersion"] == "2.60.0"
    scripts = entry_scripts(job["spec"]["entrypoint"])
    assert scripts and all((ROOT / s).is_file() for s in scripts), scripts
    policy = load_all(CLUSTER / "kuberay" / "networkpolicy.yaml")[0]
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["ingress"] == [{"from": [{"podSelector": {}}]}]


def test_documented_commands_reference_existing_scripts():
    for path in [*CLUSTER.rglob("*.yaml"), CLUSTER / "local_head.sh", CLUSTER / "Dockerfile"]:
        for script in re.findall(r"\b(jobs/[\w/]+\.py)", path.read_text()):
            assert (ROOT / script).is_file(), f"{path.name} names {script}, which does not exist"


def test_local_head_script_binds_loopback_only():
    text = (CLUSTER / "local_head.sh").read_text()
    assert "--dashboard-host=127.0.0.1" in text and "0.0.0.0" not in text


def test_rayservice_serves_the_app_with_a_key_from_a_secret():
    from ray.serve.schema import ServeDeploySchema

    svc = load_all(CLUSTER / "kuberay" / "rayservice.yaml")[0]
    assert svc["kind"] == "RayService" and svc["spec"]["rayClusterConfig"]["rayVersion"] == "2.60.0"
    config = ServeDeploySchema.model_validate(yaml.safe_load(svc["spec"]["serveConfigV2"]))
    app = config.applications[0]
    assert app.import_path == "diled_platform.serve:app_builder" and "model_dir" in app.args
    # every setting in args, which the app checks when Serve builds it; none passed to replicas unchecked
    assert set(app.args) <= {"model_dir", "max_batch_size", "batch_wait_timeout_s"}
    assert "user_config" not in app.deployments[0].model_dump(exclude_unset=True)
    # beyond loopback only with the key: every Ray container gets it from the Secret
    spec = svc["spec"]["rayClusterConfig"]
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for template in templates:
        env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
        assert "secretKeyRef" in env["DILED_API_KEY"]["valueFrom"]


def test_platform_serve_config_is_a_valid_serve_config():
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "platform" / "serve_config.yaml").read_text()))
    assert config.http_options.host == "127.0.0.1"  # no key in the file: loopback by default
    assert config.applications[0].import_path == "diled_platform.serve:app_builder"
    assert "user_config" not in config.applications[0].deployments[0].model_dump(exclude_unset=True)  # all in args

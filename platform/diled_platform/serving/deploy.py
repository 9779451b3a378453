"""Deploying the Serve app: the application for one model folder (``build_app``; ``app_builder`` for Serve
config files), the config of ``platform/serve_config.yaml`` for a model, declarative deploys and in-place
model swaps through ``user_config``, and the direct-ingress set-up (each replica serving HTTP itself)."""

import inspect
import json
from pathlib import Path
from typing import Any

from diled.persistence import check_pretrained_folder
from diled.checks import check_keys
from diled_platform.serving.app import USER_CONFIG_KEYS, DiLEDService, check_user_config


def build_app(model_dir: str | Path, *, api_key_sha256: str | None = None, max_batch_size: int = 16,
              batch_wait_timeout_s: float = 0.005, min_replicas: int = 1, max_replicas: int = 2,
              target_ongoing_requests: float = 4, num_cpus: float = 1.0, torch_threads: int | None = None):
    """The Serve application for one model folder (``serve.run(build_app(...))``). Every value is checked
    here, where Serve builds the application, so a deploy with a bad one fails before any running replica
    is touched (the running version keeps answering). The model folder, batch settings and key digest go
    to the replicas as ``user_config``, not as constructor arguments, so ``swap_model`` can change them in
    place; a deploy with changed ``args`` rolls out new replicas (each up before an old one stops)."""
    model_dir = check_pretrained_folder(model_dir)
    user_config = {"model_dir": str(model_dir), "max_batch_size": max_batch_size,
                   "batch_wait_timeout_s": batch_wait_timeout_s,
                   **({"api_key_sha256": api_key_sha256} if api_key_sha256 else {})}
    check_user_config(user_config)  # the replicas' checks, here where Serve builds the app
    if not 1 <= min_replicas <= max_replicas:
        raise ValueError(f"need 1 <= min_replicas <= max_replicas, got {min_replicas}, {max_replicas}")
    if torch_threads is not None and not (isinstance(torch_threads, int) and torch_threads >= 1):
        raise ValueError(f"torch_threads must be an int >= 1 (or unset: Ray's, 1 per CPU), got {torch_threads!r}")
    deployment = DiLEDService.options(
        ray_actor_options={"num_cpus": num_cpus},
        autoscaling_config={"min_replicas": min_replicas, "max_replicas": max_replicas,
                            "target_ongoing_requests": target_ongoing_requests,
                            "upscale_delay_s": 5, "downscale_delay_s": 30},
        user_config=user_config)
    return deployment.bind(torch_threads=torch_threads)


def app_builder(args: dict[str, Any]):
    """For Serve config files (``import_path: diled_platform.serve:app_builder``) and ``serve run``:
    ``args`` holds ``model_dir`` and optionally the other ``build_app`` keywords. Without
    ``api_key_sha256`` the key comes from the replicas' environment (``DILED_API_KEY`` / ``_FILE``)."""
    args = dict(args)
    if "model_dir" not in args:
        raise ValueError("the DiLED Serve application needs args.model_dir (a save_pretrained folder)")
    check_keys(args, inspect.signature(build_app).parameters, "args", "for the DiLED Serve application")
    return build_app(args.pop("model_dir"), **args)


# ----------------------------------------------------------------------------- config-file deployments
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "serve_config.yaml"


def serve_config(model_dir: str | Path, *, path: str | Path = DEFAULT_CONFIG, host: str | None = None,
                 port: int | None = None, api_key_sha256: str | None = None, **user_config) -> dict:
    """The Serve config of ``path`` (default ``platform/serve_config.yaml``) for ``model_dir``, with
    the HTTP address and the application's ``args`` (``max_batch_size``, ``batch_wait_timeout_s``) set.
    Every value lives in ``args``, which ``app_builder`` checks when Serve builds the application; a
    ``user_config`` of the file's deployment is moved into ``args`` (Serve would pass it to the replicas
    unchecked)."""
    import yaml

    model_dir = str(Path(model_dir).resolve())
    config = yaml.safe_load(Path(path).read_text())
    if host is not None:
        config.setdefault("http_options", {})["host"] = host
    if port is not None:
        config.setdefault("http_options", {})["port"] = port
    app_cfg = config["applications"][0]
    moved = {}
    for dep in app_cfg.get("deployments", []):
        moved.update(dep.pop("user_config", None) or {})
    app_cfg["args"] = {**app_cfg.get("args", {}), **moved, "model_dir": model_dir, **user_config}
    if api_key_sha256:  # the digest, never the key (rotate it in place with update_in_place)
        app_cfg["args"]["api_key_sha256"] = api_key_sha256
    return config


def deploy(config: dict, timeout_s: float = 180.0) -> None:
    """Deploy a Serve config the way ``serve run config.yaml`` / ``serve deploy`` do (declaratively). Needs
    ``ray.init`` first; blocks until this deploy's application is running, and raises RuntimeError with
    Serve's message when Serve refuses it (a bad ``args`` value fails the build: the running version
    stays and keeps answering), TimeoutError after ``timeout_s``. A deployment's ``user_config`` (not built
    by ``app_builder``) is checked here first: ValueError."""
    import time

    from ray.serve._private import api as serve_api  # Ray 2.60: what `serve run <config>` calls
    from ray.serve.schema import ApplicationStatus, ServeDeploySchema

    for app_cfg in config.get("applications", []):
        for dep in app_cfg.get("deployments", []):
            if dep.get("user_config") is not None:
                check_user_config(dep["user_config"])
    schema = ServeDeploySchema.model_validate(config)
    client = serve_api.serve_start(http_options=schema.http_options.model_dump(),
                                   proxy_location=schema.proxy_location)
    names = {app.name for app in schema.applications}
    before = {s.name: s.app_status.deployment_timestamp for s in client.list_serve_statuses()}
    client.deploy_apps(schema, _blocking=False)
    deadline = time.monotonic() + timeout_s
    while True:  # Serve's own blocking wait does not end on a failed deploy; this one does
        now = {s.name: s.app_status for s in client.list_serve_statuses() if s.name in names}
        fresh = {n: st for n, st in now.items() if st.deployment_timestamp != before.get(n)}
        failed = {n: st.message for n, st in fresh.items() if st.status == ApplicationStatus.DEPLOY_FAILED}
        if failed:
            raise RuntimeError("Serve refused the deploy: " + "; ".join(f"{n}: {m}" for n, m in failed.items()))
        if len(fresh) == len(names) and all(st.status == ApplicationStatus.RUNNING for st in fresh.values()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Serve application(s) {sorted(names)} not running after {timeout_s:.0f} s: "
                               + "; ".join(f"{n}: {st.status}" for n, st in now.items()))
        time.sleep(0.2)


def update_in_place(config: dict, **settings) -> dict:
    """Deploy ``config`` with some of the app's settings changed in place (``model_dir``, ``max_batch_size``,
    ``batch_wait_timeout_s``, ``api_key_sha256``): as the deployment's ``user_config`` (the settings from
    ``args`` with these over them), which ``deploy`` checks and Serve hands to the running replicas
    (``reconfigure``: no restart, no new replica). Returns the config deployed."""
    check_keys(settings, USER_CONFIG_KEYS, "setting(s)", "to update in place")
    if "model_dir" in settings:
        settings["model_dir"] = str(check_pretrained_folder(settings["model_dir"]))
    config = json.loads(json.dumps(config))
    app_cfg = config["applications"][0]
    dep = app_cfg["deployments"][0]
    current = {k: v for k, v in app_cfg.get("args", {}).items() if k in USER_CONFIG_KEYS}
    dep["user_config"] = {**current, **(dep.get("user_config") or {}), **settings}
    deploy(config)
    return config


def swap_model(config: dict, model_dir: str | Path) -> dict:
    """Point a deployed config at another model folder in place (``update_in_place``)."""
    return update_in_place(config, model_dir=model_dir)


# ----------------------------------------------------------------------------- direct ingress
DIRECT_PORT = 30000


def direct_ingress_env(port: int = DIRECT_PORT, drain_s: float = 2.0) -> dict[str, str]:
    """The environment in which every replica of the app also serves HTTP itself, on ``port`` (a second
    replica on the next free port up to ``port + 100``), beside the proxy: Ray Serve's throughput-optimized
    mode with direct ingress (Ray >= 2.56). A request to a replica's own port skips the proxy and its
    hand-off to the replica (the request body fetched back from the proxy by an actor call, per request),
    so the serving path costs under a millisecond per request instead of ~3: on a 2-core machine batched
    /encode served 412 requests/s this way against 160 through the proxy (benchmarks/README.md). The
    proxy on ``http_options.port`` still balances across replicas. The app is the same (API key, limits,
    errors); a replica binds the same host.

    It must be in the environment of Ray's processes when they start: set it before an embedded
    ``ray.init`` (``jobs/serve.py --direct`` does), or before ``ray start`` on every node of a cluster.
    ``drain_s``: how long a stopping replica keeps answering (Ray's default, 30 s, is for an external
    load balancer to notice)."""
    if not isinstance(port, int) or not 1024 <= port <= 65535 - 100:
        raise ValueError(f"direct ingress port {port!r}: give an int in 1024..65435 (replicas use port..port+100)")
    if not drain_s >= 0:
        raise ValueError(f"direct ingress drain_s {drain_s!r}: give seconds >= 0")
    return {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 100),
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(drain_s)}


def direct_urls(app_name: str = "diled", host: str | None = None, timeout_s: float = 60.0) -> list[str]:
    """The HTTP addresses of the app's replicas' own servers (direct ingress), waiting up to ``timeout_s``
    for the first; [] when the cluster was not started with ``direct_ingress_env`` (then the controller lists
    only the proxies). ``host`` replaces the node's IP in the addresses (a replica binds the app's
    ``http_options.host``, e.g. 127.0.0.1). Needs ``ray.init`` and a deployed app."""
    import time

    import ray
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    start = time.monotonic()
    while True:
        groups = ray.get(client._controller.get_target_groups.remote(app_name))
        # a replica's own server is listed under the app's name; the proxies under ""
        targets = [t for g in groups if g.app_name == app_name and str(g.protocol).upper().endswith("HTTP")
                   for t in g.targets]
        waited = time.monotonic() - start
        if targets or waited > timeout_s or (waited > 5 and not any(g.app_name == app_name for g in groups)):
            return sorted(f"http://{host or t.ip}:{t.port}" for t in targets)
        time.sleep(0.5)

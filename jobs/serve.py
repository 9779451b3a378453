"""Serve a trained DiLED model over HTTP (Ray Serve): encode, reconstruct, generate, interpolate.

    python jobs/serve.py --model runs/text-cpu/model            # embedded local Ray, 127.0.0.1:8000
    python jobs/serve.py --model runs/text-cpu                  # a run folder: its model/
    DILED_API_KEY=... python jobs/serve.py --model ... --host 0.0.0.0
    ray job submit --working-dir . -- python jobs/serve.py --model /shared/runs/x/model --detach
    python jobs/serve.py --model runs/text-cpu/model --direct   # + each replica's own port, 30000 on

Deploys platform/serve_config.yaml (or --config) with the model folder, address and batching filled
in. The API key, if any, comes from DILED_API_KEY or DILED_API_KEY_FILE, never from the command line;
without one the service binds to 127.0.0.1 only, and another address is refused unless
--insecure-no-auth. Runs until Ctrl-C, or with --detach deploys and leaves it running on the cluster.
Then: curl 127.0.0.1:8000/healthz, the OpenAPI page at /docs, or `diled generate --url ... -n 5`.

--direct: every replica also serves the same app on its own port (Ray Serve's direct ingress; printed at
start), skipping the proxy's per-request hand-off: several times the requests per second of a small model
(benchmarks/README.md). The proxy's address still balances across replicas. On an embedded Ray this job
sets it up; a cluster must be started with the environment of diled_platform.serving.deploy.direct_ingress_env.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import _path  # noqa: F401  (repository on sys.path)

from diled.persistence import has_weights
from diled_platform.training.runtime import init_ray
from diled_platform.serving.deploy import (DEFAULT_CONFIG, DIRECT_PORT, deploy, direct_ingress_env, direct_urls,
                                           serve_config)
from diled_platform.serving.http import api_key_from_env, check_bind, key_digest


def model_folder(path: str) -> Path:
    """A save_pretrained folder, or a run folder holding one in model/."""
    p = Path(path)
    for candidate in (p, p / "model"):
        if (candidate / "config.json").is_file() and has_weights(candidate):
            return candidate.resolve()
    raise SystemExit(f"error: {path} is neither a save_pretrained folder nor a run folder with model/ "
                     f"(train one first, e.g. python jobs/train_text.py)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="save_pretrained folder or run folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="Serve config YAML to start from")
    parser.add_argument("--min-replicas", type=int, default=None)
    parser.add_argument("--max-replicas", type=int, default=None)
    parser.add_argument("--num-cpus", type=float, default=None, help="CPUs per replica")
    parser.add_argument("--max-batch-size", type=int, default=None)
    parser.add_argument("--batch-wait-ms", type=float, default=None)
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="allow a non-loopback address without an API key (private networks only)")
    parser.add_argument("--direct", action="store_true",
                        help="each replica also serves on its own port (no proxy hop; see above)")
    parser.add_argument("--direct-port", type=int, default=DIRECT_PORT, help="the first replica's own port")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch threads per replica")
    parser.add_argument("--detach", action="store_true", help="deploy and exit (on a running cluster)")
    parser.add_argument("--dry-run", action="store_true", help="check the arguments and the config, print them, run nothing")
    args = parser.parse_args(argv)
    if args.dry_run:  # the model folder need not exist yet
        print(f"ok: serve {args.model} on {args.host}:{args.port}")
        return 0

    model_dir = model_folder(args.model)
    try:
        key = api_key_from_env()
        check_bind(args.host, has_key=bool(key), insecure_no_auth=args.insecure_no_auth)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    batching = {k: v for k, v in (("max_batch_size", args.max_batch_size),
                                  ("batch_wait_timeout_s", None if args.batch_wait_ms is None else args.batch_wait_ms / 1000))
                if v is not None}
    config = serve_config(model_dir, path=args.config, host=args.host, port=args.port,
                          api_key_sha256=key_digest(key) if key else None, **batching)
    dep = config["applications"][0]["deployments"][0]
    for field, value in (("min_replicas", args.min_replicas), ("max_replicas", args.max_replicas)):
        if value is not None:
            dep.setdefault("autoscaling_config", {})[field] = value
    if args.num_cpus is not None:
        dep.setdefault("ray_actor_options", {})["num_cpus"] = args.num_cpus

    if args.torch_threads is not None:
        config["applications"][0].setdefault("args", {})["torch_threads"] = args.torch_threads
    if args.direct:
        try:
            env = direct_ingress_env(args.direct_port)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        if os.environ.get("RAY_ADDRESS"):
            print("note: --direct on a cluster needs it started with " + " ".join(f"{k}={v}" for k, v in env.items()))
        else:
            os.environ.update(env)  # the embedded Ray's processes inherit it
    mode = init_ray()
    t0 = time.perf_counter()
    deploy(config)
    url = f"http://{args.host}:{args.port}"
    print(f"serving {model_dir} at {url} ({mode} Ray, ready in {time.perf_counter() - t0:.0f}s); "
          f"{'API key required' if key else 'no API key: loopback only'}; OpenAPI page {url}/docs", flush=True)
    if args.direct:
        urls = direct_urls(host=args.host if args.host not in ("0.0.0.0", "::") else None)
        if not urls:
            raise SystemExit("error: --direct: no replica serves on its own port; on a cluster start Ray with "
                             "the environment of diled_platform.serving.deploy.direct_ingress_env")
        print(f"replicas' own addresses (no proxy): {', '.join(urls)}", flush=True)
    if args.detach:
        if mode == "local":
            print("note: --detach on an embedded local Ray stops the service when this process exits")
        return 0
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

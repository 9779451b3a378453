"""Serve a trained DiLED model over HTTP (Ray Serve): encode, reconstruct, generate, interpolate.

    python jobs/serve.py --model runs/text-cpu/model            # embedded local Ray, 127.0.0.1:8000
    python jobs/serve.py --model runs/text-cpu                  # a run folder: its model/
    DILED_API_KEY=... python jobs/serve.py --model ... --host 0.0.0.0
    ray job submit --working-dir . -- python jobs/serve.py --model /shared/runs/x/model --detach

Deploys platform/serve_config.yaml (or --config) with the model folder, address and batching filled
in. The API key, if any, comes from DILED_API_KEY or DILED_API_KEY_FILE, never from the command line;
without one the service binds to 127.0.0.1 only, and another address is refused unless
--insecure-no-auth. Runs until Ctrl-C, or with --detach deploys and leaves it running on the cluster.
Then: curl 127.0.0.1:8000/healthz, the OpenAPI page at /docs, or `diled generate --url ... -n 5`.
"""

import argparse
import sys
import time
from pathlib import Path

import _path  # noqa: F401  (repository on sys.path)

from diled.persistence import has_weights
from diled_platform.runtime import init_ray
from diled_platform.serve import DEFAULT_CONFIG, api_key_from_env, check_bind, deploy, key_digest, serve_config


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
    parser.add_argument("--detach", action="store_true", help="deploy and exit (on a running cluster)")
    args = parser.parse_args(argv)

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

    mode = init_ray()
    t0 = time.perf_counter()
    deploy(config)
    url = f"http://{args.host}:{args.port}"
    print(f"serving {model_dir} at {url} ({mode} Ray, ready in {time.perf_counter() - t0:.0f}s); "
          f"{'API key required' if key else 'no API key: loopback only'}; OpenAPI page {url}/docs", flush=True)
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

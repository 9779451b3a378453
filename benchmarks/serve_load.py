"""Concurrent load on the DiLED Serve app over loopback: latency and throughput with dynamic batching on
vs off, alternating A/B rounds on the same replica (batching is switched through user_config, so the
replica, its model and its warm caches stay the same).

    .venv/bin/python benchmarks/serve_load.py                      # the text-cpu architecture, ~5 minutes
    .venv/bin/python benchmarks/serve_load.py --model runs/text-cpu/model --seconds 20

Without --model it builds the text-cpu preset's architecture (the first 3 layers of the offline MiniLM as
encoder, MiniLM's first layer as a causal decoder with an 8k BPE on 5,000 corpus sentences transplanted,
8 latent slots of 64, the preset's prior and schedule) with its pretrained weights but untrained latent path: encoder cost is the real one;
decoding runs to the maximum length when the decoder never says EOS, the worst case.

The clients are asyncio tasks on one aiohttp session in this process (one thread: the load generator
takes as little of the 2 cores as it can), each posting back to back; bounded by --seconds per round.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_default_model(directory: Path) -> Path:
    import torch
    from diled import DiLED, LatentDiffusion, MLPSkipNet
    from diled.codecs.text import TextCodec
    from diled.text_tokenizers import train_bpe
    from diled.data.text import default_corpus

    texts = default_corpus()[0].column("text").to_pylist()[:5000]
    tok = train_bpe(texts, 8000, directory / "tok")
    torch.manual_seed(0)
    codec = TextCodec(latent_dim=512, tokenizer=str(tok), max_length=40, encoder_layers=3, encoder_trainable_layers=1,
                      decoder_kind="bert", decoder_layers=1, latent_slots=8, slot_tokens=5)
    model = DiLED(codec, MLPSkipNet(512, hidden=512, depth=6, time_dim=128), LatentDiffusion("linear", 200), w=0.43)
    return model.save_pretrained(directory / "model")


def drive(url: str, path: str, body: dict, clients: int, seconds: float) -> dict:
    """``clients`` asyncio tasks posting ``body`` back to back for ``seconds``: latencies, throughput, and
    the status codes other than 200."""
    import asyncio

    import aiohttp

    latencies, errors = [], {}

    async def client(session, stop):
        while time.monotonic() < stop:
            t = time.perf_counter()
            async with session.post(url + path, json=body) as r:
                await r.read()
                status = r.status
            if status == 200:
                latencies.append(time.perf_counter() - t)
            else:
                errors[status] = errors.get(status, 0) + 1

    async def run():
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=clients)) as session:
            stop = time.monotonic() + seconds
            await asyncio.gather(*(client(session, stop) for _ in range(clients)))

    t0 = time.perf_counter()
    asyncio.run(run())
    wall = time.perf_counter() - t0
    latencies.sort()
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000  # noqa: E731
    return {"requests": len(latencies), "errors": sum(errors.values()), "statuses": errors,
            "rps": len(latencies) / wall, "p50_ms": q(0.50), "p99_ms": q(0.99)}


def model_alone(model_dir: Path, sentence: str, batch: int, threads: tuple[int, int]) -> tuple[float, float]:
    """Milliseconds per sentence of the model's own encode in this process (no serving path): one sentence
    per call on ``threads[0]`` torch threads, ``batch`` per call on ``threads[1]``: the model's own gain
    from batching."""
    import torch
    from diled import DiLED

    before = torch.get_num_threads()
    model = DiLED.from_pretrained(model_dir).eval()
    per = []
    with torch.inference_mode():
        for b, t in zip((1, batch), threads):
            torch.set_num_threads(t)
            for _ in range(3):
                model.encode([sentence] * b)
            n = max(10, 400 // b)
            start = time.perf_counter()
            for _ in range(n):
                model.encode([sentence] * b)
            per.append((time.perf_counter() - start) / (n * b) * 1000)
    torch.set_num_threads(before)
    return per[0], per[1]


def batch_stats(url: str, path: str) -> tuple[int, int]:
    """The replica's count of batched calls and of the requests they served on ``path`` (``/healthz``)."""
    import requests

    stats = requests.get(url + "/healthz", timeout=30).json()["batching"]
    name = path.strip("/")
    return stats[f"{name}_batches"], stats[f"{name}_requests"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a save_pretrained folder (default: build a text-cpu-sized one)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2, help="A/B rounds per endpoint")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--endpoints", nargs="+", default=["encode", "reconstruct", "generate"],
                        choices=["encode", "reconstruct", "generate"])
    parser.add_argument("--max-batch-size", type=int, default=16, help="batching on: the batch limit")
    parser.add_argument("--direct", action="store_true",
                        help="clients post to the replica's own HTTP server (Serve's direct ingress, "
                             "diled_platform.serving.deploy.direct_ingress_env), not through the proxy")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch threads in the replica (default: Ray's, 1 per CPU of the replica)")
    parser.add_argument("--off-torch-threads", type=int, default=None,
                        help="batching off on a replica with this many torch threads instead (each setting at "
                             "its best: the replica is restarted between settings)")
    parser.add_argument("--replica-env", nargs="*", default=[], metavar="KEY=VALUE",
                        help="environment variables of the replica (its runtime_env), e.g. OMP_WAIT_POLICY=PASSIVE")
    parser.add_argument("--throughput-optimized", action="store_true",
                        help="start Ray with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (Ray >= 2.56: gRPC between proxy and "
                             "replicas, user code on the replica's own loop, gc frozen at start)")
    args = parser.parse_args()
    bad_env = [kv for kv in args.replica_env if "=" not in kv or kv.startswith("=")]
    if bad_env:
        parser.error(f"--replica-env {bad_env[0]!r}: give KEY=VALUE")

    from diled_platform.serving.deploy import direct_ingress_env, direct_urls

    if args.direct:
        os.environ.update(direct_ingress_env())  # before ray.init: Ray's processes read it at start
    elif args.throughput_optimized:
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
        os.environ.setdefault("RAY_SERVE_ENABLE_DIRECT_INGRESS", "0")  # clients still go through the proxy
    import ray
    import requests
    from compute import matmul_peak
    from diled_platform.serving.deploy import deploy, serve_config

    print(f"torch fp32 matmul on this machine: {matmul_peak() / 1e9:.0f} GFLOP/s (2048^3)", flush=True)

    tmp = tempfile.TemporaryDirectory()
    model_dir = Path(args.model) if args.model else build_default_model(Path(tmp.name))
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    url = f"http://127.0.0.1:{args.port}"

    def configure(max_batch_size: int, threads: int | None = args.torch_threads) -> dict:
        config = serve_config(model_dir, port=args.port, max_batch_size=max_batch_size, batch_wait_timeout_s=0.01)
        dep = config["applications"][0]["deployments"][0]
        dep["autoscaling_config"].update(min_replicas=1, max_replicas=1)  # one replica: batching alone
        dep["ray_actor_options"]["num_cpus"] = 1
        dep["max_ongoing_requests"] = 64
        if args.replica_env:
            env = dict(kv.split("=", 1) for kv in args.replica_env)
            dep["ray_actor_options"].setdefault("runtime_env", {}).setdefault("env_vars", {}).update(env)
        if threads:
            config["applications"][0]["args"]["torch_threads"] = threads
            dep["ray_actor_options"]["num_cpus"] = threads
        return config

    def serving(size: int, threads: int) -> str:
        """The address of the replica once it runs with ``size`` and ``threads`` (a user_config change
        arrives asynchronously; a new torch_threads means a new replica, perhaps on another port)."""
        deadline = time.monotonic() + 120
        while True:
            for candidate in (direct_urls(host="127.0.0.1") if args.direct else [url]):
                try:
                    h = requests.get(candidate + "/healthz", timeout=10).json()
                except (requests.RequestException, ValueError):
                    continue
                if h["torch_threads"] == threads and h["batching"].get("max_batch_size") == size:
                    return candidate
            if time.monotonic() > deadline:
                raise SystemExit(f"error: no replica with max_batch_size {size} and {threads} torch threads")
            time.sleep(0.5)

    sentence = "the acting is wooden and the plot is thin, but the music is great."
    on_threads = args.torch_threads or 1
    off_threads = args.off_torch_threads or on_threads
    if "encode" in args.endpoints:
        one, many = model_alone(model_dir, sentence, args.max_batch_size, (off_threads, on_threads))
        print(f"model alone: encode {one:.2f} ms per sentence one at a time ({off_threads} thread(s)), {many:.2f} in "
              f"batches of {args.max_batch_size} ({on_threads}): x{one / many:.2f}, what batching buys the model "
              f"itself (a serving path that costs the same per request either way only dilutes it)", flush=True)
    deploy(configure(args.max_batch_size))
    if args.direct:
        urls = direct_urls(host="127.0.0.1")
        if not urls:
            raise SystemExit("error: the replica has no direct HTTP server (direct ingress did not start)")
        url = urls[0]
    cases = {"encode": ("/encode", {"inputs": [sentence]}),
             "reconstruct": ("/reconstruct", {"inputs": [sentence]}),
             "generate": ("/generate", {"n": 1, "seed": 0, "steps": 10})}
    cases = [cases[name] for name in args.endpoints]
    print(f"model {model_dir}; {args.clients} concurrent clients, {args.seconds:.0f} s per round, "
          f"{args.rounds} alternating rounds per setting; one replica ({args.torch_threads or 1} CPU"
          f"{f', batching off on {args.off_torch_threads}' if args.off_torch_threads else ''}); "
          f"clients post to {url} ({'the replica itself' if args.direct else 'the proxy'})", flush=True)
    print("| endpoint | batching | requests | req/s | p50 ms | p99 ms | requests per batch |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    summary = []
    for path, body in cases:
        drive(url, path, body, args.clients, 3.0)  # warm-up
        runs = {"on": [], "off": []}
        for _ in range(args.rounds):
            for setting, size, threads in (("off", 1, off_threads), ("on", args.max_batch_size, on_threads)):
                deploy(configure(size, threads))
                url = serving(size, threads)
                if off_threads != on_threads:
                    drive(url, path, body, args.clients, 2.0)  # a new replica: warm it up
                before = batch_stats(url, path)
                runs[setting].append(drive(url, path, body, args.clients, args.seconds))
                after = batch_stats(url, path)
                runs[setting][-1]["per_batch"] = ((after[1] - before[1]) / max(1, after[0] - before[0]))
        for setting in ("off", "on"):
            r = runs[setting]
            med = {k: statistics.median(x[k] for x in r) for k in ("rps", "p50_ms", "p99_ms")}
            per_batch = statistics.median(x["per_batch"] for x in r)
            label = setting + (f" ({off_threads if setting == 'off' else on_threads} threads)"
                               if off_threads != on_threads else "")
            print(f"| {path} | {label} | {sum(x['requests'] for x in r)} | {med['rps']:.1f} | "
                  f"{med['p50_ms']:.0f} | {med['p99_ms']:.0f} | {per_batch:.1f} |", flush=True)
            if any(x["errors"] for x in r):
                print(f"  ({sum(x['errors'] for x in r)} errors: {[x['statuses'] for x in r]})")
        on = {k: statistics.median(x[k] for x in runs["on"]) for k in ("rps", "p50_ms", "p99_ms")}
        off = {k: statistics.median(x[k] for x in runs["off"]) for k in ("rps", "p50_ms", "p99_ms")}
        summary.append(f"{path}: throughput on/off {on['rps'] / off['rps']:.2f}x, "
                       f"p50 on/off {on['p50_ms'] / off['p50_ms']:.2f}, p99 on/off {on['p99_ms'] / off['p99_ms']:.2f}")
    print("\n".join(summary))
    from ray import serve
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Concurrent load on the DiLED Serve app over loopback: latency and throughput with dynamic batching on
vs off, alternating A/B rounds on the same replica (batching is switched through user_config, so the
replica, its model and its warm caches stay the same).

    .venv/bin/python benchmarks/serve_load.py                      # a text-cpu-sized model, ~3 minutes
    .venv/bin/python benchmarks/serve_load.py --model runs/text-cpu/model --seconds 20

Without --model it builds the text-cpu architecture (offline MiniLM encoder, 4 x 256 GPT-2 decoder, a
BPE on 5,000 corpus sentences) with untrained decoder and prior: encoder cost is the real one; decoding
runs to the maximum length (an untrained decoder never stops early), the worst case.
"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
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
    from diled.codecs.text import TextCodec, train_bpe
    from diled.data.text import default_corpus

    texts = default_corpus()[0].column("text").to_pylist()[:5000]
    tok = train_bpe(texts, 8000, directory / "tok")
    torch.manual_seed(0)
    codec = TextCodec(latent_dim=64, tokenizer=str(tok), max_length=40, encoder_trainable_layers=0,
                      decoder_config={"n_layer": 4, "n_embd": 256, "n_head": 4, "n_positions": 64})
    model = DiLED(codec, MLPSkipNet(64, hidden=512, depth=6, time_dim=128), LatentDiffusion("constant", 1000))
    return model.save_pretrained(directory / "model")


def drive(url: str, path: str, body: dict, clients: int, seconds: float) -> dict:
    """``clients`` threads posting ``body`` back to back for ``seconds``: latencies and throughput."""
    import requests

    latencies, errors, stop = [], [], time.monotonic() + seconds
    lock = threading.Lock()

    def worker():
        session = requests.Session()
        while time.monotonic() < stop:
            t = time.perf_counter()
            r = session.post(url + path, json=body, timeout=120)
            dt = time.perf_counter() - t
            with lock:
                (latencies if r.status_code == 200 else errors).append(dt)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000  # noqa: E731
    return {"requests": len(latencies), "errors": len(errors), "rps": len(latencies) / wall,
            "p50_ms": q(0.50), "p99_ms": q(0.99)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a save_pretrained folder (default: build a text-cpu-sized one)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2, help="A/B rounds per endpoint")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    import ray
    from diled_platform.serve import deploy, serve_config

    tmp = tempfile.TemporaryDirectory()
    model_dir = Path(args.model) if args.model else build_default_model(Path(tmp.name))
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    url = f"http://127.0.0.1:{args.port}"

    def configure(max_batch_size: int) -> dict:
        config = serve_config(model_dir, port=args.port, max_batch_size=max_batch_size, batch_wait_timeout_s=0.01)
        dep = config["applications"][0]["deployments"][0]
        dep["autoscaling_config"].update(min_replicas=1, max_replicas=1)  # one replica: batching alone
        dep["ray_actor_options"]["num_cpus"] = 1
        dep["max_ongoing_requests"] = 64
        return config

    deploy(configure(16))
    cases = [("/encode", {"inputs": ["the acting is wooden and the plot is thin, but the music is great."]}),
             ("/generate", {"n": 1, "seed": 0, "steps": 10})]
    print(f"model {model_dir}; {args.clients} concurrent clients, {args.seconds:.0f} s per round, "
          f"{args.rounds} alternating rounds per setting; one replica (1 CPU)", flush=True)
    print("| endpoint | batching | requests | req/s | p50 ms | p99 ms |\n| --- | --- | --- | --- | --- | --- |")
    summary = []
    for path, body in cases:
        drive(url, path, body, args.clients, 3.0)  # warm-up
        runs = {"on": [], "off": []}
        for _ in range(args.rounds):
            for setting, size in (("off", 1), ("on", 16)):
                deploy(configure(size))
                time.sleep(1.0)  # the user_config update reaches the replica asynchronously
                runs[setting].append(drive(url, path, body, args.clients, args.seconds))
        for setting in ("off", "on"):
            r = runs[setting]
            med = {k: statistics.median(x[k] for x in r) for k in ("rps", "p50_ms", "p99_ms")}
            print(f"| {path} | {setting} | {sum(x['requests'] for x in r)} | {med['rps']:.1f} | "
                  f"{med['p50_ms']:.0f} | {med['p99_ms']:.0f} |", flush=True)
            if any(x["errors"] for x in r):
                print(f"  ({sum(x['errors'] for x in r)} errors)")
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

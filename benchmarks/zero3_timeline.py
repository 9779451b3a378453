"""Where a ZeRO-3 worker's memory goes, step by step: the RSS timeline of one worker of the
``text-xl-cpu`` preset (or another text preset) and, after the optimizer step, every tensor it holds.

    .venv/bin/python benchmarks/zero3_timeline.py [--preset text-xl-cpu] [--steps 2] [--set section.key=value ...]

Two processes over gloo run the trainer's own ``setup_model_and_engine`` and ``engine`` forward, backward and
step (no Ray: nothing else shares the processes) on one fixed 20-word sentence per worker. Rank 0 prints,
at each mark (the engine built; the forward at decoder blocks 0, 1, middle and last; the backward at the
same blocks; the end of forward, backward and step), its RSS now and its high-water mark since the last
mark, both in GiB above its RSS before the model was built; then the sum of the unique tensor storages
it holds after the first step against its RSS: what the tensors account for and what they do not
(allocator, libraries, buffers). The results are discussed in docs/scaling.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "platform")]
for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                   "DS_ACCELERATOR": "cpu"}.items():
    os.environ.setdefault(key, value)

import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

GiB = 2**30
SENTENCE = "the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat near the door"


def _kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def held_tensor_bytes() -> tuple[int, int]:
    """Bytes of the unique CPU tensor storages reachable by the garbage collector, and their number."""
    storages = {}
    for obj in gc.get_objects():
        try:
            if torch.is_tensor(obj) and obj.device.type == "cpu":
                storage = obj.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without a plain storage (meta, sparse)
            continue
    return sum(storages.values()), len(storages)


def worker(rank: int, world: int, args, tokenizer_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(args.port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from diled_platform.config import load_config
    from diled_platform.training.memory import _reset_peak, use_mmap_for_large_allocations
    from diled_platform.datatypes.text import prepare_tokenizer
    from diled_platform.training.train import WorkerContext, setup_model_and_engine
    from diled_platform.training.zero import import_model_libraries

    dist.init_process_group("gloo", rank=rank, world_size=world)
    cfg = prepare_tokenizer(load_config(args.preset, ["--" + item for item in args.set]), Path(tokenizer_dir), [SENTENCE])
    use_mmap_for_large_allocations()
    import_model_libraries(cfg)
    base = _kib("VmRSS")
    _reset_peak()

    def mark(name: str) -> None:
        if rank == 0:
            print(f"{name:<28} {(_kib('VmRSS') - base) / GiB:8.3f} {(_kib('VmHWM') - base) / GiB:8.3f}", flush=True)
        _reset_peak()

    if rank == 0:
        print(f"{'mark':<28} {'RSS':>8} {'peak':>8}   (GiB above the RSS before the model was built)")
    engine = setup_model_and_engine(cfg, WorkerContext(rank, world, rank))
    mark("engine built")
    blocks = [m for name, m in engine.module.named_modules() if isinstance(m, torch.nn.ModuleList) and name.endswith(".h")]
    blocks = blocks[0] if blocks else []
    for i in sorted({0, 1, len(blocks) // 2, len(blocks) - 1} & set(range(len(blocks)))):
        blocks[i].register_forward_hook(lambda *_, i=i: mark(f"  forward, block {i} done"))
        blocks[i].register_full_backward_hook(lambda *_, i=i: mark(f"  backward, block {i} done"))
    batch = engine.module.codec.collate([SENTENCE] * args.batch)
    for step in range(args.steps):
        mark(f"step {step}")
        out = engine(batch)
        mark("  forward")
        engine.backward(out["loss"])
        mark("  backward")
        engine.step()
        mark("  optimizer step")
        if step == 0 and rank == 0:
            held, n = held_tensor_bytes()
            full = 4 * sum(getattr(p, "ds_numel", p.numel()) for p in engine.module.parameters())  # fp32 bytes
            rss = _kib("VmRSS") - base
            print(f"after step 0: {n} tensor storages hold {held / GiB:.3f} GiB, RSS {rss / GiB:.3f} GiB "
                  f"(not tensors: {(rss - held) / GiB:.3f}); the full fp32 model is {full / GiB:.3f} GiB: "
                  f"RSS / model {rss / full:.3f}, tensors / model {held / full:.3f}", flush=True)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="text-xl-cpu")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2, help="sentences per worker")
    parser.add_argument("--port", type=int, default=29533)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides without the leading dashes, e.g. data.batch_size=4")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        mp.spawn(worker, args=(2, args, tokenizer_dir), nprocs=2)


if __name__ == "__main__":
    main()

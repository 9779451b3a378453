"""Ray Train + DeepSpeed ZeRO: the distributed DiLED trainer.

The per-worker loop is composed of small functions, in the shape of Ray's DeepSpeed fine-tuning
example: ``setup_model_and_engine``, ``setup_data_shard``, ``train_step``, ``evaluate``,
``report_metrics_and_save_checkpoint`` and ``load_checkpoint``. The whole ``DiLED`` module (codec +
prior) goes into one ``deepspeed.initialize``; frozen parameters stay out of the optimizer.

The driver's side (preparing the data type, building the ``TorchTrainer``, the run folder, ``fit``) is
``diled_platform.training.driver``.

Checkpoints: every rank writes its DeepSpeed shard into a temporary folder, then all ranks call
``ray.train.report(metrics, checkpoint=...)``, which merges the shards into one checkpoint folder. Rank 0
adds ``train_state.json`` (the step counter) and a consolidated ``model/`` (``save_pretrained``:
safetensors + JSON) that inference and serving load without DeepSpeed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from diled_platform.config import ConfigError, JobConfig, deepspeed_config_path
from diled_platform.training.memory import MemoryMeter, use_mmap_for_large_allocations
from diled_platform.training.progress import Progress
from diled_platform.training.validation import all_reduce, evaluate
from diled_platform.training.zero import build_model, export_pretrained, import_model_libraries, residency, share_fp32_master

# Keys of a DeepSpeed JSON that the job config owns: a preset file setting them would be silently
# overridden, so it is an error instead.
_OWNED_DS_KEYS = ("optimizer", "scheduler", "train_batch_size", "train_micro_batch_size_per_gpu",
                  "gradient_accumulation_steps", "gradient_clipping", "bf16", "fp16")
log = logging.getLogger("diled")
SHUFFLE_BATCHES = 32  # local shuffle buffer, in batches: mixes neighbouring blocks on top of the split's shuffle


# ----------------------------------------------------------------------------- DeepSpeed config
def deepspeed_config(cfg: JobConfig, world_size: int, group_scales: list[float] | None = None) -> dict[str, Any]:
    """The DeepSpeed config for this job: the ZeRO file of ``scaling.deepspeed`` plus concrete batch,
    optimizer and precision values from the job config (nothing is left as "auto"). ``group_scales``:
    the lr multiplier of each optimizer parameter group (``param_groups``), in order."""
    path = deepspeed_config_path(cfg.scaling.deepspeed)
    ds = json.loads(path.read_text())
    clash = [k for k in _OWNED_DS_KEYS if k in ds]
    if clash:
        raise ConfigError(f"{path} sets {clash}: these come from the job config (optim.*, data.batch_size, "
                          f"scaling.precision); remove them from the DeepSpeed file")
    micro, accum = cfg.data.batch_size, cfg.optim.grad_accum
    ds.update({
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "train_batch_size": micro * accum * world_size,
        "optimizer": {"type": "AdamW", "params": {
            "lr": cfg.optim.lr, "betas": list(cfg.optim.betas), "eps": 1e-8,
            "weight_decay": cfg.optim.weight_decay,
            # torch's AdamW: no JIT-compiled op needed (DeepSpeed's fused Adam compiles for ~30 s on CPU);
            # DeepSpeed passes "fused" through to it
            "torch_adam": True, **({"fused": True} if cfg.optim.fused else {})}},
    })
    if cfg.optim.grad_clip > 0:
        ds["gradient_clipping"] = cfg.optim.grad_clip
    ds.update(lr_scheduler(cfg.optim, group_scales))
    if use_bf16(cfg):
        ds["bf16"] = {"enabled": True}
    return ds


def lr_scheduler(optim, group_scales: list[float] | None = None) -> dict[str, Any]:
    """DeepSpeed's scheduler entry for ``optim``: linear warmup from 0, then constant, linear or cosine
    decay to ``min_lr_ratio * lr`` at ``max_steps`` ({} when the lr is constant from the first step).
    With ``group_scales`` the peak lr is given per parameter group (the cosine schedule is relative to
    each group's own lr already)."""
    o = optim
    peak = [o.lr * s for s in group_scales] if group_scales else o.lr
    if o.decay == "constant":
        if o.warmup_steps == 0:
            return {}
        return {"scheduler": {"type": "WarmupLR", "params": {
            "warmup_min_lr": 0.0, "warmup_max_lr": peak, "warmup_num_steps": o.warmup_steps,
            "warmup_type": "linear"}}}
    if o.decay == "cosine":
        return {"scheduler": {"type": "WarmupCosineLR", "params": {
            "total_num_steps": o.max_steps, "warmup_min_ratio": 0.0, "cos_min_ratio": o.min_lr_ratio,
            "warmup_num_steps": max(1, o.warmup_steps), "warmup_type": "linear"}}}
    return {"scheduler": {"type": "WarmupDecayLR", "params": {
        "total_num_steps": o.max_steps, "warmup_min_lr": 0.0, "warmup_max_lr": peak,
        "warmup_num_steps": max(1, o.warmup_steps), "warmup_type": "linear"}}}


def use_bf16(cfg: JobConfig) -> bool:
    """bf16 on GPU (precision auto or bf16); on CPU only when asked for (precision bf16), else fp32
    (DeepSpeed's CPU path has no fp16)."""
    if cfg.scaling.precision == "bf16":
        return True
    return cfg.scaling.use_gpu and cfg.scaling.precision == "auto"


def native_precision(cfg: JobConfig) -> str:
    """``bf16-if-native`` resolved on the workers: bf16 on GPUs, and on CPUs when every worker's CPU computes
    bf16 matmuls in hardware; fp32 otherwise. The workers agree (a minimum over ranks): one ZeRO group
    cannot mix precisions, and on a cluster the driver's CPU need not be the workers'."""
    if cfg.scaling.use_gpu:
        return "bf16"
    import torch.distributed as dist

    flag = torch.tensor([1.0 if cpu_has_native_bf16() else 0.0])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return "bf16" if flag.item() == 1.0 else "fp32"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls in hardware (AVX512-BF16 or AMX): there bf16 is about 2.5x
    faster than fp32 (docs/scaling.md); elsewhere torch emulates it."""
    cpu = getattr(torch, "cpu", None)
    return any(getattr(cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def zero_stage(cfg: JobConfig) -> int:
    ds = json.loads(deepspeed_config_path(cfg.scaling.deepspeed).read_text())
    return int(ds.get("zero_optimization", {}).get("stage", 0))


def _count_trainable(module) -> int:
    # ZeRO-3 partitions parameters: ds_numel is the full size, numel() this rank's (empty) view
    return sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- worker context
@dataclass
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def worker_context() -> WorkerContext:
    """This Ray Train worker's rank, world size and local rank."""
    import ray.train

    ctx = ray.train.get_context()
    return WorkerContext(ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank())


# ----------------------------------------------------------------------------- the loop's parts
def setup_model_and_engine(cfg: JobConfig, ctx: WorkerContext):
    """Build the DiLED model (partitioned under ZeRO-3) and wrap it in one DeepSpeed engine. The engine
    carries ``diled_residency`` (``residency`` right after construction) and ``diled_hf_config``."""
    import deepspeed

    if not cfg.scaling.use_gpu:
        # gloo collectives instead of DeepSpeed's JIT-compiled shared-memory op (17-27 s per start on CPU)
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    # before the model: zero.Init and HfDeepSpeedConfig read the world size from DeepSpeed's comm layer
    # (it adopts the process group that Ray Train has already set up)
    deepspeed.init_distributed(dist_backend="nccl" if cfg.scaling.use_gpu else "gloo")
    if cfg.scaling.precision == "bf16-if-native":
        cfg.scaling.precision = native_precision(cfg)  # this worker's copy of the config
        if ctx.rank == 0:
            log.info(f"scaling.precision=bf16-if-native: {cfg.scaling.precision}")
    if use_bf16(cfg) and not cfg.scaling.use_gpu and ctx.rank == 0 and not cpu_has_native_bf16():
        log.warning("scaling.precision=bf16 on a CPU without AVX512-BF16 or AMX: torch emulates bf16 matmuls "
                    "there, which is slower than fp32; --scaling.precision=fp32 is the faster choice on this CPU")
    model, hf_ds = build_model(cfg, deepspeed_config(cfg, ctx.world_size))
    model.cond_drop = cfg.model.cond_drop  # a conditional prior's training batches carry "cond" (build_trainer)
    built = residency(model)
    groups, scales = param_groups(model, cfg.optim.lr, cfg.optim.lr_scale)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=groups,
                                      config=deepspeed_config(cfg, ctx.world_size, scales))
    engine.diled_residency, engine.diled_hf_config = built, hf_ds
    freed = share_fp32_master(engine)
    if freed and ctx.rank == 0:
        log.info(f"ZeRO-3 fp32 master weights share the parameters' partition: {freed / 2**20:.0f} MB not copied")
    return engine


def param_groups(model: torch.nn.Module, lr: float, lr_scale: dict[str, float]) -> tuple[list, list[float]]:
    """The optimizer's parameter groups (trainable parameters only) and each group's lr multiplier: one
    group per ``optim.lr_scale`` prefix (the longest matching prefix wins), the rest at scale 1."""
    everything = [n for n, _ in model.named_parameters()]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ConfigError("the model has no trainable parameters (everything is frozen)")
    unknown = [k for k in lr_scale if not any(n.startswith(k) for n in everything)]
    if unknown:  # a typo; a prefix whose parameters are all frozen is fine (it has nothing to scale)
        prefixes = sorted({n.rsplit(".", 2)[0] for n in everything})[:8]
        raise ConfigError(f"optim.lr_scale: {unknown} match no parameter; names start with e.g. "
                          f"{', '.join(prefixes)}")
    by_key: dict[str | None, list] = {}
    for n, p in named:
        key = max((k for k in lr_scale if n.startswith(k)), key=len, default=None)
        by_key.setdefault(key, []).append(p)
    keys = sorted(by_key, key=lambda k: (k is not None, k or ""))
    scales = [float(lr_scale.get(k, 1.0)) if k is not None else 1.0 for k in keys]
    return [{"params": by_key[k], "lr": lr * s} for k, s in zip(keys, scales)], scales


def setup_data_shard(cfg: JobConfig, codec, rank: int, name: str = "train") -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches of this worker's shard of the training set, epoch after epoch, reshuffled locally
    every epoch (seeded by run seed, rank and epoch)."""
    import ray.train

    shard = ray.train.get_dataset_shard(name)
    pool = max(1, cfg.data.length_buckets)
    epoch = 0
    while True:
        got = False
        seed = cfg.run.seed * 100_003 + rank * 1009 + epoch
        rng = np.random.default_rng(seed)
        for columns in shard.iter_batches(batch_size=cfg.data.batch_size * pool, batch_format="numpy",
                                          drop_last=True, local_shuffle_seed=seed,
                                          local_shuffle_buffer_size=max(SHUFFLE_BATCHES, pool) * cfg.data.batch_size):
            got = True
            parts = [columns] if pool == 1 else length_bucketed(
                columns, cfg.data.batch_size, rng, codec.example_lengths(list(columns["x"])))
            for part in parts:
                yield with_condition(codec.collate_columns(part), part)
        if not got:
            raise ConfigError(f"the training shard holds fewer than data.batch_size={cfg.data.batch_size} "
                              f"x data.length_buckets={pool} examples per worker: lower them or add data")
        epoch += 1


def with_condition(batch: dict, columns: dict) -> dict:
    """``batch`` with the rows' class indices as ``"cond"`` if the columns have them (``model.conditional``)."""
    if "cond" in columns:
        batch["cond"] = torch.as_tensor(np.asarray(columns["cond"], dtype=np.int64))
    return batch


def length_bucketed(columns: dict[str, np.ndarray], batch_size: int, rng: np.random.Generator,
                    lengths: list[int]) -> list[dict]:
    """Split a pool of examples into batches of similar length (less padding), in random order: sorted by
    ``lengths`` (one per row, e.g. the codec's ``example_lengths``), cut into ``batch_size`` pieces."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    parts = [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    return [{k: v[idx] for k, v in columns.items()} for idx in (parts[j] for j in rng.permutation(len(parts)))]


def validation_batches(cfg: JobConfig, codec, ctx: WorkerContext) -> list[dict[str, torch.Tensor]]:
    """This worker's part of the validation set: batches i with i % world_size == rank, at most
    ``run.val_batches``; all ranks then use the same count (ZeRO-3 needs every rank in every forward)."""
    import ray.train

    batches = []
    it = ray.train.get_dataset_shard("val").iter_batches(batch_size=cfg.data.batch_size, batch_format="numpy")
    for i, columns in enumerate(it):
        if i % ctx.world_size == ctx.rank:
            batches.append(codec.collate_columns(columns))
            if len(batches) == cfg.run.val_batches:
                break
    n = all_reduce(torch.tensor([float(len(batches))]), op="min")
    return batches[: int(n.item())]


def train_step(engine, batch) -> dict[str, torch.Tensor]:
    out = engine(batch)
    engine.backward(out["loss"])
    engine.step()
    return out


def _has_frozen(module: torch.nn.Module) -> bool:
    return any(not p.requires_grad for p in module.parameters())


def report_metrics_and_save_checkpoint(engine, cfg: JobConfig, ctx: WorkerContext, step: int,
                                       metrics: dict[str, Any], meter=None) -> None:
    """Every rank saves its DeepSpeed shard (trainable state only: frozen weights are rebuilt from the
    config and its pretrained sources on resume, and are in the consolidated ``model/``), rank 0 adds
    ``train_state.json`` and the streamed ``model/`` export, and all report the folder to Ray Train."""
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        engine.save_checkpoint(tmp, tag="deepspeed", client_state={"step": step},
                               exclude_frozen_parameters=_has_frozen(engine.module))
        if meter is not None:
            meter.mark("export")
        export_pretrained(engine, Path(tmp) / "model", zero_stage(cfg), ctx.rank)
        if meter is not None:
            meter.mark("train")
        if ctx.rank == 0:
            state = {"step": step, "optimizer_steps": int(engine.global_steps), "metrics": metrics,
                     "config": cfg.to_dict()}
            (Path(tmp) / "train_state.json").write_text(json.dumps(state, indent=2))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def load_checkpoint(engine) -> int:
    """Resume from ``ray.train.get_checkpoint()`` if there is one: the step reached (0 if fresh)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as directory:
        try:
            # frozen weights are not in the shards (report_metrics_and_save_checkpoint): they were rebuilt
            path, client_state = engine.load_checkpoint(directory, tag="deepspeed",
                                                        load_module_strict=not _has_frozen(engine.module))
        except Exception as e:
            bad = unreadable_checkpoint_files(Path(directory))
            if not bad:
                raise
            raise RuntimeError(f"cannot resume from checkpoint {directory}: {', '.join(bad)} cannot be read "
                               f"(truncated or corrupt: {type(e).__name__}: {e}). Move that checkpoint folder away "
                               f"to resume from the one before it") from e
        if path is None:
            raise RuntimeError(f"checkpoint {directory} holds no DeepSpeed state to resume from")
    return int(client_state["step"])


def unreadable_checkpoint_files(directory: Path) -> list[str]:
    """The DeepSpeed shard files under ``directory`` that are not whole (torch.save writes zip archives: a
    truncated one has no central directory), as paths relative to it."""
    import zipfile

    bad = []
    for file in sorted(directory.rglob("*.pt")):
        try:
            with zipfile.ZipFile(file) as archive:
                if archive.testzip() is not None:
                    bad.append(str(file.relative_to(directory)))
        except (zipfile.BadZipFile, OSError):
            bad.append(str(file.relative_to(directory)))
    return bad


def maybe_inject_failure(cfg: JobConfig, ctx: WorkerContext, step: int, resumed: bool) -> None:
    """Testing aid (``run.fail_at_step``): the last rank crashes once, at that step of a fresh attempt.
    On local storage a marker file makes it once per run: a retry that finds no registered checkpoint
    (the controller had not yet taken the last report when the crash came) starts afresh and must not
    crash again."""
    if cfg.run.fail_at_step != step or resumed or ctx.rank != ctx.world_size - 1:
        return
    if "://" not in cfg.run.storage_path:  # leave a trace, so that a test can tell the crash happened
        marker = Path(cfg.run.storage_path) / cfg.run.name / f"injected_failure_step_{step}"
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    if cfg.run.fail_mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected failure at step {step} on rank {ctx.rank} (run.fail_at_step)")


# ----------------------------------------------------------------------------- the worker function
def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: ``config["job"]`` is the ``JobConfig`` the driver resolved
    (``driver.build_trainer``)."""
    import ray.data

    cfg = config["job"]
    if not isinstance(cfg, JobConfig):
        raise TypeError(f"train_loop_config['job'] must be the driver's JobConfig, got {type(cfg).__name__}")
    ctx = worker_context()
    if not cfg.scaling.use_gpu:
        # one intra-op thread per reserved CPU: Ray's OMP_NUM_THREADS reaches torch only in a fresh worker
        # process (a reused one keeps the thread count of its first task), and fractional CPUs round down
        torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker + 0.5)))
    ray.data.DataContext.get_current().enable_progress_bars = False  # see build_trainer
    if not cfg.scaling.use_gpu and zero_stage(cfg) == 3:
        use_mmap_for_large_allocations()  # freed gathers and construction buffers go back to the OS
    import_model_libraries(cfg)
    meter = MemoryMeter()  # after the imports: what the model itself costs
    engine = setup_model_and_engine(cfg, ctx)
    codec = engine.module.codec
    start = load_checkpoint(engine)
    meter.mark("train")
    resumed = start > 0
    if ctx.rank == 0:
        held = engine.diled_residency
        log.info(f"{'resuming at step ' + str(start) if resumed else 'starting'}: {ctx.world_size} worker(s), "
                 f"ZeRO stage {zero_stage(cfg)}, {_count_trainable(engine.module):,} trainable of "
                 f"{held['param_elements']:,} parameters ({held['param_elements_held']:,} held by this worker), "
                 f"{torch.get_num_threads()} thread(s) per worker")
    torch.manual_seed(cfg.run.seed * 1000 + ctx.rank + start)  # t and eps draws differ per rank and attempt
    train_batches = setup_data_shard(cfg, codec, ctx.rank)
    val = validation_batches(cfg, codec, ctx)
    from diled_platform.training.tracking import Tracker

    progress = Progress(cfg, ctx, tracker=Tracker(cfg, ctx.rank))
    step_seconds: list[float] = []
    # a plug-in codec that does not subclass diled.codecs.Codec may lack the hook
    set_step = getattr(codec, "set_training_step", lambda step: None)
    for step in range(start + 1, cfg.optim.max_steps + 1):
        maybe_inject_failure(cfg, ctx, step, resumed)
        batch = next(train_batches)
        t_step = time.perf_counter()
        set_step(step)
        out = train_step(engine, batch)
        step_seconds.append(time.perf_counter() - t_step)
        loss = out["loss"].item()
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {step}: lower optim.lr or check the data")
        progress.update(step, out, lr=engine.get_lr()[0])
        if step % cfg.run.checkpoint_every == 0 or step == cfg.optim.max_steps:
            metrics = {"step": step, **evaluate(engine, val, seed=cfg.run.seed + 1)}
            progress.scalars(step, {f"val/{k}": v for k, v in metrics.items() if k != "step"})
            report_metrics_and_save_checkpoint(engine, cfg, ctx, step, metrics, meter)
    progress.close()
    meter.mark(None)
    write_memory_record(cfg, ctx, engine, meter, start, step_seconds)


def write_memory_record(cfg: JobConfig, ctx: WorkerContext, engine, meter, start: int,
                        step_seconds: list[float]) -> None:
    """``<run>/memory/rank<r>.json``: this worker's measured peak RSS per phase, its RSS before the model
    was built, and what it held of the parameters right after construction (local storage only)."""
    if "://" in cfg.run.storage_path:
        return
    folder = Path(cfg.run.storage_path) / cfg.run.name / "memory"
    folder.mkdir(parents=True, exist_ok=True)
    record = {"rank": ctx.rank, "world_size": ctx.world_size, "zero_stage": zero_stage(cfg), "start_step": start,
              "end_step": cfg.optim.max_steps, "step_seconds": [round(x, 3) for x in step_seconds],
              **meter.to_dict(), "residency": engine.diled_residency}
    (folder / f"rank{ctx.rank}.json").write_text(json.dumps(record, indent=2) + "\n")

"""Ray Train + DeepSpeed on 2 CPU workers with a tiny DiLED: learning, checkpoints, resume, faults, export."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diled import DiLED
from diled_platform.config import load_config
from diled_platform.training.driver import fit

pytestmark = pytest.mark.timeout(600)


def tiny(tmp_path, name, *overrides):
    return load_config("vector-cpu", [
        f"--run.name={name}", f"--run.storage_path={tmp_path}", "--run.checkpoint_every=20", "--run.log_every=20",
        "--run.num_to_keep=10", "--optim.max_steps=40", "--data.n_train=2000", "--data.batch_size=32",
        "--model.prior_hidden=64", "--model.prior_depth=2", "--scaling.num_workers=2",
        "--scaling.cpus_per_worker=0.9", *overrides])


def deepspeed_arg(stage, tmp_path):
    """zero2 as shipped; zero3 with every parameter partitioned (the shipped file keeps parameters under
    10k elements whole, which would be all of a tiny model's)."""
    if stage == "zero2":
        return "--scaling.deepspeed=zero2"
    from diled_platform.config import deepspeed_config_path

    ds = json.loads(deepspeed_config_path("zero3").read_text())
    ds["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path = tmp_path / "zero3_all_partitioned.json"
    path.write_text(json.dumps(ds))
    return f"--scaling.deepspeed={path}"


def reported(outcome):
    """(step, metrics) of every kept checkpoint, in step order."""
    rows = [(m["step"], m) for _, m in outcome.result.best_checkpoints]
    return sorted(rows, key=lambda r: r[0])


def train_state(checkpoint_path):
    return json.loads((Path(checkpoint_path) / "train_state.json").read_text())


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_train_checkpoint_and_resume(ray_local, tmp_path, stage):
    cfg = tiny(tmp_path, f"run-{stage}", deepspeed_arg(stage, tmp_path), "--optim.max_steps=60")
    out = fit(cfg)
    rows = reported(out)
    assert [s for s, _ in rows] == [20, 40, 60]
    assert rows[-1][1]["val_loss"] < rows[0][1]["val_loss"], rows  # it learns
    assert out.result.checkpoint is not None and (out.model_dir / "model.safetensors").is_file()
    assert train_state(out.result.checkpoint.path)["optimizer_steps"] == 60
    # the run folder's model is a link to the latest checkpoint's export, not another copy
    assert out.model_dir.is_symlink() and out.model_dir.resolve() == (Path(out.result.checkpoint.path) / "model").resolve()
    # each worker measured its peaks per phase and what it held of the parameters
    for rank in range(2):
        record = json.loads((out.run_dir / "memory" / f"rank{rank}.json").read_text())
        assert set(record["peak_rss"]) == {"build", "train", "export"} and len(record["step_seconds"]) == 60
        assert all(v > record["baseline_rss"] * 0.5 for v in record["peak_rss"].values())
        held = record["residency"]
        if stage == "zero3":  # every parameter partitioned: half of each tensor per worker
            assert held["param_elements_held"] <= held["param_elements"] // 2 + 100
        else:
            assert held["param_elements_held"] == held["param_elements"]

    # the same run name again, with a longer budget: resumes at step 60, does not restart
    out2 = fit(tiny(tmp_path, f"run-{stage}", deepspeed_arg(stage, tmp_path), "--optim.max_steps=80"))
    steps = [s for s, _ in reported(out2)]
    assert steps == [20, 40, 60, 80], steps  # one new checkpoint; a restart would report 20 and 40 again
    state = train_state(out2.result.checkpoint.path)
    assert state["step"] == 80 and state["optimizer_steps"] == 80


def test_a_crashed_worker_is_replaced_and_the_run_finishes(ray_local, tmp_path):
    # the last rank is SIGKILLed at step 30; the last checkpoint is at step 20
    cfg = tiny(tmp_path, "crash", "--run.fail_at_step=30", "--run.fail_mode=kill", "--run.max_failures=1")
    out = fit(cfg)
    assert (tmp_path / "crash" / "injected_failure_step_30").exists()  # the crash did happen
    assert out.metrics["step"] == 40
    # the same number of optimizer steps as an uninterrupted run: 20 before the crash, 20 after resuming
    assert train_state(out.result.checkpoint.path)["optimizer_steps"] == 40
    assert [s for s, _ in reported(out)] == [20, 40]


def test_without_retries_a_crash_fails_the_run(ray_local, tmp_path):
    cfg = tiny(tmp_path, "crash-noretry", "--run.fail_at_step=10", "--run.max_failures=0")
    with pytest.raises(Exception, match="injected failure"):
        fit(cfg)


EXPORT_CHECK = r"""
import json, sys
sys.modules['ray'] = None; sys.modules['deepspeed'] = None
import torch
from diled import DiLED
m = DiLED.from_pretrained(sys.argv[1])
x = torch.tensor(json.loads(sys.argv[2]))
print(json.dumps({"encode": m.encode({"x": x}).tolist(), "generate": m.generate(4, steps=10, seed=0),
                  "recon": m.reconstruct({"x": x})}))
"""


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_export_matches_the_trained_engine(ray_local, tmp_path, stage):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    cfg = tiny(tmp_path, f"export-{stage}", deepspeed_arg(stage, tmp_path), "--optim.max_steps=20")
    out = fit(cfg)
    ckpt = Path(out.result.checkpoint.path)
    # the engine's trained weights, reassembled from the DeepSpeed shards of all ranks
    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag="deepspeed")
    engine_model = DiLED.from_config(cfg.model_config())
    engine_model.load_state_dict(state, strict=True)
    engine_model.eval()

    x = [[2.0, 0.0], [0.0, -2.0], [1.4, 1.4]]
    got = subprocess.run([sys.executable, "-c", EXPORT_CHECK, str(out.model_dir), json.dumps(x)],
                         capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr
    loaded = json.loads(got.stdout)
    xt = torch.tensor(x)
    torch.testing.assert_close(torch.tensor(loaded["encode"]), engine_model.encode({"x": xt}), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(loaded["generate"]),
                               torch.tensor(engine_model.generate(4, steps=10, seed=0)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(loaded["recon"]), torch.tensor(engine_model.reconstruct({"x": xt})),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_bf16_on_cpu_trains_under_zero2_and_zero3_and_exports_16_bit(ray_local, tmp_path, stage):
    """scaling.precision=bf16 on CPU through the whole trainer (the prior's input meets bf16 weights: a
    ZeRO-2 bf16 run used to fail there): finite losses, a bf16 export, loaded as fp32."""
    from safetensors import safe_open

    cfg = tiny(tmp_path, f"bf16-{stage}", "--scaling.precision=bf16", deepspeed_arg(stage, tmp_path))
    out = fit(cfg)
    assert out.metrics["step"] == 40 and torch.isfinite(torch.tensor(out.metrics["val_loss"]))
    with safe_open(str(out.model_dir / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    model = DiLED.from_pretrained(out.model_dir)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.isfinite(model.encode({"x": torch.randn(4, 2)})).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bf16 path)")
def test_bf16_on_gpu(ray_local, tmp_path):
    cfg = tiny(tmp_path, "gpu", "--scaling.use_gpu=true", "--scaling.num_workers=1", "--optim.max_steps=20")
    out = fit(cfg)
    assert out.metrics["step"] == 20
    assert train_state(out.result.checkpoint.path)["config"]["scaling"]["use_gpu"] is True


@pytest.mark.parametrize("native", [True, False])
def test_bf16_if_native_follows_the_cpu(monkeypatch, tmp_path, native):
    """precision bf16-if-native: bf16 where the CPU computes bf16 in hardware, fp32 elsewhere, bf16 on GPUs;
    the DeepSpeed config then has bf16 exactly when the resolved precision is bf16."""
    import diled_platform.training.train as train

    cfg = tiny(tmp_path, "native", "--scaling.precision=bf16-if-native")
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: native)
    assert train.native_precision(cfg) == ("bf16" if native else "fp32")
    cfg.scaling.precision = train.native_precision(cfg)
    assert ("bf16" in train.deepspeed_config(cfg, world_size=1)) == native
    cfg.scaling.use_gpu, cfg.scaling.precision = True, "bf16-if-native"
    assert train.native_precision(cfg) == "bf16"


def test_an_unknown_precision_is_refused_by_name(tmp_path):
    from diled_platform.config import ConfigError

    with pytest.raises(ConfigError, match="precision"):
        tiny(tmp_path, "bad", "--scaling.precision=bf17")


def test_prior_stage_trains_the_prior_on_the_latents_once(ray_local, tmp_path):
    cfg = tiny(tmp_path, "prior-stage", "--prior_stage.steps=40", "--prior_stage.batch_size=64",
               "--prior_stage.ema=0.9")
    out = fit(cfg)
    record = json.loads((out.model_dir / "prior_stage.json").read_text())
    assert record["steps"] == 40 and record["latents"] > 1000
    assert record["prior"] == "the jointly trained prior, continued"
    assert json.loads((out.run_dir / "prior_stage.json").read_text()) == record
    staged = DiLED.from_pretrained(out.model_dir)
    joint = DiLED.from_pretrained(out.model_dir.resolve().with_name("model.joint"))
    z, t = torch.randn(4, staged.latent_dim), torch.tensor([1, 3, 7, 9])
    x = torch.randn(5, 2)
    torch.testing.assert_close(staged.encode({"x": x}), joint.encode({"x": x}))   # the codec is untouched
    assert (staged.denoiser(z, t) - joint.denoiser(z, t)).abs().max() > 1e-4     # the prior trained on
    # the same run again: training is finished and the stage is not repeated
    again = fit(cfg)
    assert json.loads((again.model_dir / "prior_stage.json").read_text()) == record


def test_prior_stage_needs_local_storage(tmp_path):
    from diled_platform.config import ConfigError

    cfg = tiny(tmp_path, "remote", "--prior_stage.steps=5", "--run.storage_path=s3://bucket/runs")
    with pytest.raises(ConfigError, match=r"prior_stage.steps=5 \(guide_steps=0, temperatures=\[\]\) rewrites the exported"):
        fit(cfg)


def test_prior_stage_can_replace_the_prior_with_a_fresh_one_of_another_kind(ray_local, tmp_path):
    from diled import SlotTransformer

    cfg = tiny(tmp_path, "prior-stage-fresh", "--optim.max_steps=20", "--prior_stage.steps=30",
               "--prior_stage.batch_size=64", "--prior_stage.t_sampling=log_uniform",
               "--prior_stage.prior={name: slot_transformer, slots: 2, hidden: 16, depth: 1, heads: 2}")
    out = fit(cfg)
    record = json.loads((out.model_dir / "prior_stage.json").read_text())
    assert record["prior"]["name"] == "slot_transformer" and record["t_sampling"] == "log_uniform"
    model = DiLED.from_pretrained(out.model_dir)
    assert isinstance(model.denoiser, SlotTransformer) and model.denoiser.slots == 2
    assert len(model.generate(3, steps=5)) == 3


def test_the_slot_prior_trains_jointly_under_zero3(ray_local, tmp_path):
    """The slot transformer as the joint prior, every parameter partitioned: it learns, exports and loads."""
    from diled import SlotTransformer

    cfg = tiny(tmp_path, "slot-prior-zero3", deepspeed_arg("zero3", tmp_path), "--optim.max_steps=40",
               "--model.prior=slot_transformer", "--model.prior_hidden=16", "--model.prior_depth=2",
               "--model.prior_args={slots: 2, heads: 2}")
    out = fit(cfg)
    rows = reported(out)
    assert rows[-1][1]["val_loss"] < rows[0][1]["val_loss"], rows
    model = DiLED.from_pretrained(out.model_dir)
    assert isinstance(model.denoiser, SlotTransformer) and model.denoiser.slots == 2
    assert torch.isfinite(model.sample_latents(4, steps=5)).all()

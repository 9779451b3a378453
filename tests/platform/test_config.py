import pytest

from diled_platform.config import (ConfigError, JobConfig, apply_overrides, load_config, load_preset,
                                   preset_names)
from diled_platform.training.train import deepspeed_config


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_parses(name):
    cfg = load_config(name)
    assert isinstance(cfg, JobConfig)
    # and builds a DeepSpeed config with concrete values only
    ds = deepspeed_config(cfg, world_size=cfg.scaling.num_workers)
    assert "auto" not in repr(ds)
    assert ds["train_batch_size"] == cfg.data.batch_size * cfg.optim.grad_accum * cfg.scaling.num_workers


def test_there_are_presets():
    assert "vector-cpu" in preset_names()


def test_overrides_are_parsed_as_yaml():
    cfg = load_config("vector-cpu", ["--optim.lr=3e-4", "--scaling.num_workers=1", "--run.name=x",
                                     "--model.codec_args={data_dim: 2, hidden: 8}"])
    assert cfg.optim.lr == 3e-4 and cfg.scaling.num_workers == 1 and cfg.run.name == "x"
    assert cfg.model.codec_args == {"data_dim": 2, "hidden": 8}


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"optim\.lrr.*valid: .*'optim\.lr'"):
        load_config("vector-cpu", ["--optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"unknown config section.*'optimiser'"):
        JobConfig.from_dict({"optimiser": {}})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"optim\.max_steps must be of type int, got 'many'"):
        load_config("vector-cpu", ["--optim.max_steps=many"])
    with pytest.raises(ConfigError, match=r"scaling\.precision: 'fp16' is not one of"):
        load_config("vector-cpu", ["--scaling.precision=fp16"])


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match=r"diffusion\.schedule: 'sigmoid' is not one of 'constant', 'linear', 'cosine'"):
        load_config("vector-cpu", ["--diffusion.schedule=sigmoid"])
    with pytest.raises(ConfigError, match=r"diffusion\.T must be >= 2"):
        load_config("vector-cpu", ["--diffusion.T=1"])
    with pytest.raises(ConfigError, match=r"scaling\.deepspeed.*'zero7'.*zero2"):
        load_config("vector-cpu", ["--scaling.deepspeed=zero7"])
    with pytest.raises(ConfigError, match=r"data\.batch_size must be > 0"):
        load_config("vector-cpu", ["--data.batch_size=0"])


@pytest.mark.parametrize("override, message", [
    ("--model.codec_args.slot_dropoutt=0.1", r"codec 'text' has no option 'slot_dropoutt'; its options: latent_dim, "),
    ("--model.codec_args.slot_dropout=2", r"slot_dropout must be a number in \[0, 1\), got 2"),
    ("--model.codec_args.slot_dropout_after=5", r"slot_dropout_after=5 needs slot_dropout > 0"),
    ("--model.codec_args.decoding={strategy: bem}", r"decoding.strategy must be 'greedy' or 'beam'.*'bem'"),
    ("--model.codec_args.latent_slots=7", r"latent_slots must be >= 1 and divide latent_dim=512, got 7"),
    ("--model.codec=txt", r"unknown codec 'txt'; built-in codecs: image, protein, text, vector \(")])
def test_the_codec_options_are_checked_before_any_worker_builds_the_codec(override, message):
    """What a driver (and a job's --dry-run) can check of model.codec_args without loading a weight; the text
    data type's own key (vocab_size, for the BPE it trains) is not taken for a codec option."""
    assert load_config("text-cpu").model.codec_args["vocab_size"] == 8000
    with pytest.raises(ConfigError, match=r"model.codec / model.codec_args: " + message):
        load_config("text-cpu", [override])


def test_malformed_override_and_missing_preset():
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["optim.lr=1"])
    with pytest.raises(ConfigError, match="section.key"):
        apply_overrides({}, ["--lr=1"])
    with pytest.raises(ConfigError, match="no preset 'nope'.*vector-cpu"):
        load_preset("nope")


def test_an_override_can_set_one_item_of_a_mapping():
    preset = load_preset("text-xl-cpu")
    cfg = load_config("text-xl-cpu", ["--model.codec_args.max_length=24"])
    assert cfg.model.codec_args["max_length"] == 24
    assert cfg.model.codec_args["decoder_config"] == preset["model"]["codec_args"]["decoder_config"]  # the rest kept
    assert load_preset("text-xl-cpu") == preset  # the preset itself is not changed
    with pytest.raises(ConfigError, match=r"model\.w is 1\.0, not a mapping"):
        apply_overrides(preset, ["--model.w.x=1"])


def test_deepspeed_file_may_not_set_what_the_job_config_owns(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"zero_optimization": {"stage": 2}, "optimizer": {"type": "Adam"}}')
    cfg = load_config("vector-cpu", [f"--scaling.deepspeed={bad}"])
    with pytest.raises(ConfigError, match="optimizer"):
        deepspeed_config(cfg, 2)


def test_bf16_by_default_on_gpu_and_on_cpu_only_when_asked_for():
    cfg = load_config("vector-cpu")
    assert "bf16" not in deepspeed_config(cfg, 2)
    gpu = load_config("vector-cpu", ["--scaling.use_gpu=true"])
    assert deepspeed_config(gpu, 2)["bf16"] == {"enabled": True}
    assert "bf16" not in deepspeed_config(load_config("vector-cpu", ["--scaling.use_gpu=true", "--scaling.precision=fp32"]), 2)
    cpu_bf16 = load_config("vector-cpu", ["--scaling.precision=bf16"])
    assert deepspeed_config(cpu_bf16, 2)["bf16"] == {"enabled": True}


def test_fused_adamw_is_asked_for_unless_switched_off():
    cfg = load_config("vector-cpu")
    assert deepspeed_config(cfg, 2)["optimizer"]["params"]["fused"] is True
    plain = load_config("vector-cpu", ["--optim.fused=false"])
    assert "fused" not in deepspeed_config(plain, 2)["optimizer"]["params"]


def _lr_curve(cfg):
    """The lr DeepSpeed's scheduler gives at each optimizer step, built from our config entry."""
    import torch
    from deepspeed.runtime import lr_schedules

    entry = deepspeed_config(cfg, 1)["scheduler"]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optim.lr)
    sched = getattr(lr_schedules, entry["type"])(opt, **entry["params"])
    lrs = []
    for _ in range(cfg.optim.max_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("decay,end", [("constant", 1.0), ("linear", 0.0), ("cosine", 0.1)])
def test_lr_warms_up_then_follows_the_decay(decay, end):
    cfg = load_config("vector-cpu", ["--optim.lr=1e-3", "--optim.warmup_steps=10", "--optim.max_steps=100",
                                     f"--optim.decay={decay}", f"--optim.min_lr_ratio={end if decay == 'cosine' else 0}"])
    lrs = _lr_curve(cfg)
    assert lrs[0] == 0.0 and 0.3e-3 < lrs[5] < 0.6e-3          # linear warmup (DeepSpeed: one step late)
    assert max(lrs) == pytest.approx(1e-3, rel=1e-3)
    assert lrs[-1] == pytest.approx(end * 1e-3, abs=3e-5)
    assert all(a >= b for a, b in zip(lrs[11:], lrs[12:]))   # never rises after warmup


def test_decay_settings_are_checked():
    with pytest.raises(ConfigError, match="optim.min_lr_ratio"):
        load_config("vector-cpu", ["--optim.min_lr_ratio=2"])
    with pytest.raises(ConfigError, match="warmup_steps"):
        load_config("vector-cpu", ["--optim.decay=cosine", "--optim.warmup_steps=50", "--optim.max_steps=50"])
    with pytest.raises(ConfigError, match="invalid|decay"):
        load_config("vector-cpu", ["--optim.decay=step"])
    with pytest.raises(ConfigError, match="cosine"):     # caught when the config is read, not in a worker
        load_config("vector-cpu", ["--optim.decay=linear", "--optim.min_lr_ratio=0.1"])


def _group_lrs(cfg, groups, scales, steps=8):
    """Each parameter group's lr after ``steps`` optimizer steps under our DeepSpeed scheduler entry."""
    import torch
    from deepspeed.runtime import lr_schedules

    entry = deepspeed_config(cfg, 1, scales)["scheduler"]
    opt = torch.optim.AdamW(groups, lr=cfg.optim.lr)
    sched = getattr(lr_schedules, entry["type"])(opt, **entry["params"])
    for _ in range(steps):
        opt.step()
        sched.step()
    return [g["lr"] for g in opt.param_groups]


@pytest.mark.parametrize("decay", ["constant", "cosine"])
def test_lr_scale_gives_prefixes_their_own_lr(decay):
    import torch

    from diled_platform.training.train import param_groups

    model = torch.nn.ModuleDict({"enc": torch.nn.Linear(2, 2), "dec": torch.nn.Linear(2, 2),
                                 "frozen": torch.nn.Linear(2, 2)})
    model["frozen"].requires_grad_(False)
    groups, scales = param_groups(model, 1e-3, {"enc": 0.1, "enc.bias": 0.5})
    assert scales == [1.0, 0.1, 0.5]                       # rest first, then prefixes; the longest wins
    assert [len(g["params"]) for g in groups] == [2, 1, 1] and [g["lr"] for g in groups] == [1e-3, 1e-4, 5e-4]
    cfg = load_config("vector-cpu", ["--optim.lr=1e-3", "--optim.warmup_steps=5", "--optim.max_steps=50",
                                     f"--optim.decay={decay}"])
    assert _group_lrs(cfg, groups, scales) == pytest.approx([1e-3, 1e-4, 5e-4], rel=0.02)
    with pytest.raises(ConfigError, match=r"\['encoder'\] match no parameter"):
        param_groups(model, 1e-3, {"encoder": 0.1})
    _, only_frozen = param_groups(model, 1e-3, {"frozen": 0.1})     # nothing to scale: one group
    assert only_frozen == [1.0]
    model["dec"].requires_grad_(False)                              # one group, and it is scaled
    groups, scales = param_groups(model, 1e-3, {"enc": 0.5})
    assert scales == [0.5] and _group_lrs(cfg, groups, scales) == pytest.approx([5e-4], rel=0.02)
    with pytest.raises(ConfigError, match="lr_scale values"):
        load_config("vector-cpu", ["--optim.lr_scale={enc: 0}"])


def test_length_buckets_group_similar_lengths_and_keep_every_example():
    import numpy as np

    from diled_platform.training.train import length_bucketed

    texts = np.array(["x" * n for n in [5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 11, 12]], dtype=object)
    cols = {"x": texts, "label": np.arange(12)}
    parts = length_bucketed(cols, 4, np.random.default_rng(0), [len(t) for t in texts])
    assert len(parts) == 3 and all(len(p["x"]) == 4 for p in parts)
    assert sorted(len(p["x"][0]) for p in parts) == [1, 5, 9]           # contiguous length ranges
    assert sorted(int(i) for p in parts for i in p["label"]) == list(range(12))
    for p in parts:                                                      # rows stay aligned across columns
        assert all(len(t) == [5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 11, 12][i] for t, i in zip(p["x"], p["label"]))
    with pytest.raises(ConfigError, match="length_buckets"):
        load_config("vector-cpu", ["--data.length_buckets=-1"])


def test_the_report_size_is_set_per_run_and_mapped_to_each_report():
    cfg = load_config("text-xl-cpu")
    assert cfg.run.report and cfg.run.report_kwargs() == {"ddim_steps": 10, "n_eval": 4, "n_samples": 4}
    assert load_config("text-cpu").run.report_kwargs() == {"ddim_steps": 50}  # the data type's defaults
    small = load_config("vector-cpu", ["--run.report_examples=100"])
    assert small.run.report_kwargs(examples="n", samples="n", steps="steps") == {"steps": 50, "n": 100}
    with pytest.raises(ConfigError, match="run.report_samples must be >= 2.*run.report=false"):
        load_config("text-cpu", ["--run.report_samples=0"])


def test_the_xl_preset_is_gpt2_xl_shaped_under_zero3():
    from diled_platform.training.train import zero_stage

    cfg = load_config("text-xl-cpu")
    dec = cfg.model.codec_args["decoder_config"]
    assert (dec["n_layer"], dec["n_embd"], dec["n_head"], dec["vocab_size"]) == (48, 1600, 25, 50257)
    assert cfg.model.codec_args["tokenizer"] == "gpt2-tiktoken" and cfg.model.codec_args["decoder_trainable"] == "paper"
    assert zero_stage(cfg) == 3 and cfg.scaling.num_workers == 2
    assert cfg.scaling.precision == "bf16" and deepspeed_config(cfg, 2)["bf16"] == {"enabled": True}


def test_a_relative_storage_path_survives_ray_job_submit(tmp_path, monkeypatch):
    from diled_platform.config import load_config
    from diled_platform.training.driver import absolute_storage, runs_base

    cfg = load_config("vector-cpu", ["--run.storage_path=runs"])
    monkeypatch.delenv("DILED_RUNS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    plain = tmp_path / "project"
    package = tmp_path / "ray" / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0a1b"
    for folder in (plain, package):
        folder.mkdir(parents=True)
    assert runs_base(plain) == plain and runs_base(package) == tmp_path / "home" / "diled"
    monkeypatch.chdir(package)  # where `ray job submit --working-dir .` runs the driver
    assert absolute_storage(cfg).run.storage_path == str(tmp_path / "home" / "diled" / "runs")
    monkeypatch.chdir(plain)
    assert absolute_storage(cfg).run.storage_path == str(plain / "runs")
    monkeypatch.setenv("DILED_RUNS", str(tmp_path / "shared"))
    assert absolute_storage(cfg).run.storage_path == str(tmp_path / "shared" / "runs")
    absolute = load_config("vector-cpu", [f"--run.storage_path={tmp_path / 'abs'}"])
    assert absolute_storage(absolute).run.storage_path == str(tmp_path / "abs")


def test_a_local_storage_path_is_refused_on_a_cluster_of_several_machines(monkeypatch):
    from diled_platform.config import ConfigError
    from diled_platform.training.driver import check_storage_reaches_every_node

    one_machine = [{"NodeManagerAddress": "10.0.0.1", "Alive": True}] * 2  # e.g. ray.cluster_utils.Cluster
    two = [{"NodeManagerAddress": "10.0.0.1", "Alive": True}, {"NodeManagerAddress": "10.0.0.2", "Alive": True}]
    check_storage_reaches_every_node("/data/runs", one_machine)
    check_storage_reaches_every_node("/data/runs", two[:1] + [{**two[1], "Alive": False}])
    check_storage_reaches_every_node("s3://bucket/runs", two)
    monkeypatch.delenv("DILED_SHARED_STORAGE", raising=False)
    with pytest.raises(ConfigError, match=r"run.storage_path=/data/runs is a local path.*2 machines.*s3://"):
        check_storage_reaches_every_node("/data/runs", two)
    monkeypatch.setenv("DILED_SHARED_STORAGE", "1")
    check_storage_reaches_every_node("/data/runs", two)


def test_the_prior_is_chosen_by_name_and_its_arguments_are_checked():
    cfg = load_config("text-cpu", ["--model.prior=slot_transformer", "--model.prior_args={slots: 8, heads: 4}",
                                   "--model.prior_hidden=128", "--model.prior_depth=2"])
    assert cfg.model_config()["denoiser"] == {"name": "slot_transformer", "latent_dim": 512, "hidden": 128,
                                              "depth": 2, "time_dim": 128, "slots": 8, "heads": 4}
    with pytest.raises(ConfigError, match="model.prior.*unknown prior 'unet'"):
        load_config("vector-cpu", ["--model.prior=unet"])
    with pytest.raises(ConfigError, match=r"model.prior.*slots=3 must divide latent_dim=512"):
        load_config("text-cpu", ["--model.prior=slot_transformer", "--model.prior_args={slots: 3}"])
    with pytest.raises(ConfigError, match=r"unknown argument\(s\) \['heads'\] for prior 'mlp_skip'"):
        load_config("vector-cpu", ["--model.prior_args={heads: 2}"])
    with pytest.raises(ConfigError, match=r"prior_stage.ema must be in \[0, 1\)"):
        load_config("vector-cpu", ["--prior_stage.ema=1.0"])
    with pytest.raises(ConfigError, match="prior_stage.batch_size must be > 0"):
        load_config("vector-cpu", ["--prior_stage.batch_size=0"])
    with pytest.raises(ConfigError, match=r"prior_stage.guide_steps must be >= 0 \(0: no guide\)"):
        load_config("vector-cpu", ["--prior_stage.guide_steps=-1"])
    with pytest.raises(ConfigError, match=r"prior_stage.prior: unknown prior 'unet'"):
        load_config("vector-cpu", ["--prior_stage.prior={name: unet}"])
    with pytest.raises(ConfigError, match="prior_stage.prior must not set latent_dim"):
        load_config("vector-cpu", ["--prior_stage.prior={name: mlp_skip, latent_dim: 3}"])
    with pytest.raises(ConfigError, match="prior_stage.t_sampling"):
        load_config("vector-cpu", ["--prior_stage.t_sampling=cubic"])


def test_a_presets_w_reaches_the_loss():
    """w is defined once (diled.model.DEFAULT_W, the paper's) and a preset's or an override's value is what
    the trainer's model weighs the prior's terms with: loss = mean(rec / (T lambda_t)) + w mean(diff)."""
    import torch

    from diled.model import DEFAULT_W
    from diled_platform.config import JobConfig
    from diled_platform.training.zero import build_model

    assert JobConfig().model.w == DEFAULT_W
    for override, expected in (([], 1.0), (["--model.w=3.5"], 3.5)):
        cfg = load_config("vector-cpu", override)
        model, _ = build_model(cfg, {})
        assert model.w == expected
        torch.manual_seed(0)
        batch = {"x": torch.randn(16, 2)}
        t = torch.randint(1, model.diffusion.T + 1, (16,))
        torch.manual_seed(1)
        out = model(batch, t=t)
        expect = (out["rec"] * model.diffusion.rec_weight(t)).mean() + expected * out["diff"].mean()
        torch.testing.assert_close(out["loss"], expect)
        # and a different w gives a different loss on the same draw
        model.w = expected + 1.0
        torch.manual_seed(1)
        again = model(batch, t=t)
        assert abs(float(again["loss"] - out["loss"]) - float(again["diff"].mean())) < 1e-4


def test_one_dotted_setter_serves_overrides_and_sweeps():
    from diled_platform.config import set_dotted
    from diled_platform.sweeps import spec

    base = load_preset("text-cpu")
    data = set_dotted(base, {"model.w": 2.0, "model.codec_args.max_length": 24}, "space")
    assert data["model"]["w"] == 2.0 and data["model"]["codec_args"]["max_length"] == 24
    assert base["model"]["codec_args"]["max_length"] != 24 and base["model"].get("w") != 2.0  # a copy
    assert apply_overrides(base, ["--model.w=2.0", "--model.codec_args.max_length=24"]) == data
    assert spec.set_dotted is set_dotted  # the sweep's overrides and space go through the same function
    with pytest.raises(ConfigError, match=r"space 'w': the key must be section.key"):
        set_dotted(base, {"w": 1.0}, "space")
    with pytest.raises(ConfigError, match=r"space model.w.x: model.w is 0.43, not a mapping"):
        set_dotted({"model": {"w": 0.43}}, {"model.w.x": 1}, "space")


def test_a_label_head_without_labels_in_the_data_is_a_config_error(tmp_path):
    from diled_platform.datatypes import datatype_for

    data = tmp_path / "reviews.csv"
    data.write_text("text\n" + "".join(f"sentence number {i} is here\n" for i in range(60)))
    cfg = load_config("text-cpu", ["--data.source=text_files", f"--data.path={data}",
                                   "--model.codec_args.label_head={classes: [negative, positive]}"])
    with pytest.raises(ConfigError, match=r"model.codec_args.label_head.classes=\['negative', 'positive'\]"):
        datatype_for(cfg).prepare(cfg, tmp_path / "run")


def test_a_joint_conditional_prior_takes_the_data_types_classes_once_on_the_driver(tmp_path):
    from diled_platform.datatypes import datatype_for
    from diled_platform.training.driver import condition_indices, with_classes

    with pytest.raises(ConfigError, match=r"model\.cond_drop must be in \[0, 1\], got 1.5"):
        load_config("image-cpu", ["--model.cond_drop=1.5"])
    with pytest.raises(ConfigError, match=r"model\.conditional trains the prior with classes; model\.objective='autoencoder'"):
        load_config("image-cpu", ["--model.conditional=true", "--model.objective=autoencoder"])
    vectors = load_config("vector-cpu", ["--model.conditional=true"])
    with pytest.raises(ConfigError, match=r"model\.conditional=true needs the data's classes, and data type 'vector'"):
        with_classes(vectors, datatype_for(vectors))
    data = tmp_path / "reviews.csv"
    data.write_text("text,mood\n" + "".join(f"sentence number {i} is here,{'up' if i % 3 else 'down'}\n"
                                            for i in range(60)))
    cfg = load_config("text-cpu", ["--data.source=text_files", f"--data.path={data}", "--data.label_column=mood",
                                   "--model.conditional=true"])
    resolved = with_classes(cfg, datatype_for(cfg))
    assert resolved.model.prior_args["classes"] == ["down", "up"]
    assert resolved.model_config()["denoiser"]["classes"] == ["down", "up"]  # what every worker builds
    assert with_classes(resolved, None) is resolved  # resolved once: the data type is not asked again
    datatype = datatype_for(cfg)
    labels = datatype.splits["train"].column("label").to_pylist()
    assert condition_indices(datatype, ["up"]) == [0 if label == "up" else -1 for label in labels]  # a user's subset
    with pytest.raises(ConfigError, match=r"model\.prior_args\.classes=\['sideways'\]: no training example"):
        condition_indices(datatype, ["sideways"])
    assert load_config("text-cpu").model.conditional is False

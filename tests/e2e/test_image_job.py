"""jobs/train_image.py end to end on a tiny configuration, DiLED and the two-stage recipe through the same
code path (the image-cpu preset is measured in the README)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_image_job_tiny_with_the_two_stage_baseline(tmp_path):
    args = [sys.executable, str(ROOT / "jobs/train_image.py"), "--compare-two-stage", "--run.name=tiny",
            f"--run.storage_path={tmp_path}", "--data.max_examples=3000", "--optim.max_steps=60",
            "--run.checkpoint_every=30", "--scaling.num_workers=1", "--model.prior_hidden=64",
            "--model.codec_args={width: 16}", "--model.latent_dim=8",
            "--prior_stage.guide_steps=50"]  # a class guide only (the prior stays the joint one)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(args, capture_output=True, text=True, timeout=850, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    joint, stage1, two = tmp_path / "tiny", tmp_path / "tiny-two-stage-stage1", tmp_path / "tiny-two-stage"
    for name in ("model/model.safetensors", "samples.png", "reconstructions.png", "interpolations.png", "eval.json",
                 "feature_classifier.safetensors", "feature_classifier.json", "comparison.md"):
        assert (joint / name).is_file(), name
    assert (stage1 / "model" / "model.safetensors").is_file() and (two / "samples.png").is_file()
    a, b = (json.loads((d / "eval.json").read_text()) for d in (joint, two))
    assert a["objective"] == "diled" and b["objective"] == "prior_only"
    for m in (a, b):
        fd = m["frechet_classifier_features"]
        assert fd["samples_vs_test"] >= 0 and fd["test_half_vs_half"] >= 0
        assert m["samples_exact_copies"] == 0 and 0 < m["reconstruction_psnr_db"] < 60
    # the second stage kept the first stage's codec: same reconstructions
    s1 = json.loads((stage1 / "metrics.json").read_text())
    assert abs(b["train"]["val_rec"] - s1["val_rec"]) < 0.05 * abs(s1["val_rec"]) + 1.0
    assert "| model | rec. PSNR (dB) ↑ |" in out.stdout and "| two-stage |" in out.stdout
    # the guide: trained on the labelled training latents, saved beside the model, judged by the feature
    # classifier it never saw, with a row of samples per class
    assert (joint / "model/guide/model.safetensors").is_file() and (joint / "guided_samples.png").is_file()
    guided = a["guided"]
    assert len(guided["by_class"]) == 10 and 0 <= guided["mean_judged_as_target"] <= 1
    # each class's Frechet distance against that class's test images, beside the unguided samples' and the floor
    assert all(v["frechet_vs_class_test"] > 0 for v in guided["by_class"].values())
    assert guided["max_class_frechet"] == max(v["frechet_vs_class_test"] for v in guided["by_class"].values())
    assert guided["unguided_frechet_vs_test"] == a["frechet_classifier_features"]["samples_vs_test"]
    assert 0 < guided["size_matched_floor"] < guided["max_class_frechet"]
    assert json.loads((joint / "prior_stage.json").read_text())["steps"] == 0


def test_image_job_with_a_jointly_trained_conditional_prior(tmp_path):
    """--model.conditional: the classes reach the joint prior on the workers (each dropped with cond_drop), the
    saved prior knows them, and the report guides classifier-free (no guide is trained)."""
    import torch

    from diled import DiLED

    args = [sys.executable, str(ROOT / "jobs/train_image.py"), "--run.name=cond", f"--run.storage_path={tmp_path}",
            "--data.max_examples=3000", "--optim.max_steps=40", "--run.checkpoint_every=40",
            "--scaling.num_workers=1", "--model.prior_hidden=64", "--model.codec_args={width: 16}",
            "--model.latent_dim=8", "--model.conditional=true", "--model.cond_drop=0.2", "--run.report_samples=200"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(args, capture_output=True, text=True, timeout=850, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    run = tmp_path / "cond"
    config = json.loads((run / "model/config.json").read_text())
    assert config["denoiser"]["classes"][:2] == ["T-shirt/top", "Trouser"] and len(config["denoiser"]["classes"]) == 10
    trained = DiLED.from_pretrained(run / "model")
    torch.manual_seed(0)  # the workers' seed (run.seed): the same initial weights
    initial = DiLED.from_config(config)
    moved = (trained.denoiser.class_embedding.table.weight - initial.denoiser.class_embedding.table.weight).abs().amax(1)
    assert (moved > 0).all(), moved  # every class's row and the null row trained: the labels reached the workers
    guided = json.loads((run / "eval.json").read_text())["guided"]
    assert guided["guidance"] == "classifier-free" and len(guided["by_class"]) == 10
    assert not (run / "model/guide").exists()

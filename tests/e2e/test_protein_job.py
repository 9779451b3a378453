"""jobs/train_protein.py end to end on a tiny configuration, DiLED and the autoencoder baseline through
the same code path (the protein-cpu preset is measured in the README)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_protein_job_tiny_with_the_autoencoder_baseline(tmp_path):
    args = [sys.executable, str(ROOT / "jobs/train_protein.py"), "--compare-autoencoder", "--run.name=tiny",
            f"--run.storage_path={tmp_path}", "--data.max_examples=2000", "--optim.max_steps=60",
            "--run.checkpoint_every=30", "--scaling.num_workers=1", "--model.prior_hidden=64",
            "--prior_stage.guide_steps=50", "--prior_stage.guide=value"]  # a fitness guide: ">= y" (the prior stays)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(args, capture_output=True, text=True, timeout=850, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    diled, ae = tmp_path / "tiny", tmp_path / "tiny-autoencoder"
    for name in ("model/model.safetensors", "reconstructions.tsv", "samples.txt", "optimized.tsv", "eval.json",
                 "metrics.json", "latents_fitness.png", "comparison.md"):
        assert (diled / name).is_file(), name
    assert (ae / "eval.json").is_file() and not (ae / "samples.txt").exists()  # no trained prior to sample
    a, b = (json.loads((d / "eval.json").read_text()) for d in (diled, ae))
    assert a["objective"] == "diled" and b["objective"] == "autoencoder"
    for m in (a, b):
        for key in ("residue_accuracy", "mutated_residue_accuracy", "fitness_mse", "fitness_pearson", "fitness_spearman"):
            assert isinstance(m[key], float)
        assert m["optimize_gradient"]["valid"] == 1.0 and m["optimize_sampling"]["valid"] == 1.0
    assert "| model | residue acc. ↑ |" in out.stdout and "| diled |" in out.stdout and "| autoencoder |" in out.stdout
    # DiLED's guide, judged by GB1's measurements and the fitness head; the autoencoder has none
    guided = a["guided"]
    # toward the training split's 90th percentile of measured fitness, as a value condition
    assert guided["target"] == f">= {guided['threshold_measured_fitness']:.4f}" and (diled / "guided_fitness.png").is_file()
    for name in ("unguided", "guided"):
        assert 0 <= guided[name]["valid"] <= 1 and 0 <= guided[name]["novel"] <= 1 and guided[name]["measured_in_gb1"] >= 0
    assert "guided" not in b and "regressor" in json.loads((diled / "model/guide/config.json").read_text())

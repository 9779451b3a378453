"""jobs/evaluate.py end to end on a tiny text configuration: the baselines train through the same trainer,
the tables are written, and a re-run loads the models already trained instead of training them again
(the full text table is measured in the README)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

TINY = ["--data.max_examples=600", "--data.batch_size=8", "--run.log_every=5", "--model.prior_hidden=64",
        "--prior_stage.steps=10", "--prior_stage.temperatures=[]",
        "--model.latent_dim=16",
        "--model.prior_depth=2", "--lm-steps=5",
        "--model.codec_args={tokenizer: train, vocab_size: 500, max_length: 24, encoder_trainable_layers: 1,"
        " decoder_config: {n_layer: 2, n_embd: 64, n_head: 2, n_positions: 32}}"]


def run(args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, str(ROOT / "jobs/evaluate.py"), *args], capture_output=True, text=True,
                         timeout=1100, env=env, cwd=cwd)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out


def test_evaluate_tiny_text_all_baselines_then_resume(tmp_path):
    out_dir = tmp_path / "eval"
    out = run(["--steps=6", "--seeds", "0", "--out", str(out_dir), "--vae-beta=0.02", *TINY], tmp_path)
    for name in ("table.md", "table.csv", "table.png", "results.json", "reference_lm/reference_lm.json",
                 "tokenizer/tokenizer.json"):
        assert (out_dir / name).is_file(), name
    results = json.loads((out_dir / "results.json").read_text())
    assert set(results["runs"]) == {"diled", "vae", "two-stage"}
    assert results["setup"]["reference_lm"]["val_perplexity"] > 1
    objectives = {}
    for model, runs in results["runs"].items():
        (entry,) = runs
        config = json.loads((Path(entry["model_dir"]) / "config.json").read_text())
        objectives[model] = config["objective"]
        assert 0 <= entry["reconstruction_token_accuracy"] <= 1 and entry["generation_perplexity"] > 1
        assert 0 < entry["mauve"] <= 1 and entry["seconds"]["train"] > 0
        assert (Path(entry["model_dir"]).parent / "samples.txt").is_file()
    assert objectives == {"diled": "diled", "vae": "vae", "two-stage": "prior_only"}
    vae = json.loads((Path(results["runs"]["vae"][0]["model_dir"]) / "config.json").read_text())["vae"]
    assert vae == {"free_bits": 0.5, "anneal_steps": 3, "beta": 0.02}     # the text defaults, beta given
    rows = list(csv.DictReader(open(out_dir / "table.csv")))
    assert {r["model"] for r in rows} == {"diled", "vae", "two-stage"} and all(r["seeds"] == "1" for r in rows)
    table = (out_dir / "table.md").read_text()
    assert "| diled |" in table and "*held-out data*" in table and "**bold**" in table
    assert "VAE: KL weight 0.02, annealed over 3 steps, free bits 0.5" in table
    assert "| two-stage |" in out.stdout

    # a second seed only for DiLED: seed 0 is loaded, not retrained
    run(["--steps=6", "--seeds", "0", "1", "--models", "diled", "--out", str(out_dir), *TINY], tmp_path)
    again = json.loads((out_dir / "results.json").read_text())
    seconds = [r["seconds"]["train"] for r in again["runs"]["diled"]]
    assert seconds[0] == 0 and seconds[1] > 0
    first = again["runs"]["diled"][0]["seconds"]["train_recorded"]
    assert first == results["runs"]["diled"][0]["seconds"]["train"] > 0    # the time it took when trained
    assert again["runs"]["diled"][0]["reconstruction_bleu"] == results["runs"]["diled"][0]["reconstruction_bleu"]
    assert all(r["seeds"] == "2" for r in csv.DictReader(open(out_dir / "table.csv")))

"""jobs/train_text.py end to end on a tiny configuration: trains through Ray Train + DeepSpeed, then
writes every output the job promises (the full text-cpu preset is measured in the README)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_text_job_tiny(tmp_path):
    args = [sys.executable, str(ROOT / "jobs/train_text.py"), "--run.name=tiny", f"--run.storage_path={tmp_path}",
            "--data.max_examples=600", "--optim.max_steps=40", "--optim.warmup_steps=5", "--run.checkpoint_every=20", "--run.log_every=10",
            "--data.batch_size=8", "--model.prior_hidden=64", "--model.prior_depth=2", "--prior_stage.steps=20",
            "--prior_stage.guide_steps=30", "--run.report_guided=8", "--prior_stage.temperature_samples=40",  # a sentiment guide, and its report section
            # the preset's decoder kind (MiniLM's first layer, warm-started, with the trained BPE transplanted)
            # its latent slots (8 x 4 here), its default decoding (beam search), a sentiment label head and the
            # sentence path with slot dropout from step 20 (the trainer must say the step, or step 1 fails)
            "--model.latent_dim=32", "--model.codec_args={tokenizer: train, vocab_size: 500, max_length: 24,"
            " encoder_layers: 1, encoder_trainable_layers: 1, decoder_kind: bert, decoder_layers: 1,"
            " latent_slots: 8, slot_tokens: 3, decoding: {strategy: beam, num_beams: 2, length_penalty: 0.6},"
            " label_head: {classes: [negative, positive], weight: 1.0, noise: 0.1}, sentence_latent: 4,"
            " slot_dropout: 0.3, slot_dropout_after: 20}"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    out = subprocess.run(args, capture_output=True, text=True, timeout=850, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    run = tmp_path / "tiny"
    for name in ("model/model.safetensors", "samples.txt", "reconstructions.tsv", "interpolations.txt",
                 "arithmetic.tsv", "eval.json", "metrics.json", "loss_curves.png", "latents_pca.png",
                 "tokenizer/tokenizer.json", "reconstructions_second_test.tsv"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "eval.json").read_text())
    for key in ("reconstruction_bleu", "reconstruction_token_accuracy", "distinct_1", "distinct_2", "self_bleu",
                "samples_with_repeated_3gram", "samples_with_repeated_3gram_default_decoding",
                "novelty", "arithmetic_flip_rate", "sentiment_classifier_test_accuracy",
                "second_test_reconstruction_bleu", "second_test_reconstruction_token_accuracy",
                "second_test_reconstruction_bleu_other_latent", "unseen_words_samples", "unseen_words_test",
                "unseen_words_samples_greedy", "reconstruction_bleu_default_decoding",
                "mauve_ceiling_val_vs_test"):
        assert key in metrics
    # MAUVE from mauve-text over 3 k-means seeds, on the samples decoded the saved default way (Serve's) against
    # the test sentences
    assert metrics["default_decoding"] == "strategy beam, num_beams 2, length_penalty 0.6"
    assert json.loads((run / "model/config.json").read_text())["codec"]["decoding"]["strategy"] == "beam"
    assert 0 < metrics["mauve"] <= 1 and len(metrics["mauve_per_seed"]) == 3
    # the label head: its term trained and validated with the rest (the data's labels reach the workers), its
    # accuracy on the test latents reported
    logged = json.loads((run / "metrics.json").read_text())
    codec_config = json.loads((run / "model/config.json").read_text())["codec"]
    assert codec_config["label_head"]["classes"] == ["negative", "positive"]
    assert codec_config["sentence_latent"] == 4 and codec_config["slot_dropout"] == 0.3
    assert codec_config["slot_dropout_after"] == 20
    assert 0 <= metrics["label_head_test_accuracy"] <= 1
    assert logged["val_label_ce"] > 0
    assert metrics["mauve_n"][0] == metrics["samples"]
    assert metrics["second_test_set"].startswith("Guardian news headlines") and metrics["second_test_sentences"] > 0
    rows = (run / "reconstructions_second_test.tsv").read_text().splitlines()
    assert rows[0] == "input\toutput" and len(rows) == metrics["second_test_sentences"] + 1
    assert 0 <= metrics["reconstruction_token_accuracy"] <= 1 and 0 <= metrics["novelty"] <= 1
    assert len((run / "samples.txt").read_text().splitlines()) == metrics["samples"]
    assert "run folder" in out.stdout
    # the preset's prior stage: a slot transformer trained on the training split's latents, saved as the prior
    stage = json.loads((run / "prior_stage.json").read_text())
    assert stage["steps"] == 20 and stage["prior"]["name"] == "slot_transformer" and stage["prior"]["self_condition"]
    assert json.loads((run / "model/config.json").read_text())["denoiser"]["name"] == "slot_transformer"
    # the preset's sampling temperature: chosen among its candidates (4, each with DDIM's eta 1) by MAUVE
    # against validation sentences, saved with the model and used by the report
    chosen = stage["temperature"]
    assert chosen["temperature"] in (1.0, 0.95, 0.9, 0.85) and chosen["eta"] == 1.0
    assert len(chosen["scores"]) == 4 and chosen["n"] == 40
    assert chosen["scores"][f"{chosen['temperature']}, eta {chosen['eta']}"] == max(chosen["scores"].values())
    saved = json.loads((run / "model/config.json").read_text())["sampling"]
    assert saved == {"prior_temperature": chosen["temperature"], "eta": chosen["eta"]}
    assert (metrics["prior_temperature"], metrics["sampling_eta"]) == (chosen["temperature"], chosen["eta"])
    # the guide: a classifier on the labelled training latents, saved beside the model, judged in the report
    assert stage["guide"]["classes"] == ["negative", "neutral", "positive"]
    assert (run / "model/guide/model.safetensors").is_file() and (run / "guided_control.png").is_file()
    # the judge of the decoded text saved beside the guide, and judged editing in the report
    assert stage["judge"]["classes"] == ["negative", "neutral", "positive"] and (run / "model/judge/judge.json").is_file()
    judged = metrics["guided"]["judged_edit"]
    assert judged["n"] in range(1, 9) and judged["settings"] == 53 and 0 <= judged["positive"] <= 1
    assert judged["bleu_to_input"] >= 0 and len((run / "judged_edits.tsv").read_text().splitlines()) == judged["n"] + 1
    guided = metrics["guided"]
    assert set(guided["by_scale"]) == {"0.0", "1.0", "3.0", "10.0"} and guided["n_per_condition"] == 8
    for entry in guided["by_scale"].values():
        for target in ("positive", "negative"):
            assert 0 <= entry[target]["probe"] <= 1 and 0 <= entry[target]["tfidf"] <= 1
    # the corpus has two sources: a guide of the source beside the sentiment's, and the two composed in the report
    assert stage["guides"]["source"]["classes"] == ["rotten_tomatoes", "tweets"]
    assert (run / "model/guides/source/model.safetensors").is_file()
    composed = guided["composed"]
    assert set(composed["pairs"]) == {f"{a} + {b}" for a in ("positive", "negative") for b in ("rotten_tomatoes", "tweets")}
    for pair in composed["pairs"].values():
        assert pair["composed"]["n"] == 8 and 0 <= pair["composed"]["both"] <= pair["composed"]["source"] <= 1
    assert len((run / "composed_samples.tsv").read_text().splitlines()) == 1 + 4 * 8


def test_text_job_bad_data_file_fails_clearly(tmp_path):
    bad = tmp_path / "data.csv"
    bad.write_text("review\nfine text here\n")
    out = subprocess.run([sys.executable, str(ROOT / "jobs/train_text.py"), "--data.source=text_files",
                          f"--data.path={bad}", f"--run.storage_path={tmp_path}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "no column 'text'" in out.stderr

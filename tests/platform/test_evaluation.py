"""The comparison harness's summaries (no training): mean +/- std, the bold rule, CSV, the run plan."""

import csv

import pytest

from diled_platform.config import load_config
from diled_platform.evaluation import (Metric, best_models, markdown_table, model_runs, plot_summary, summarize,
                                      write_csv)

METRICS = [Metric("bleu", "BLEU", True), Metric("ppl", "PPL", False), Metric("nested.x", "x", True)]
RESULTS = {"diled": [{"bleu": 10.0, "ppl": 50.0, "nested": {"x": 1}}, {"bleu": 12.0, "ppl": 70.0, "nested": {"x": 3}}],
           "vae": [{"bleu": 4.0, "ppl": 40.0}, {"bleu": 6.0, "ppl": float("nan")}]}


def test_summary_is_mean_and_sample_std_over_seeds():
    s = summarize(RESULTS, METRICS)
    assert s["diled"]["bleu"] == (11.0, pytest.approx(2 ** 0.5), 2)
    assert s["diled"]["nested.x"] == (2.0, pytest.approx(2 ** 0.5), 2)
    assert s["vae"]["ppl"] == (40.0, 0.0, 1)           # a non-finite value is left out, not averaged
    assert "nested.x" not in s["vae"]


def test_bold_follows_the_direction_and_is_written():
    s = summarize(RESULTS, METRICS)
    assert best_models(s, METRICS[0]) == {"diled"} and best_models(s, METRICS[1]) == {"vae"}
    table = markdown_table(s, METRICS, reference={"ppl": 30.0})
    lines = table.splitlines()
    assert lines[0] == "| model | BLEU ↑ | PPL ↓ | x ↑ |"
    assert lines[2] == "| diled | **11.0 ± 1.4** | 60.0 ± 14.1 | **2.000 ± 1.414** |"
    assert lines[3] == "| vae | 5.000 ± 1.414 | **40.0 ± 0.0** | n/a |"
    assert lines[4].startswith("| *held-out data* |") and "*30.0*" in lines[4]


def test_csv_has_one_row_per_model_and_metric(tmp_path):
    write_csv(summarize(RESULTS, METRICS), METRICS, tmp_path / "t.csv")
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert [(r["model"], r["metric"]) for r in rows] == [("diled", "bleu"), ("diled", "ppl"), ("diled", "nested.x"),
                                                         ("vae", "bleu"), ("vae", "ppl")]
    assert rows[0]["higher_is_better"] == "True" and rows[0]["mean"] == "11" and rows[0]["seeds"] == "2"


def test_plot_takes_the_same_values_as_the_table(tmp_path):
    # a NaN in one seed (e.g. no measured proposal) must neither break the plot nor its error bar
    plot_summary(RESULTS, METRICS, tmp_path / "t.png", "title")
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_baselines_are_config_changes_of_one_job():
    cfg = load_config("vector-cpu", ["--run.storage_path=/tmp/x"])
    (d,) = model_runs(cfg, "diled", 3, {})
    (v,) = model_runs(cfg, "vae", 3, {"beta": 0.1})
    ae, prior = model_runs(cfg, "two-stage", 3, {})
    assert (d.model.objective, v.model.objective, ae.model.objective, prior.model.objective) == \
        ("diled", "vae", "autoencoder", "prior_only")
    assert v.model.vae == {"beta": 0.1} and d.run.seed == v.run.seed == prior.run.seed == 3
    assert prior.model.init_from == "/tmp/x/two-stage-ae-seed3/model"
    assert d.optim == v.optim == ae.optim == prior.optim and d.model.codec_args == v.model.codec_args
    with pytest.raises(ValueError, match="unknown model 'gan'"):
        model_runs(cfg, "gan", 0, {})


@pytest.mark.parametrize("objective,samples", [("autoencoder", False), ("prior_only", True), ("vae", True),
                                               ("diled", True)])
def test_protein_report_samples_every_model_with_a_prior(tmp_path, objective, samples):
    import pyarrow as pa
    import torch

    from diled import DiLED, LatentDiffusion, MLPSkipNet
    from diled.baselines import VAE
    from diled.codecs.protein import ProteinCodec
    from diled_platform.protein import protein_report

    torch.manual_seed(0)
    codec = ProteinCodec(latent_dim=4, max_length=6, dim=16, layers=1, heads=2, decoder_hidden=16,
                         decoder_layers=1, fitness_hidden=8)
    model = (VAE if objective == "vae" else DiLED)(codec, MLPSkipNet(4, hidden=16, depth=1, time_dim=8),
                                                   LatentDiffusion("constant", 20), objective=objective)
    model.save_pretrained(tmp_path / "model")
    rng = torch.Generator().manual_seed(0)
    seqs = ["".join("ACDEFG"[i] for i in torch.randint(0, 6, (6,), generator=rng)) for _ in range(40)]
    table = pa.table({"sequence": seqs, "fitness": [float(i % 7) for i in range(40)]})
    splits = {"train": table.slice(0, 30), "test": table.slice(30)}
    m = protein_report(tmp_path / "model", splits, tmp_path, n_eval=10, n_optimize=4, n_samples=8)
    assert ("samples_unique" in m) == samples and (tmp_path / "samples.txt").exists() == samples
    assert m["objective"] == objective and 0 <= m["residue_accuracy"] <= 1


def test_text_outputs_keep_one_sample_per_line_whatever_the_decoder_emits(tmp_path):
    from diled_platform.text import write_text_outputs

    nasty = ["a\x1cb", "tab\there", "c\r\nd", "e\u2028f\x85g", ""]
    write_text_outputs(tmp_path, refs=nasty[:2], recons=["x\x0by", "z"], samples=nasty,
                       pairs=[("p\rq", "r")], paths=[["s\x1et", "u"]])
    assert (tmp_path / "samples.txt").read_text().splitlines() == ["a b", "tab here", "c d", "e f g", ""]
    rows = (tmp_path / "reconstructions.tsv").read_text().splitlines()
    assert [r.split("\t") for r in rows] == [["input", "output"], ["a b", "x y"], ["tab here", "z"]]
    assert (tmp_path / "interpolations.txt").read_text().splitlines()[:3] == ["# p q  ->  r", "  0.00  s t", "  1.00  u"]


def test_the_image_floor_is_known_after_prepare_without_an_evaluate_first(monkeypatch, tmp_path):
    """ImageTask.reference() (the test-half-vs-half Frechet floor) depends on the data and the feature
    classifier only, so it is there once prepare() has run: no call-order state."""
    import numpy as np
    import torch

    import diled_platform.data
    import diled_platform.image
    from diled.metrics.image import frechet_distance
    from diled_platform.evaluation import ImageTask

    images = np.random.default_rng(0).integers(0, 256, size=(64, 28, 28), dtype=np.uint8)
    splits = {"train": (images, np.zeros(64, dtype=np.int64)), "test": (images[::-1].copy(), None)}

    class Features:
        def features(self, x):
            return x.flatten(1)[:, ::196]  # 4 pixels as the 4-d "features"

    monkeypatch.setattr(diled_platform.data, "image_splits", lambda cfg: splits)
    monkeypatch.setattr(diled_platform.image, "feature_classifier", lambda s, out: (Features(), {"fake": True}))
    task = ImageTask()
    task.prepare(load_config("image-cpu"), tmp_path)
    f = torch.as_tensor(splits["test"][0]).float().div(255).unsqueeze(1).flatten(1)[:, ::196]
    assert task.reference() == {"frechet_classifier_features": {"samples_vs_test": frechet_distance(f[:32], f[32:])}}


def test_the_job_comparison_table_reads_dotted_keys_as_the_summaries_do():
    from diled_platform.reports import comparison_table, lookup

    results = {"diled": {"a": {"b": 0.5}, "n": 3}, "autoencoder": {"n": 4}}
    assert lookup(results["diled"], "a.b") == 0.5 and lookup(results["autoencoder"], "a.b") is None
    assert comparison_table(results, [("a.b", "nested"), ("n", "count")]).splitlines() == [
        "| metric | diled | autoencoder |", "| --- | --- | --- |", "| nested | 0.500 | n/a |", "| count | 3 | 4 |"]

"""The comparison harness's summaries (no training): mean +/- std, the bold rule, CSV, the run plan."""

import csv

import pytest

from diled_platform.comparison.baselines import stages
from diled_platform.config import load_config
from diled_platform.datatypes import Metric
from diled_platform.comparison.evaluation import best_models, markdown_table, plot_summary, summarize, write_csv

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
    cfg = load_config("vector-cpu", ["--run.storage_path=/tmp/x", "--run.seed=3"])
    (d,) = stages(cfg, "diled", "d")
    (a,) = stages(cfg, "autoencoder", "a")
    (v,) = stages(cfg, "vae", "v", {"beta": 0.1})
    ae, prior = stages(cfg, "two-stage", "t")
    assert (d.model.objective, a.model.objective, v.model.objective, ae.model.objective, prior.model.objective) == \
        ("diled", "autoencoder", "vae", "autoencoder", "prior_only")
    assert v.model.vae == {"beta": 0.1} and d.run.seed == v.run.seed == prior.run.seed == 3
    assert (ae.run.name, prior.run.name) == ("t-stage1", "t") and prior.model.init_from == "/tmp/x/t-stage1/model"
    assert d.optim == v.optim == ae.optim == prior.optim and d.model.codec_args == v.model.codec_args
    with pytest.raises(ValueError, match="unknown model 'gan'"):
        stages(cfg, "gan", "g")


@pytest.mark.parametrize("objective,samples", [("autoencoder", False), ("prior_only", True), ("vae", True),
                                               ("diled", True)])
def test_protein_report_samples_every_model_with_a_prior(tmp_path, objective, samples):
    import pyarrow as pa
    import torch

    from diled import DiLED, LatentDiffusion, MLPSkipNet
    from diled.baselines import VAE
    from diled.codecs.protein import ProteinCodec
    from diled_platform.datatypes.protein import protein_report

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
    from diled_platform.datatypes.text import write_text_outputs

    nasty = ["a\x1cb", "tab\there", "c\r\nd", "e\u2028f\x85g", ""]
    write_text_outputs(tmp_path, refs=nasty[:2], recons=["x\x0by", "z"], samples=nasty,
                       pairs=[("p\rq", "r")], paths=[["s\x1et", "u"]])
    assert (tmp_path / "samples.txt").read_text().splitlines() == ["a b", "tab here", "c d", "e f g", ""]
    rows = (tmp_path / "reconstructions.tsv").read_text().splitlines()
    assert [r.split("\t") for r in rows] == [["input", "output"], ["a b", "x y"], ["tab here", "z"]]
    assert (tmp_path / "interpolations.txt").read_text().splitlines()[:3] == ["# p q  ->  r", "  0.00  s t", "  1.00  u"]


def test_the_image_floor_needs_only_the_data_and_the_classifier(monkeypatch, tmp_path):
    """ImageData's reference row (the test-half-vs-half Frechet floor) comes from its tools (the data and
    the feature classifier) alone: no report has to run first, no call-order state."""
    import numpy as np
    import torch

    import diled_platform.datatypes.image as image
    from diled.metrics.image import frechet_distance

    images = np.random.default_rng(0).integers(0, 256, size=(64, 28, 28), dtype=np.uint8)
    splits = {"train": (images, np.zeros(64, dtype=np.int64)), "test": (images[::-1].copy(), None)}

    class Features:
        def features(self, x):
            return x.flatten(1)[:, ::196]  # 4 pixels as the 4-d "features"

    monkeypatch.setattr(image.ImageData, "load_splits", lambda self: splits)
    monkeypatch.setattr(image, "feature_classifier", lambda s, out: (Features(), {"fake": True}))
    datatype = image.ImageData(load_config("image-cpu").data)
    f = torch.as_tensor(splits["test"][0]).float().div(255).unsqueeze(1).flatten(1)[:, ::196]
    assert datatype.reference(tools=datatype.tools(tmp_path)) == {
        "frechet_classifier_features": {"samples_vs_test": frechet_distance(f[:32], f[32:])}}


def test_a_job_comparison_is_the_harness_table_with_one_seed():
    from diled_platform.comparison.evaluation import comparison_table
    from diled_platform.datatypes._reports import lookup

    results = {"diled": {"a": {"b": 0.5}, "n": 3}, "autoencoder": {"n": 4}}
    metrics = [Metric("a.b", "nested", True), Metric("n", "count", False)]
    assert lookup(results["diled"], "a.b") == 0.5 and lookup(results["autoencoder"], "a.b") is None
    assert comparison_table(results, metrics).splitlines() == [
        "| model | nested ↑ | count ↓ |", "| --- | --- | --- |", "| diled | **0.500 ± 0.000** | **3.000 ± 0.000** |",
        "| autoencoder | n/a | 4.000 ± 0.000 |"]

"""Ray Tune sweeps: the sweep file's checks, and a real Optuna + ASHA sweep on 2 CPUs whose best model
is promoted and answers through the Serve app."""

import contextlib
import csv
import json

import pytest
import requests
import yaml

from diled import DiLED
from diled_platform.config import ConfigError
from diled_platform.sweeps.tune import SweepConfig, run_sweep

SPACE = {"model.w": {"loguniform": [0.1, 10.0]}, "diffusion.schedule": {"choice": ["constant", "linear", "cosine"]},
         "diffusion.T": {"choice": [100, 1000]}, "optim.lr": {"loguniform": [3.0e-4, 3.0e-3]}}


def tiny_sweep(tmp_path, **changes) -> SweepConfig:
    data = {"name": "tiny", "preset": "vector-cpu", "storage_path": str(tmp_path), "num_samples": 5, "seed": 0,
            "max_concurrent_trials": 1, "metric": "val_nelbo", "mode": "min",
            "overrides": {"optim.max_steps": 160, "run.checkpoint_every": 40, "scaling.num_workers": 1,
                          "data.n_train": 2000, "run.val_batches": 2, "run.log_every": 40},
            "asha": {"grace_period": 1, "reduction_factor": 2}, "space": SPACE, **changes}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return SweepConfig.load(str(path))


@pytest.mark.parametrize("change,message", [
    ({"metric": "val_accuracy"}, "not reported"),
    ({"space": {}}, "space is empty"),
    ({"space": {"model.w": {"normal": [0, 1]}}}, "must be one of"),
    ({"space": {"model.w": {"loguniform": [0.0, 1.0]}}}, "low > 0"),
    ({"space": {"model.w": {"uniform": [2.0, 1.0]}}}, "low < high"),
    ({"space": {"model.wx": {"uniform": [1.0, 2.0]}}}, "wx"),
    ({"space": {"w": {"uniform": [1.0, 2.0]}}}, "section.key"),
    ({"typo": 1}, "unknown sweep key"),
])
def test_sweep_file_errors_name_the_problem(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        tiny_sweep(tmp_path, **change)


def test_shipped_sweep_files_are_valid():
    from diled_platform.sweeps.tune import SWEEPS_DIR

    names = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
    assert {"text-cpu", "vector-cpu", "text-pareto", "protein-pareto"} <= set(names)
    for name in names:
        sweep = SweepConfig.load(name)
        assert "model.w" in sweep.space and sweep.reports_per_trial(sweep.base()) >= 2


@contextlib.contextmanager
def serving(model_dir, port: int):
    """The Serve app on ``model_dir`` with one replica on half a CPU, at 127.0.0.1:``port``."""
    from ray import serve

    from diled_platform.serving.deploy import deploy, serve_config

    config = serve_config(model_dir, port=port)
    dep = config["applications"][0]["deployments"][0]
    dep["autoscaling_config"].update(min_replicas=1, max_replicas=1)
    dep["ray_actor_options"]["num_cpus"] = 0.5
    try:
        deploy(config)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


@pytest.fixture
def ray_with_dashboard():
    """Train V2 inside Tune asks Ray's state API (served by the dashboard) about its controller: without
    the dashboard a trial never finishes. So this module's Ray has it, on 127.0.0.1. One Ray per test
    (a few seconds each): with one per module, the second sweep once waited on its trial until the
    900 s timeout in CI, after the first test's Serve app had been shut down in the same Ray."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
             object_store_memory=256 * 2**20)
    yield ray
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_optuna_asha_sweep_promotes_a_servable_model(ray_with_dashboard, tmp_path):
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    sweep = tiny_sweep(tmp_path)
    outcome = run_sweep(sweep)
    rows = outcome.rows
    assert len(rows) == sweep.num_samples
    with open(outcome.table) as f:
        assert len(list(csv.DictReader(f))) == sweep.num_samples
    assert outcome.plot.stat().st_size > 0

    # Optuna chose the configurations: exactly what its seeded TPE sampler proposes for this space
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    def distribution(spec):
        (kind, args), = spec.items()
        return (CategoricalDistribution(args) if kind == "choice"
                else FloatDistribution(*args, log=kind == "loguniform"))

    space = {key: distribution(spec) for key, spec in sweep.space.items()}  # the sweep's order matters
    expected = sorted(round(study.ask(fixed_distributions=space).params["model.w"], 9) for _ in rows)
    assert sorted(round(r["model.w"], 9) for r in rows) == expected

    # ASHA stopped at least one trial early; the others reported at every checkpoint
    reports = [r["reports"] for r in rows]
    assert any(r["stopped_early"] for r in rows), reports
    assert max(reports) == 4 and min(reports) >= 1

    # the promoted model is the best trial's best checkpoint, and it serves
    best = json.loads((outcome.sweep_dir / "best.json").read_text())
    assert best["value"] == min(r["best_val_nelbo"] for r in rows)
    model = DiLED.from_pretrained(outcome.best_model_dir)
    assert model.w == pytest.approx(best["params"]["model.w"])
    with serving(outcome.best_model_dir, 8457) as url:
        answer = requests.post(url + "/generate", json={"n": 3, "seed": 0, "steps": 10}, timeout=60)
        assert answer.status_code == 200
        assert answer.json()["outputs"] == model.eval().generate(3, steps=10, seed=0)


def test_pareto_front_keeps_exactly_the_non_dominated_points():
    from diled_platform.sweeps.tune import balanced_point, pareto_front

    points = {"a": [1.0, 5.0], "b": [2.0, 2.0], "c": [3.0, 3.0], "d": [5.0, 1.0], "e": [2.0, 2.0],
              "nan": [float("nan"), 0.0]}
    front = pareto_front(points, ["min", "min"])
    assert sorted(front) == ["a", "b", "d", "e"]           # c is dominated by b; equal points both stay
    assert pareto_front({"x": [1.0, 1.0], "y": [2.0, 0.5]}, ["max", "min"]) == ["y"]
    assert balanced_point(points, ["min", "min"], ["a", "b", "d"]) == "b"


@pytest.mark.parametrize("change,message", [
    ({"metric": ["val_rec", "val_rec"]}, "distinct"),
    ({"metric": ["val_rec", "val_prior_fd"], "mode": ["min"]}, "one per metric"),
    ({"metric": ["val_rec", "val_fitness_mse"]}, "val_fitness_mse"),      # a protein term, not the vector codec's
    ({"points": [{"model.wx": 1.0}]}, "every key of the space"),
    ({"points": [{"model.w": 1.0}]}, "missing or not in it.*diffusion.T"),
    ({"points": [{"model.w": "big", "diffusion.schedule": "linear", "diffusion.T": 100, "optim.lr": 1e-3}]}, "model.w"),
    ({"points": [{}] * 9}, "at most num_samples"),
])
def test_multi_objective_sweep_file_errors(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        tiny_sweep(tmp_path, **change)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_objective_sweep_reports_a_pareto_front_and_serves_a_point_of_it(ray_with_dashboard, tmp_path):
    from mlflow.tracking import MlflowClient

    from diled_platform.sweeps.tune import pareto_front

    sweep = tiny_sweep(tmp_path, name="pareto", num_samples=6, metric=["val_rec", "val_prior_fd"],
                       mode=["min", "min"], points=[{"model.w": 8.0, "diffusion.schedule": "constant",
                                                     "diffusion.T": 1000, "optim.lr": 1e-3}])
    outcome = run_sweep(sweep)
    rows = outcome.rows
    assert [r for r in rows if r["model.w"] == 8.0 and r["diffusion.schedule"] == "constant"]  # the given point ran
    assert len(rows) == 6 and outcome.plot.name == "pareto.png" and outcome.plot.stat().st_size > 0
    assert outcome.sensitivity.stat().st_size > 0
    assert any(r["stopped_early"] for r in rows) and all(r["status"] == "done" for r in rows)  # ASHA acted

    # the front: no front point dominates another, and every other full-budget trial is dominated by one
    full = [r for r in rows if not r["stopped_early"]]
    value = {r["trial_id"]: (r["last_val_rec"], r["last_val_prior_fd"]) for r in full}
    front = set(outcome.front)
    assert front and front <= set(value)
    dominated = lambda a, b: all(x <= y for x, y in zip(b, a)) and b != a  # noqa: E731  (b dominates a)
    for k in front:
        assert not any(dominated(value[k], value[j]) for j in value if j != k)
    for k in set(value) - front:
        assert any(dominated(value[k], value[j]) for j in front)
    assert set(pareto_front({k: list(v) for k, v in value.items()}, ["min", "min"])) == front
    assert {r["trial_id"] for r in rows if r.get("pareto")} == front

    # a promoted Pareto point (not the default one, when the front has two) loads and serves, and says so
    pick = sorted(front)[-1]
    outcome = run_sweep(sweep, pick=pick)  # the finished sweep resumes with nothing to run: only promotion
    best = json.loads((outcome.sweep_dir / "best.json").read_text())
    assert best["trial_id"] == pick and best["chosen_by"] == "--pick"
    # the data type's own report on the promoted model, as a training run writes it
    report = json.loads((outcome.sweep_dir / "best_report" / "eval.json").read_text())
    assert report == best["report"] and report["reconstruction_mse"] < report["mean_predictor_mse"]
    model = DiLED.from_pretrained(outcome.best_model_dir)
    assert model.w == pytest.approx(best["params"]["model.w"])
    with serving(outcome.best_model_dir, 8458) as url:
        health = requests.get(url + "/healthz", timeout=60).json()
        assert health["provenance"]["trial_id"] == pick and health["provenance"]["sweep"] == "pareto"
        assert health["provenance"]["params"]["model.w"] == pytest.approx(model.w)

    # every trial is an MLflow run of the sweep's experiment in the store beside the runs, with its
    # config, per-step metrics and, for the sweep itself, the plots as artifacts
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pareto")
    runs = client.search_runs([experiment.experiment_id])
    trial_runs = {r.info.run_name: r for r in runs if "diled.sweep" not in r.data.tags}
    assert set(trial_runs) == {r["trial_id"] for r in rows}
    one = trial_runs[pick]
    assert float(one.data.params["model.w"]) == pytest.approx(best["params"]["model.w"])
    history = client.get_metric_history(one.info.run_id, "val_rec")
    assert [m.step for m in history] == [40, 80, 120, 160]
    assert len(client.get_metric_history(one.info.run_id, "train_loss")) == 4
    sweep_runs = [r for r in runs if "diled.sweep" in r.data.tags]  # one per promotion
    assert {r.data.tags["diled.promoted_trial"] for r in sweep_runs} >= {pick}
    for run in sweep_runs:
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"pareto.png", "sensitivity.png", "results.csv", "best.json"} <= artifacts

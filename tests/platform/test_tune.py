"""Ray Tune sweeps: the sweep file's checks, and a real Optuna + ASHA sweep on 2 CPUs whose best model
is promoted and answers through the Serve app."""

import csv
import json

import pytest
import requests
import yaml

from diled import DiLED
from diled_platform.config import ConfigError
from diled_platform.tune import SweepConfig, run_sweep

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
    for name in ("text-cpu", "vector-cpu"):
        sweep = SweepConfig.load(name)
        assert "model.w" in sweep.space and sweep.reports_per_trial(sweep.base()) >= 2


@pytest.fixture(scope="module")
def ray_with_dashboard():
    """Train V2 inside Tune asks Ray's state API (served by the dashboard) about its controller: without
    the dashboard a trial never finishes. So this module's Ray has it, on 127.0.0.1."""
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
    from ray import serve

    from diled_platform.serve import deploy, serve_config

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
    config = serve_config(outcome.best_model_dir, port=8457)
    dep = config["applications"][0]["deployments"][0]
    dep["autoscaling_config"].update(min_replicas=1, max_replicas=1)
    dep["ray_actor_options"]["num_cpus"] = 0.5
    try:
        deploy(config)
        answer = requests.post("http://127.0.0.1:8457/generate", json={"n": 3, "seed": 0, "steps": 10}, timeout=60)
        assert answer.status_code == 200
        assert answer.json()["outputs"] == model.eval().generate(3, steps=10, seed=0)
    finally:
        serve.shutdown()

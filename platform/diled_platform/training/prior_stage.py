"""The prior stage: after joint training, the prior trained further on the finished codec's latents.

Runs on the driver on the consolidated model (``fit`` calls it when ``prior_stage.active``: steps,
guide_steps or temperatures; with steps 0 it trains only the guide): the
training split is encoded once, the prior trained with ``diled.prior_training.train_prior``, the sampling
temperature (and DDIM's eta) chosen on the validation split (``diled.prior_training.choose_temperature``), and the
model folder replaced atomically by one whose prior is the stage's (the one before is kept beside it as
``model.joint``). A ``prior_stage.json`` in the model folder records the stage; a folder that has one is
not trained again, so re-running a finished job (or resuming after a crash in the stage) is safe; a stage
record without a choice over the config's candidates (temperatures, etas) gets one made (only ``config.json``
changes).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

RECORD = "prior_stage.json"
TEMPERATURE_DRAWS = 2


def check_stage_storage(cfg) -> None:
    """The stage rewrites the exported model folder in place: refused (ConfigError) with remote storage."""
    from diled_platform.config import ConfigError

    stage = cfg.prior_stage
    if stage.active and "://" in cfg.run.storage_path:
        raise ConfigError(f"prior_stage.steps={stage.steps} (guide_steps={stage.guide_steps}, temperatures="
                          f"{stage.temperatures}) rewrites the exported model folder, which needs a local "
                          f"run.storage_path, got {cfg.run.storage_path!r}; set prior_stage.steps=0, "
                          f"prior_stage.guide_steps=0, prior_stage.temperatures=[] and prior_stage.etas=[]")


def run_prior_stage(cfg, datatype, model_dir: Path) -> dict[str, Any] | None:
    """Train the prior of the model in ``model_dir`` (a checkpoint's ``model`` folder, or a link to one)
    on the encoder means of ``datatype``'s training split; returns the stage's record (None when
    ``cfg.prior_stage.steps`` is 0). ``model_dir`` keeps its path; it holds the new model afterwards."""
    from diled import DiLED, LatentDiffusion, build_prior
    from diled.denoiser import prior_name
    from diled.prior_space import PriorSpace
    from diled.prior_training import encode_all, train_prior

    stage = cfg.prior_stage
    if not stage.active:
        return None
    target = Path(os.path.realpath(model_dir))
    if (target / RECORD).is_file():
        record = json.loads((target / RECORD).read_text())
        print(f"prior stage: already done for this model ({record['steps']} steps)", flush=True)
        if (stage.temperatures or stage.etas) and not chosen_over(record, stage):
            record = temperature_only(cfg, datatype, target, record)
        if record.get("guide", {}).get("kind") == "classes" and "judge" not in record:  # staged before judges
            record = judge_only(datatype, target, record)
        if record.get("guide", {}).get("kind") == "classes" and "guides" not in record and further_labels(datatype):
            record = further_guides_only(datatype, target, record, cfg.run.seed)  # staged before further labels
        return record
    t0 = time.perf_counter()
    torch.manual_seed(cfg.run.seed)
    model = DiLED.from_pretrained(target)
    if stage.steps or stage.guide_steps:
        z0 = encode_all(model, datatype.training_examples(), log=lambda m: print(f"prior stage: {m}", flush=True))
    t1 = time.perf_counter()
    fresh = stage.prior_config(cfg.model)
    labels = None
    if stage.steps and stage.conditional:  # a fresh prior that knows the data type's classes (classifier-free)
        classes, labels = datatype.training_labels()
        fresh = {**(fresh or model.denoiser.get_config() | {"name": prior_name(model.denoiser)}), "classes": classes}
        labels = torch.tensor(labels, dtype=torch.long)
    if stage.steps:
        prior = model.denoiser if fresh is None else build_prior(fresh)
        if stage.schedule:  # the fresh prior's own schedule (config validation: only with a fresh prior)
            model.diffusion = LatentDiffusion(stage.schedule, model.diffusion.T)
        if stage.spread:  # and its coordinates: the latents standardised (train_prior maps z0 into them)
            model.prior_space = PriorSpace.fit(z0, stage.spread)
        trained, summary = train_prior(model, prior, z0, steps=stage.steps, batch_size=stage.batch_size,
                                       lr=stage.lr, ema=stage.ema, seed=cfg.run.seed, t_sampling=stage.t_sampling,
                                       log=lambda m: print(m, flush=True), log_every=max(1, stage.steps // 10),
                                       labels=labels, drop_prob=stage.cond_drop)
        model.denoiser = trained
        record = {**summary, "prior": fresh or "the jointly trained prior, continued",
                  "diffusion": model.diffusion.get_config(), "spread": stage.spread,
                  "parameters": sum(p.numel() for p in trained.parameters()), "encode_seconds": round(t1 - t0, 1),
                  "train_seconds": round(summary["seconds"], 1)}
    else:  # only a guide or a temperature: the prior stays the jointly trained one
        summary = {"steps": 0, "final_loss": float("nan")}
        record = {"steps": 0, "prior": "the jointly trained prior, unchanged", "encode_seconds": round(t1 - t0, 1)}
    guide = train_guide(model, datatype, z0, stage.guide_steps, cfg.run.seed, stage.guide) if stage.guide_steps else None
    further = further_guides(model, datatype, z0, stage.guide_steps, cfg.run.seed) \
        if guide is not None and guide[1]["kind"] == "classes" else {}
    if stage.temperatures or stage.etas:
        record["temperature"] = choose_stage_temperature(model, datatype, stage, cfg.run.seed)
    tmp = target.with_name(target.name + ".prior_stage.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if guide is not None:
        from diled.guidance import save_guide

        save_guide(guide[0], tmp, guide[1])  # tied to the weights just written
        record["guide"] = guide[1]
        for label, (classifier, summary) in further.items():
            save_guide(classifier, tmp, summary, label=label)
        if further:
            record["guides"] = {label: summary for label, (_, summary) in further.items()}
        judge = fit_judge(datatype, guide[1]["classes"]) if guide[1]["kind"] == "classes" else None
        if judge is not None:  # text: a judge of the decoded outputs, for judged editing
            from diled.editing import save_judge

            save_judge(judge[0], tmp)
            record["judge"] = judge[1]
    (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    joint = target.with_name(target.name + ".joint")
    shutil.rmtree(joint, ignore_errors=True)
    os.replace(target, joint)     # the jointly trained model stays, beside it
    os.replace(tmp, target)
    what = (f"{summary['steps']} steps (final loss {summary['final_loss']:.4f})" if stage.steps
            else "the guide" if stage.guide_steps else "the temperature only")
    print(f"prior stage: {what} in {time.perf_counter() - t0:.0f} s", flush=True)
    return record


def candidate_keys(stage) -> set[str]:
    """The keys of ``choose_temperature``'s scores for the stage's candidates (temperatures, and etas)."""
    temperatures = stage.temperatures or [1.0]
    if not stage.etas:
        return {str(float(t)) for t in temperatures}
    return {f"{float(t)}, eta {float(e)}" for t in temperatures for e in stage.etas}


def chosen_over(record: dict[str, Any], stage) -> bool:
    """Whether the stage's record holds a choice made over exactly the config's candidates (a folder whose
    choice was made over others, or none, gets it made again)."""
    chosen = record.get("temperature")
    return isinstance(chosen, dict) and set(chosen.get("scores", {})) == candidate_keys(stage)


def choose_stage_temperature(model, datatype, stage, seed: int) -> dict[str, Any]:
    """Sets ``model.prior_temperature`` (and, with ``stage.etas``, ``model.sampling_eta``) to the best of the
    stage's candidates by ``datatype.sample_quality`` on the validation split
    (``diled.prior_training.choose_temperature``); its record."""
    from diled.prior_training import choose_temperature

    t0 = time.perf_counter()
    # a seed apart from the report's (which samples with run.seed), so the choice is not tuned to its noise
    # two draws of the noise: one 500-sample score of a candidate moves by a few hundredths between draws
    chosen = choose_temperature(model, lambda z: datatype.sample_quality(model, z, seed=seed), stage.temperatures or [1.0],
                                n=stage.temperature_samples, seed=seed + 1, repeats=TEMPERATURE_DRAWS,
                                log=lambda m: print(f"prior stage: {m}", flush=True), etas=stage.etas or None)
    judged = (f"the {datatype.name} data type's sample_quality on the validation split"
              if any(chosen["per_draw"].values()) else "nothing: the only candidate is set")
    return {**chosen, "judged_by": judged, "seconds": round(time.perf_counter() - t0, 1)}


def temperature_only(cfg, datatype, target: Path, record: dict[str, Any]) -> dict[str, Any]:
    """A staged model folder gets its sampling temperature (and eta) chosen: ``config.json`` and the record are
    rewritten (each atomically); the weights, and so a guide tied to them, stay as they are."""
    from diled import DiLED
    from diled.model import CONFIG_NAME

    model = DiLED.from_pretrained(target)
    stage = cfg.prior_stage
    record = {**record, "temperature": choose_stage_temperature(model, datatype, stage, cfg.run.seed)}
    for name, text in ((CONFIG_NAME, json.dumps(model.get_config(), indent=2)), (RECORD, json.dumps(record, indent=2))):
        tmp = target / f".{name}.tmp"
        tmp.write_text(text + "\n")
        os.replace(tmp, target / name)
    return record


def train_guide(model, datatype, z0: torch.Tensor, steps: int, seed: int, kind: str = "classes"):
    """A guide on the training latents ``z0``, in the prior's coordinates and noised as the prior sees them: a ``LatentClassifier`` on the
    labelled ones (the data type's ``training_labels``), or with ``kind="value"`` a ``LatentRegressor`` on
    those with a value (``training_values``); returns (guide, its record)."""
    from diled.guidance import LatentRegressor, train_regressor

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    if kind == "value":
        name, values = datatype.training_values()
        keep = torch.tensor([v is not None for v in values])
        y = torch.tensor([float(v) for v in values if v is not None])
        regressor = LatentRegressor(model.latent_dim, name)
        summary = train_regressor(regressor, model.diffusion, model.prior_space.to_prior(z0[keep]), y, steps=steps,
                                  seed=seed)
        print(f"prior stage: value guide ({name}) on {int(keep.sum()):,} latents, {steps} steps, NLL "
              f"{summary['final_nll']:.3f} (a constant prediction: {summary['constant_nll']:.3f})", flush=True)
        return regressor, {**summary, "kind": "value", "with_value": int(keep.sum()),
                           "seconds": round(time.perf_counter() - t0, 1)}
    return class_guide(model, z0, *datatype.training_labels(), steps, seed)


def class_guide(model, z0: torch.Tensor, classes: list[str], labels: list[int], steps: int, seed: int,
                label: str | None = None):
    """A ``LatentClassifier`` of ``classes`` on the latents ``z0`` whose ``labels`` (class indices, -1: none)
    are known; returns (guide, its record)."""
    from diled.guidance import LatentClassifier, train_classifier

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    labels = torch.tensor(labels, dtype=torch.long)
    keep = labels >= 0
    classifier = LatentClassifier(model.latent_dim, classes)
    summary = train_classifier(classifier, model.diffusion, model.prior_space.to_prior(z0[keep]), labels[keep],
                               steps=steps, seed=seed)
    counts = {c: int((labels == i).sum()) for i, c in enumerate(classes)}
    print(f"prior stage: guide{f' of {label}' if label else ''} on {int(keep.sum()):,} labelled latents {counts}, "
          f"{steps} steps, loss {summary['final_loss']:.3f} (chance {summary['chance_loss']:.3f})", flush=True)
    return classifier, {**summary, "kind": "classes", "classes": classes, "labelled": counts,
                        **({"label": label} if label else {}), "seconds": round(time.perf_counter() - t0, 1)}


def further_guides(model, datatype, z0: torch.Tensor, steps: int, seed: int) -> dict[str, tuple]:
    """A class guide (``class_guide``, ``steps`` steps) for each of the data type's ``further_labels`` (text:
    the source), whose conditions compose with the first guide's; by label."""
    return {label: class_guide(model, z0, classes, labels, steps, seed, label)
            for label, (classes, labels) in further_labels(datatype).items()}


def further_labels(datatype) -> dict[str, tuple[list[str], list[int]]]:
    """``datatype.further_labels()``; {} for a data type (a plug-in's stand-in) that does not define it."""
    return getattr(datatype, "further_labels", dict)()


def judge_only(datatype, target: Path, record: dict[str, Any]) -> dict[str, Any]:
    """A staged model folder with a class guide but no judge gets one (``fit_judge``); the weights stay."""
    from diled.editing import save_judge

    judge = fit_judge(datatype, record["guide"]["classes"])
    if judge is None:
        return record
    save_judge(judge[0], target)
    record = {**record, "judge": judge[1]}
    return write_record(target, record)


def write_record(target: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Replace the stage's record in the model folder ``target`` atomically; returns it."""
    tmp = target / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, target / RECORD)
    return record


def further_guides_only(datatype, target: Path, record: dict[str, Any], seed: int) -> dict[str, Any]:
    """A staged model folder with a class guide gets the guides of the data type's further labels
    (``further_guides``, as many steps as its first guide took): the training split is encoded again; the
    weights stay."""
    from diled import DiLED
    from diled.guidance import save_guide
    from diled.prior_training import encode_all

    model = DiLED.from_pretrained(target)
    z0 = encode_all(model, datatype.training_examples(), log=lambda m: print(f"prior stage: {m}", flush=True))
    further = further_guides(model, datatype, z0, record["guide"]["steps"], seed)
    for label, (classifier, summary) in further.items():
        save_guide(classifier, target, summary, label=label)
    record = {**record, "guides": {label: summary for label, (_, summary) in further.items()}}
    return write_record(target, record)


def fit_judge(datatype, classes: list[str]):
    """For a data type whose examples are prose (``judges_text``): a TF-IDF logistic regression of its labels
    (``classes``, those with training examples) on the training split, the judge ``diled.editing.edit_judged``
    asks whether an edit has the condition; returns (judge, its record), or None for other data types (protein
    sequences are strings too, but not words) or fewer than 2 classes."""
    from diled.metrics.sentiment import TfidfSentiment

    t0 = time.perf_counter()
    if not getattr(datatype, "judges_text", False):
        return None
    examples = datatype.training_examples()
    names, labels = datatype.training_labels()
    texts = [x for x, i in zip(examples, labels) if i >= 0]
    named = [names[i] for i in labels if i >= 0]
    present = [c for c in classes if c in set(named)]
    if len(present) < 2:
        return None
    judge = TfidfSentiment(present).fit(texts, named)
    print(f"prior stage: judge (TF-IDF logistic regression) of {present} on {len(texts):,} labelled texts", flush=True)
    return judge, {"kind": "tfidf_logistic_regression", "classes": present, "fitted_on": len(texts),
                   "training_accuracy": round(judge.accuracy(texts, named), 4),
                   "seconds": round(time.perf_counter() - t0, 1)}

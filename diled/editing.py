"""Judged editing: guided edits over a grid of settings, each decoded, and per input the one an outside judge
accepts that stays closest to the input.

``model.edit`` applies one strength and one guidance scale to every input, but inputs differ in how far they
must move: one sentence turns positive with a mild push, another only when it is half rewritten. A fixed
setting either leaves the stubborn inputs unchanged or rewrites the easy ones more than needed.
``edit_judged`` tries every setting of a grid on every input, asks a judge of the decoded outputs (for text,
a classifier of the target property trained on the data, which shares nothing with the guide) which
candidates have the target property, and keeps per input the accepted candidate that is most similar to the
input. An input with no accepted candidate keeps its most similar candidate (with the default grid, which
starts with strength 0, its own reconstruction), so an edit never rewrites an input for nothing.

The judge is the caller's: what it accepts is what the edit optimises for, so a judge that is also the
evaluation's judge makes the evaluation meaningless; judge with one model and evaluate with another.

``edit_until`` is the cheaper rule tried before it: per input the mildest setting whose edited latent the
class guide itself finds enough (no decoding, no outside judge).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch

#: (strength, guidance scale) pairs, 53: strength 0 (the reconstruction), then the mild strengths at scales up
#: to 100 (a mild inversion needs a strong push) and the strong ones up to 50
JUDGED_SETTINGS: tuple[tuple[float, float], ...] = ((0.0, 0.0),) + tuple(
    (strength, scale) for strength in (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8)
    for scale in ((5.0, 10.0, 20.0, 30.0, 50.0, 70.0, 100.0) if strength in (0.1, 0.2, 0.3, 0.4)
                  else (20.0, 30.0, 50.0) if strength in (0.15, 0.25, 0.35) else (5.0, 10.0, 20.0, 30.0, 50.0)))


class JudgedEdits(NamedTuple):
    outputs: list            # per input, the chosen candidate, decoded
    settings: list[int]      # per input, the index in ``settings`` of the chosen candidate
    accepted: list[bool]     # per input, whether the judge accepted the chosen candidate
    probability: list[float]  # per input, the judge's probability of the condition for the chosen candidate


@torch.no_grad()
def edit_judged(model, inputs: list, condition, judge: Callable[[list, object], Sequence[float]],
                similarity: Callable[[list, list], Sequence[float]] | None = None,
                settings: Sequence[tuple[float, float]] = JUDGED_SETTINGS, accept: float = 0.8,
                min_similarity: float | None = None, steps: int | None = None, classifier=None,
                progress: Callable[[int, int], None] | None = None, **decode_kwargs) -> JudgedEdits:
    """Edit ``inputs`` toward ``condition`` at every ``(strength, guidance_scale)`` of ``settings``
    (``model.edit``, decoded with ``decode_kwargs``); ``judge(outputs, condition)`` gives each decoded
    candidate's probability of having the condition and ``similarity(outputs, inputs)`` its closeness to its
    input (higher is closer; default ``output_similarity``: for text, sentence BLEU). Per input: the most
    similar candidate whose probability is at least ``accept`` (and, with ``min_similarity``, whose
    similarity is at least that: an edit that keeps almost nothing of its input is not taken), else the most
    similar candidate of all (ties: the earlier setting). ``progress(done, total)`` hears each setting done."""
    if isinstance(accept, bool) or not isinstance(accept, (int, float)) or not 0 < accept < 1:
        raise ValueError(f"accept must be a probability in (0, 1), got {accept!r}")
    if not settings or any(len(pair) != 2 for pair in settings):
        raise ValueError(f"settings must be a non-empty list of (strength, guidance_scale) pairs, got {settings!r}")
    if not inputs:
        return JudgedEdits([], [], [], [])
    closeness = similarity if similarity is not None else output_similarity
    best: list[tuple] = [None] * len(inputs)  # per input: (accepted, similarity, -index, output, probability)
    for index, (strength, scale) in enumerate(settings):
        outputs = model.edit(inputs, condition, strength=strength, guidance_scale=scale, steps=steps,
                             classifier=classifier, **decode_kwargs)
        probabilities = [float(p) for p in judge(outputs, condition)]
        similarities = [float(s) for s in closeness(outputs, inputs)]
        if not len(probabilities) == len(similarities) == len(inputs):
            raise ValueError(f"the judge gave {len(probabilities)} probabilities and the similarity "
                             f"{len(similarities)} scores for {len(inputs)} inputs")
        for i, (output, p, s) in enumerate(zip(outputs, probabilities, similarities)):
            ok = p >= accept and (min_similarity is None or s >= min_similarity)
            candidate = (ok, s, -index, output, p)
            if best[i] is None or candidate[:3] > best[i][:3]:
                best[i] = candidate
        if progress is not None:
            progress(index + 1, len(settings))
    return JudgedEdits([b[3] for b in best], [-b[2] for b in best], [b[0] for b in best], [b[4] for b in best])


JUDGE_DIR = "judge"


def output_similarity(outputs: list, inputs: list) -> list[float]:
    """How much of each input its output keeps: sentence BLEU (0-100) for texts, else minus the Euclidean
    distance of the two as flat vectors (numbers, images, one-hot sequences)."""
    if all(isinstance(x, str) for x in [*outputs, *inputs]):
        from diled.metrics.text import sentence_bleus

        return sentence_bleus(outputs, inputs)
    if len(outputs) != len(inputs):
        raise ValueError(f"{len(outputs)} outputs but {len(inputs)} inputs")
    return [-float((torch.as_tensor(o, dtype=torch.float64).flatten() - torch.as_tensor(i, dtype=torch.float64).flatten())
                   .norm()) for o, i in zip(outputs, inputs)]


def save_judge(judge, model_dir: str | Path) -> Path:
    """Write ``judge`` (a ``TfidfSentiment``: it judges outputs, not latents, so it is not tied to the
    model's weights) into ``<model_dir>/judge/``, under a temporary name and renamed into place."""
    import os
    import shutil

    target, tmp = Path(model_dir) / JUDGE_DIR, Path(model_dir) / f".{JUDGE_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    judge.save(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def load_judge(model_dir: str | Path):
    """The judge saved beside a model (``save_judge``), or None if there is none."""
    from diled.metrics.sentiment import TfidfSentiment

    folder = Path(model_dir) / JUDGE_DIR
    return TfidfSentiment.load(folder) if (folder / "judge.json").is_file() else None


def judge_classes(judge) -> list[str]:
    """The classes a judge knows ([] for none)."""
    return list(judge.classes) if judge is not None else []


def check_judge(judge, model_dir, condition):
    """``judge`` (the one saved beside the model in ``model_dir``), if it can judge ``condition``; else a
    ValueError that says what is missing."""
    if judge is None:
        raise ValueError(f"no judge is saved beside this model ({model_dir}/{JUDGE_DIR}; the prior stage saves one "
                         "with a class guide of a text model)")
    if condition not in judge_classes(judge):
        raise ValueError(f"judged editing takes a class name its judge knows, {judge_classes(judge)}; got {condition!r}")
    return judge


@torch.no_grad()
def edit_until(model, inputs, condition, settings: list[tuple[float, float]], until: float = 0.5,
               steps: int | None = None, classifier=None) -> tuple[torch.Tensor, list[int]]:
    """Guided editing (``model.edit_latents``) that stops, input by input, at the mildest of ``settings``
    (``(strength, guidance_scale)`` pairs, mildest first) whose edited latent the class guide ``classifier``
    (default the model's guide), read at t = 1 where a latent is nearly clean, gives ``condition`` a
    probability of at least ``until``; an input that no setting moves that far keeps the last one. So an
    input that a mild edit already moves keeps more of itself, and only the stubborn ones are rewritten
    hard. Returns the latents [N x D] and, per input, the index of the setting it kept."""
    from diled.guidance import LatentClassifier, class_index

    classifier = model.guide if classifier is None else classifier
    if not isinstance(classifier, LatentClassifier):
        raise ValueError("edit_until judges the edits with a class guide (LatentClassifier): pass classifier= or "
                         f"save one with the model (prior_stage.guide_steps); got {type(classifier).__name__}")
    if not settings or any(len(pair) != 2 for pair in settings):
        raise ValueError(f"settings must be a non-empty list of (strength, guidance_scale) pairs, got {settings!r}")
    if isinstance(until, bool) or not isinstance(until, (int, float)) or not 0 < until < 1:
        raise ValueError(f"until must be a probability in (0, 1), got {until!r}")
    target = class_index(classifier.classes, condition)
    kept, taken, settled = None, [], None
    for i, (strength, scale) in enumerate(settings):
        z = model.edit_latents(inputs, condition, strength=strength, guidance_scale=scale, steps=steps,
                               classifier=classifier)
        probability = classifier(model.prior_space.to_prior(z), torch.ones(len(z), dtype=torch.long)).float().softmax(-1)[:, target]
        if kept is None:
            kept, taken, settled = z.clone(), [i] * len(z), torch.zeros(len(z), dtype=torch.bool)
        take = ~settled & ((probability >= until) | (i == len(settings) - 1))
        kept[take] = z[take]
        taken = [i if flag else j for j, flag in zip(taken, take.tolist())]
        settled |= take
        if settled.all():
            break
    return kept, taken

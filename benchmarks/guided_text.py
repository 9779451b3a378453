"""Guided generation on a finished text model, post hoc: a guide (``diled.guidance.LatentClassifier``) trained
on the model's latents of the labelled training sentences (what ``prior_stage.guide_steps`` does in the
job), then samples toward positive and toward negative at several guidance scales, judged by the report's
two judges (the MiniLM probe and a TF-IDF logistic regression), with the share of made-up words beside.

With several ``--seeds``, the rates are also averaged over them; ``--mauve`` adds MAUVE (the report's
settings) of the samples toward each sentiment against the test sentences of that sentiment, with the
ceiling (as many validation sentences of that sentiment against the same test sentences);
``--edit-strengths`` edits negative test sentences toward positive (``model.edit``: DDIM inversion to
strength x T, then guided sampling back) and reports the share the probe judges positive and the corpus
BLEU of the edits against their inputs, for each strength and ``--edit-scales`` scale; ``--edit-until P``
adds the edit that stops per sentence at the mildest of those settings (scale by scale, each strength in
turn) whose edited latent the guide gives "positive" a probability of at least P (``edit_until``);
``--edit-judged A`` adds judged editing (``diled.editing.edit_judged`` over its default grid): per sentence the
candidate closest to the input (sentence BLEU) among those the judge gives "positive" a probability of at
least A, else the closest of all; the judge is the one saved beside the model, else the one the prior stage
would save (``fit_judge``: TF-IDF over the training split's classes); the probe, which never picks, judges.
``--edit-offset K`` edits the negative test sentences from the K-th on (a set the settings were not chosen on).

    .venv/bin/python benchmarks/guided_text.py --model runs/text-cpu/model --out /tmp/guided
    .venv/bin/python benchmarks/guided_text.py --model M --guide-steps 2000 --n 100 --scales 0 1 3 10
    .venv/bin/python benchmarks/guided_text.py --model M --n 200 --seeds 0 1 2 --scales 0 3 10 --mauve \
        --edit-strengths 0.4 0.6 0.8 --edit-scales 3 10 30
    .venv/bin/python benchmarks/guided_text.py --model M --guide-steps 0 --n 20 --scales 0 \
        --edit-strengths --edit-judged 0.8 --edit-n 400
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a saved text model folder")
    parser.add_argument("--preset", default="text-cpu", help="the preset whose data splits the model was trained on")
    parser.add_argument("--out", required=True)
    parser.add_argument("--guide-steps", type=int, default=2000, help="0: the guide saved with the model")
    parser.add_argument("--n", type=int, default=100, help="samples per target and scale")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 3.0, 10.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--mauve", action="store_true", help="MAUVE against the test sentences of each sentiment")
    parser.add_argument("--edit-strengths", type=float, nargs="*", default=[])
    parser.add_argument("--edit-scales", type=float, nargs="+", default=[3.0, 10.0])
    parser.add_argument("--edit-n", type=int, default=200, help="negative test sentences to edit")
    parser.add_argument("--edit-until", type=float, nargs="*", default=[],
                        help="probabilities P: also edit each sentence until the guide's P(positive) >= P")
    parser.add_argument("--edit-judged", type=float, nargs="*", default=[],
                        help="probabilities A: also edit judged (edit_judged, a TF-IDF judge accepting at A)")
    parser.add_argument("--edit-min-similarity", type=float, default=2.0,
                        help="judged edits keep at least this sentence BLEU to the input (chosen on validation)")
    parser.add_argument("--edit-offset", type=int, default=0, help="skip this many negative test sentences")
    args = parser.parse_args()
    import torch

    from diled import DiLED
    from diled.metrics.text import words
    from diled.prior_training import encode_all
    from diled_platform.config import load_config
    from diled_platform.datatypes.base import datatype_for
    from diled_platform.datatypes.text import guided_sentiment, sentiment_probe
    from diled_platform.training.prior_stage import train_guide

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seeds[0])
    cfg = load_config(args.preset)
    datatype = datatype_for(cfg)
    model = DiLED.from_pretrained(args.model)
    t0 = time.perf_counter()
    if args.guide_steps or model.guide is None:
        z0 = encode_all(model, datatype.training_examples(), log=print)
        t1 = time.perf_counter()
        model.guide, record = train_guide(model, datatype, z0, args.guide_steps, args.seeds[0])
    else:  # --guide-steps 0: the guide saved with the model
        t1, record = time.perf_counter(), {"saved with the model": True}
    train = datatype.splits["train"].to_pylist()
    test = datatype.splits["test"].to_pylist()
    probe, labelled = sentiment_probe(train)
    held = [r for r in test if r["label"] in ("positive", "negative")][:300]
    vocabulary = {w for r in train for w in words(r["text"])}
    t2 = time.perf_counter()
    texts: dict = {}
    runs = {seed: guided_sentiment(model, probe, train, held, out, n=args.n, seed=seed, scales=tuple(args.scales),
                                   vocabulary=vocabulary, texts=texts.setdefault(seed, {})) for seed in args.seeds}
    result = dict(runs[args.seeds[0]])
    result.update({"seeds": args.seeds, "by_scale_per_seed": {seed: r["by_scale"] for seed, r in runs.items()},
                   "by_scale": mean_over_seeds([r["by_scale"] for r in runs.values()]),
                   "probe_positive_rate_test": sum(p == "positive" for p in probe.predict([r["text"] for r in test]))
                   / len(test),
                   "probe_rate_on_real": {c: probe.accuracy([r["text"] for r in test if r["label"] == c], [c] * sum(
                       r["label"] == c for r in test)) for c in ("positive", "negative")}})
    if args.mauve:
        result["mauve_by_scale"] = mauve_by_sentiment(probe, texts, datatype, args.scales)
    if args.edit_strengths or args.edit_judged:
        negatives = [r["text"] for r in test if r["label"] == "negative"][args.edit_offset:args.edit_offset + args.edit_n]
        judge = None
        if args.edit_judged:
            from diled.editing import load_judge
            from diled_platform.training.prior_stage import fit_judge

            judge = load_judge(args.model) or fit_judge(datatype, list(model.guide.classes))[0]
            result["judge_classes"] = list(judge.classes)
        result["edits"] = edits(model, probe, negatives, args.edit_strengths, args.edit_scales, out, args.edit_until,
                                judged=args.edit_judged, judge=judge, min_similarity=args.edit_min_similarity)
        result["edits"]["offset"] = args.edit_offset
    result.update({"guide": record, "encode_seconds": round(t1 - t0, 1), "guided_seconds": round(time.perf_counter() - t2, 1),
                   "probe_test_accuracy": probe.accuracy([r["text"] for r in held], [r["label"] for r in held])})
    (out / "guided.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("by_scale", "probe_positive_rate_test", "probe_rate_on_real",
                                             "mauve_by_scale", "edits") if k in result}, indent=1))


def mean_over_seeds(tables: list[dict]) -> dict:
    """The per-seed ``by_scale`` tables averaged entry by entry."""
    first = tables[0]
    return {scale: {target: {k: sum(t[scale][target][k] for t in tables) / len(tables) for k in entry}
                    for target, entry in row.items()} for scale, row in first.items()}


def mauve_by_sentiment(probe, texts: dict, datatype, scales) -> dict:
    """MAUVE (mean over the seeds' sample sets) of the samples toward each sentiment against the test
    sentences of that sentiment, per scale; with the ceiling: validation sentences of that sentiment."""
    from diled.metrics.distribution import mauve_of_texts

    out = {}
    for target in ("positive", "negative"):
        refs = [r["text"] for r in datatype.splits["test"].to_pylist() if r["label"] == target]
        val = [r["text"] for r in datatype.splits["val"].to_pylist() if r["label"] == target]
        for scale in scales:
            scores = [mauve_of_texts(probe.embed, per_seed[(scale, target)], refs[:len(per_seed[(scale, target)])],
                                     None)["mauve"] for per_seed in texts.values()]
            out.setdefault(str(scale), {})[target] = sum(scores) / len(scores)
        n = min(len(refs), len(val))
        out.setdefault("ceiling", {})[target] = mauve_of_texts(probe.embed, val[:n], refs[:n], None)["mauve"]
        out.setdefault("n_test_sentences", {})[target] = len(refs)
    return out


def edits(model, probe, negatives: list[str], strengths, scales, out: Path, until=(), judged=(), judge=None,
          min_similarity: float | None = None) -> dict:
    """Negative sentences edited toward positive: the share the probe judges positive and the corpus BLEU
    of the edits against their inputs, per strength and scale (strength 0: the plain reconstructions), per
    ``until`` probability of the edits that stop at the mildest setting the guide finds enough, and per
    ``judged`` acceptance of the edits ``judge`` picks (``edit_judged``)."""
    from diled.editing import JUDGED_SETTINGS
    from diled_platform.datatypes._text_sentiment import judged_edit
    from diled.editing import edit_until
    from diled.metrics.text import corpus_bleu

    rows, result = [], {}
    for strength in [0.0, *strengths]:
        for scale in scales if strength else scales[:1]:
            edited = [t for i in range(0, len(negatives), 100)
                      for t in model.edit(negatives[i:i + 100], "positive", strength=strength, guidance_scale=scale)]
            key = f"strength {strength}, scale {scale}" if strength else "strength 0 (reconstruction)"
            result[key] = {"positive": sum(p == "positive" for p in probe.predict(edited)) / len(edited),
                           "bleu_to_input": corpus_bleu(edited, negatives)}
            rows += [(key, a, b) for a, b in list(zip(negatives, edited))[:10]]
            print(key, result[key], flush=True)
    settings = [(strength, scale) for scale in scales for strength in strengths]
    for p in until:
        edited, taken = [], []
        for i in range(0, len(negatives), 100):
            z, kept = edit_until(model, negatives[i:i + 100], "positive", settings, until=p)
            edited += model.codec.decode(z)
            taken += kept
        key = f"until P(positive) >= {p} over {settings}"
        result[key] = {"positive": sum(q == "positive" for q in probe.predict(edited)) / len(edited),
                       "bleu_to_input": corpus_bleu(edited, negatives),
                       "setting_taken": {str(settings[j]): taken.count(j) for j in range(len(settings))}}
        rows += [(key, a, b) for a, b in list(zip(negatives, edited))[:10]]
        print(key, result[key], flush=True)
    for accept in judged:  # the text report's judged edit (judged_edits.tsv holds every edit)
        key = f"judged, accepted at {accept} (min_similarity {min_similarity}), {len(JUDGED_SETTINGS)} settings"
        result[key] = judged_edit(model, probe, judge, negatives, out, accept=accept, min_similarity=min_similarity)
        print(key, result[key], flush=True)
    (out / "edits.tsv").write_text("setting\tinput\tedited\n" + "".join(
        "\t".join(" ".join(x.split()) for x in row) + "\n" for row in rows))
    return {"n": len(negatives), "by_setting": result}


if __name__ == "__main__":
    main()

"""Composed conditions on a finished text model: a sentiment and a source (Rotten Tomatoes or the tweets) at
once, the sentiment guide composed with the source guide (``diled.guidance.ComposedPrior``), over a grid of
scale pairs and seeds. For each pair of scales and each (sentiment, source) it prints the share of samples that
the MiniLM probe judges as the sentiment, that a TF-IDF logistic regression of the sources (fitted on the
training split) judges as the source, and both, and the share of made-up words (not in the training split);
beside them the same judges on samples guided by the sentiment
alone, on unguided samples and on the real test sentences of that pair (the text report's
``guided.composed``, ``_text_sentiment.composed_sentiment``). The model needs both guides saved beside it (the
job's ``--prior_stage.guide_steps``; a folder staged before further labels gets its source guide when the job
runs again).

    .venv/bin/python benchmarks/composed_text.py --model runs/text-cpu/model --out /tmp/composed \
        --scales 5,5 10,10 --seeds 0 1 --n 100
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import number_pair  # noqa: E402  (sets up the paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a saved text model folder with a sentiment and a source guide")
    parser.add_argument("--preset", default="text-cpu", help="the preset whose data splits the model was trained on")
    parser.add_argument("--out", required=True)
    parser.add_argument("--scales", type=number_pair("sentiment,source"), nargs="+", default=[(5.0, 5.0)],
                        help="sentiment,source pairs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--n", type=int, default=100, help="samples per (sentiment, source) pair, scale pair and seed")
    args = parser.parse_args()
    import torch

    from diled import DiLED
    from diled.metrics.text import words
    from diled_platform.config import load_config
    from diled_platform.datatypes._text_sentiment import composed_sentiment
    from diled_platform.datatypes.base import datatype_for
    from diled_platform.datatypes.text import sentiment_probe

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = DiLED.from_pretrained(args.model)
    if "source" not in model.guides or not {"positive", "negative"} <= set(getattr(model.guide, "classes", ())):
        raise SystemExit(f"error: {args.model} needs a sentiment guide and a source guide (guides/source); it has "
                         f"{model.conditions}: run its job again with --prior_stage.guide_steps")
    datatype = datatype_for(load_config(args.preset))
    train, test = datatype.splits["train"].to_pylist(), datatype.splits["test"].to_pylist()
    probe, _ = sentiment_probe(train)
    vocabulary = {w for r in train for w in words(r["text"])}
    held = [r for r in test if r["label"] in ("positive", "negative")]
    result: dict = {"model": args.model, "n": args.n, "seeds": args.seeds, "runs": {}}
    t0 = time.perf_counter()
    for scales in args.scales:
        for seed in args.seeds:
            torch.manual_seed(seed)
            run = composed_sentiment(model, probe, train, held, out, n=args.n, seed=seed, scales=scales,
                                     vocabulary=vocabulary)
            result["runs"][f"{scales[0]},{scales[1]} seed {seed}"] = run
            for pair, entry in run["pairs"].items():
                print(f"scales {scales} seed {seed} {pair:28s} " + "  ".join(
                    f"{what}: {entry[what]['sentiment']:.2f}/{entry[what]['source']:.2f}/{entry[what]['both']:.2f}"
                    f" ({entry[what].get('unseen_words', float('nan')):.3f} made-up)"
                    for what in ("composed", "sentiment_alone", "test_sentences")), flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["source_judge_test_accuracy"] = run["source_judge_test_accuracy"]
    (out / "composed.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(args.scales) * len(args.seeds)} runs in {result['seconds']} s; written {out / 'composed.json'}")


if __name__ == "__main__":
    main()

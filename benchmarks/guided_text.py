"""Guided generation on a finished text model, post hoc: a guide (``diled.guidance.LatentClassifier``) trained
on the model's latents of the labelled training sentences (what ``prior_stage.guide_steps`` does in the
job), then samples toward positive and toward negative at several guidance scales, judged by the report's
two judges (the MiniLM probe and a TF-IDF logistic regression), with the share of made-up words beside.

    .venv/bin/python benchmarks/guided_text.py --model runs/text-cpu/model --out /tmp/guided
    .venv/bin/python benchmarks/guided_text.py --model M --guide-steps 2000 --n 100 --scales 0 1 3 10
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
    parser.add_argument("--guide-steps", type=int, default=2000)
    parser.add_argument("--n", type=int, default=100, help="samples per target and scale")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 3.0, 10.0])
    parser.add_argument("--seed", type=int, default=0)
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
    torch.manual_seed(args.seed)
    cfg = load_config(args.preset)
    datatype = datatype_for(cfg)
    model = DiLED.from_pretrained(args.model)
    t0 = time.perf_counter()
    z0 = encode_all(model, datatype.training_examples(), log=print)
    t1 = time.perf_counter()
    model.guide, record = train_guide(model, datatype, z0, args.guide_steps, args.seed)
    train = datatype.splits["train"].to_pylist()
    test = datatype.splits["test"].to_pylist()
    probe, labelled = sentiment_probe(train)
    held = [r for r in test if r["label"] in ("positive", "negative")][:300]
    vocabulary = {w for r in train for w in words(r["text"])}
    t2 = time.perf_counter()
    result = guided_sentiment(model, probe, train, held, out, n=args.n, seed=args.seed, scales=tuple(args.scales),
                              vocabulary=vocabulary)
    result.update({"guide": record, "encode_seconds": round(t1 - t0, 1), "guided_seconds": round(time.perf_counter() - t2, 1),
                   "probe_test_accuracy": probe.accuracy([r["text"] for r in held], [r["label"] for r in held])})
    (out / "guided.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["by_scale"], indent=1))


if __name__ == "__main__":
    main()

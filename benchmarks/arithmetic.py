"""Latent arithmetic on a finished text model, on more sentences than the report's 200: the report's
computation (``sentiment_arithmetic``: the positive-minus-negative mean latent of the labelled training
sentences added to held-out negative sentences' latents, decoded the saved default way, judged by the
report's MiniLM probe) on the negative sentences of the test and then the validation split, at each
``--scales`` multiple of the shift; prints the positive rate without and with the shift and their ratio
(the text bar asks for 1.5x at scale 1).

    .venv/bin/python benchmarks/arithmetic.py --model runs/text-cpu/model --n 600 --scales 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _common  # noqa: F401  (the repository on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a saved text model folder")
    parser.add_argument("--preset", default="text-cpu", help="the preset whose data splits the model was trained on")
    parser.add_argument("--n", type=int, default=600, help="negative held-out sentences (test first, then validation)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0])
    parser.add_argument("--out", help="a JSON file for the result")
    args = parser.parse_args()
    if args.n < 1 or any(s <= 0 for s in args.scales):
        parser.error(f"--n must be >= 1 and every --scales value > 0, got {args.n} and {args.scales}")
    from diled import DiLED
    from diled_platform.config import load_config
    from diled_platform.datatypes.base import datatype_for
    from diled_platform.datatypes.text import sentiment_arithmetic, sentiment_probe

    t0 = time.perf_counter()
    datatype = datatype_for(load_config(args.preset))
    model = DiLED.from_pretrained(args.model).eval()
    probe, labelled = sentiment_probe(datatype.splits["train"].to_pylist())
    held = datatype.splits["test"].to_pylist() + datatype.splits["val"].to_pylist()
    negatives = [r["text"] for r in held if r["label"] == "negative"][:args.n]
    result = {"model": args.model, "n": len(negatives), "by_scale": {}}
    for scale in args.scales:
        metrics, _ = sentiment_arithmetic(model, probe, labelled, negatives, scale=scale)
        base, flip = metrics["arithmetic_positive_rate_without_shift"], metrics["arithmetic_flip_rate"]
        result["by_scale"][scale] = {"positive_without_shift": base, "positive_with_shift": flip,
                                     "ratio": flip / base if base else float("inf")}
        print(f"scale {scale:g}: judged positive {base:.1%} without the shift, {flip:.1%} with it "
              f"({flip / max(base, 1e-9):.2f}x) on {len(negatives)} negative sentences", flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

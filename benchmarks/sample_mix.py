"""Where a text model's unguided samples lean: the share of samples the MiniLM probe judges positive, beside
the same share of the test sentences, broken down by source (Rotten Tomatoes or the tweets, as a TF-IDF
logistic regression of the training sentences' sources judges it); the probe on the reconstructions of the
test sentences (what the decoder alone does to the rate); and, with a saved sentiment guide, the guide's
reading of sampled latents against the encoder's latents of the test sentences (what the prior alone does,
with no decoder in between). Each sampling setting (``--settings temperature,eta``) gives ``--n`` samples per
seed, DDIM-``--steps``, with their share of made-up words (not in the training split) and MAUVE against the
test sentences (the report's settings: MiniLM mean-pooled embeddings, ``mauve-text``'s defaults).

    .venv/bin/python benchmarks/sample_mix.py --model runs/text-cpu/model --seeds 0 1 2
    .venv/bin/python benchmarks/sample_mix.py --model M --settings 0.95,1 0.95,0 1.05,1 --n 500
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import number_pair  # noqa: E402  (sets up the paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a saved text model folder")
    parser.add_argument("--preset", default="text-cpu", help="the preset whose data splits the model was trained on")
    parser.add_argument("--settings", type=number_pair("temperature,eta"), nargs="+", default=None,
                        help="temperature,eta pairs (default: the model's own)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=200, help="samples per setting and seed")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--out", default=None, help="a JSON file for the results")
    args = parser.parse_args()
    import torch

    from diled import DiLED
    from diled.metrics.distribution import mauve_of_texts
    from diled.metrics.sentiment import TfidfSentiment
    from diled.metrics.text import unseen_word_share, words
    from diled_platform.config import load_config
    from diled_platform.datatypes.base import datatype_for
    from diled_platform.datatypes.text import sentiment_probe

    model = DiLED.from_pretrained(args.model)
    datatype = datatype_for(load_config(args.preset))
    train, test = datatype.splits["train"].to_pylist(), datatype.splits["test"].to_pylist()
    probe, _ = sentiment_probe(train)
    vocabulary = {w for r in train for w in words(r["text"])}
    sources = sorted({r["source"] for r in train})
    source_judge = TfidfSentiment(sources).fit([r["text"] for r in train], [r["source"] for r in train])

    def mix(texts: list[str]) -> dict:
        moods, origins = probe.predict(texts), source_judge.predict(texts)
        out = {"n": len(texts), "positive": sum(m == "positive" for m in moods) / len(texts)}
        for source in sources:
            mine = [m for m, o in zip(moods, origins) if o == source]
            out[source] = {"share": len(mine) / len(texts),
                           "positive": sum(m == "positive" for m in mine) / max(1, len(mine))}
        return out

    def decode(z: torch.Tensor) -> list[str]:
        return [t for i in range(0, len(z), 100) for t in model.codec.decode(z[i:i + 100])]

    texts = [r["text"] for r in test]
    with torch.no_grad():
        z_test = torch.cat([model.encode(texts[i:i + 100]) for i in range(0, len(texts), 100)])
    result = {"model": args.model, "test": mix(texts), "reconstructions": mix(decode(z_test)), "settings": {}}
    refs = texts[:args.n]
    settings = args.settings or [(model.prior_temperature, model.sampling_eta)]
    for temperature, eta in settings:
        per_seed, latents = [], []
        for seed in args.seeds:
            z = model.sample_latents(args.n, steps=args.steps, eta=eta, prior_temperature=temperature,
                                     generator=torch.Generator().manual_seed(seed))
            samples = decode(z)
            latents.append(z)
            per_seed.append({**mix(samples), "unseen_words": unseen_word_share(samples, vocabulary),
                             "mauve": mauve_of_texts(probe.embed, samples, refs, None)["mauve"]})
        entry = {key: sum(s[key] for s in per_seed) / len(per_seed) for key in ("positive", "unseen_words", "mauve")}
        entry.update({"per_seed": per_seed, "latent_norm": torch.cat(latents).norm(dim=1).mean().item()})
        if model.guide is not None and "positive" in getattr(model.guide, "classes", ()):
            entry["guide_positive"] = guide_positive(model, torch.cat(latents))
        result["settings"][f"{temperature},{eta}"] = entry
        print(f"temperature {temperature}, eta {eta}: positive {entry['positive']:.1%} (test "
              f"{result['test']['positive']:.1%}, {entry['positive'] / result['test']['positive']:.2f}x), made-up words "
              f"{entry['unseen_words']:.1%}, MAUVE {entry['mauve']:.3f}", flush=True)
    result["test_latent_norm"] = z_test.norm(dim=1).mean().item()
    if model.guide is not None and "positive" in getattr(model.guide, "classes", ()):
        result["test_guide_positive"] = guide_positive(model, z_test)
    summary = {k: result[k] for k in ("test", "reconstructions")}
    print(json.dumps({**summary, "test_guide_positive": result.get("test_guide_positive"),
                      "test_latent_norm": result["test_latent_norm"]}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


def guide_positive(model, z) -> dict:
    """The saved guide's reading of clean latents ``z`` (t = 0, in the prior's coordinates, where the guide was
    trained): its mean P(positive) and the share it calls positive (argmax over its classes)."""
    import torch

    with torch.no_grad():
        probs = model.guide(model.prior_space.to_prior(z), torch.zeros(len(z), dtype=torch.long)).softmax(-1)
    i = list(model.guide.classes).index("positive")
    return {"mean_p": probs[:, i].mean().item(), "argmax_share": (probs.argmax(-1) == i).float().mean().item()}


if __name__ == "__main__":
    main()

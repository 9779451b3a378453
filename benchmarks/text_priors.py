"""Which prior fits a trained text model's latents: each candidate prior trained on the same frozen
codec's latents for the same wall time, then judged by what a user sees of its samples.

    python benchmarks/text_priors.py --model runs/text-cpu/model [--seconds 240] [--priors mlp_skip slot_transformer]

For each prior: the training split's encoder means (computed once), ``diled.prior_training.train_prior``
for ``--seconds``, 500 DDIM-50 samples decoded plain greedy (Serve's default), and their MAUVE
(``mauve-text``, 3 seeds) against 500 test sentences on MiniLM embeddings, their share of words never
seen in training against the test sentences', novelty, and the prior fit (``val_prior_fd``). The first
rows are the references: the model's own prior as trained, and the encoder's latents of 500 validation
sentences decoded (the decoder's ceiling). Prints a table; ``--out`` writes it as JSON too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _common  # noqa: F401  (repository on sys.path)
import torch

CANDIDATES = {
    "mlp_skip": {"name": "mlp_skip", "hidden": 512, "depth": 6, "time_dim": 128},
    "mlp_skip_wide": {"name": "mlp_skip", "hidden": 1024, "depth": 6, "time_dim": 128},
    "slot_transformer": {"name": "slot_transformer", "hidden": 256, "depth": 4, "heads": 4, "time_dim": 128},
    "slot_transformer_small": {"name": "slot_transformer", "hidden": 128, "depth": 3, "heads": 4, "time_dim": 128},
}


def judge(model, z1: torch.Tensor, embedder, test_feats, vocabulary, training, val_moments) -> dict:
    from diled.metrics.distribution import mauve
    from diled.metrics.text import novelty, unseen_word_share
    from diled_platform.training.validation import prior_fit

    texts = [s for i in range(0, len(z1), 100) for s in model.codec.decode(z1[i:i + 100])]
    score = mauve(embedder.embed([t if t.strip() else "." for t in texts]), test_feats)
    out = {"mauve": round(score["mean"], 3), "unseen_words": round(unseen_word_share(texts, vocabulary), 4),
           "novelty": round(novelty(texts, training), 3), "examples": texts[:8]}
    if val_moments is not None:
        mean, cov, count = val_moments
        out["prior_fd"] = round(prior_fit(model, mean, cov, seed=0, count=count), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a trained text model folder (save_pretrained)")
    ap.add_argument("--preset", default="text-cpu", help="the preset whose data splits it was trained on")
    ap.add_argument("--priors", nargs="+", default=["mlp_skip", "slot_transformer"], choices=sorted(CANDIDATES))
    ap.add_argument("--seconds", type=float, default=240.0, help="wall time per prior")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--max-train", type=int, default=None, help="encode only this many training sentences")
    ap.add_argument("--warm", action="store_true", help="also continue the model's own (jointly trained) prior")
    ap.add_argument("--t-sampling", nargs="+", default=["uniform"], choices=["uniform", "log_uniform"],
                    help="how the prior's training draws t (each candidate is trained once per value)")
    ap.add_argument("--cache", type=Path, help="keep the encoded latents in this .pt file (read if it exists)")
    ap.add_argument("--no-references", action="store_true", help="skip the ceiling and as-trained rows")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from diled import DiLED, build_prior
    from diled.metrics.sentiment import SentimentProbe
    from diled.metrics.text import words
    from diled.prior_training import encode_all, train_prior
    from diled_platform.config import load_config
    from diled_platform.datatypes import datatype_for

    torch.manual_seed(0)
    cfg = load_config(args.preset, [])
    splits = datatype_for(cfg).splits
    train_texts = splits["train"].column("text").to_pylist()
    val_texts = splits["val"].column("text").to_pylist()
    test_texts = splits["test"].column("text").to_pylist()[:args.samples]
    model = DiLED.from_pretrained(args.model)
    embedder = SentimentProbe()
    test_feats = embedder.embed(test_texts)
    vocabulary = {w for t in train_texts for w in words(t)}
    training = {t.lower() for t in train_texts}

    t0 = time.perf_counter()
    if args.cache is not None and args.cache.is_file():
        z_train, z_val = torch.load(args.cache).values()
    else:
        z_train, z_val = encode_all(model, train_texts[:args.max_train]), encode_all(model, val_texts)
        if args.cache is not None:
            torch.save({"train": z_train, "val": z_val}, args.cache)
    print(f"encoded {len(z_train)} training and {len(z_val)} validation sentences in {time.perf_counter() - t0:.0f} s",
          flush=True)
    val_moments = (z_val.double().mean(0), torch.cov(z_val.double().T), len(z_val))
    rows = {}
    if not args.no_references:
        rows["decoder ceiling (validation latents)"] = judge(model, z_val[:args.samples], embedder, test_feats,
                                                             vocabulary, training, None)
        gen = torch.Generator().manual_seed(0)
        rows["as trained (joint)"] = judge(model, model.sample_latents(args.samples, steps=50, generator=gen),
                                           embedder, test_feats, vocabulary, training, val_moments)
        print(json.dumps(rows, indent=1), flush=True)
    joint_prior = model.denoiser
    runs = [(name, how) for name in (["joint, continued"] if args.warm else []) + args.priors
            for how in args.t_sampling]
    for name, how in runs:
        torch.manual_seed(0)
        if name == "joint, continued":
            prior = build_prior({"name": "mlp_skip", **joint_prior.get_config()})
            prior.load_state_dict(joint_prior.state_dict())
        else:
            spec = {**CANDIDATES[name], "latent_dim": model.latent_dim}
            if spec["name"] == "slot_transformer":
                spec["slots"] = model.codec.latent_slots
            prior = build_prior(spec)
        trained, summary = train_prior(model, prior, z_train, seconds=args.seconds, batch_size=args.batch_size,
                                       lr=args.lr, t_sampling=how, log=print, log_every=500)
        model.denoiser = trained
        gen = torch.Generator().manual_seed(0)
        row = judge(model, model.sample_latents(args.samples, steps=50, generator=gen), embedder, test_feats,
                    vocabulary, training, val_moments)
        row.update({"parameters": sum(p.numel() for p in prior.parameters()), "steps": summary["steps"],
                    "final_loss": round(summary["final_loss"], 4)})
        rows[f"{name}, post hoc {args.seconds:.0f} s, t {how}"] = row
        model.denoiser = joint_prior
        print(name, json.dumps(row, indent=1), flush=True)

    print("\n| prior | MAUVE | unseen words | novelty | prior fit | steps |\n| --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r['mauve']} | {r['unseen_words']} | {r['novelty']} | {r.get('prior_fd', '-')} | "
              f"{r.get('steps', '-')} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

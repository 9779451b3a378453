"""The text job's driver-side parts: the tokenizer, and the evaluation a finished run writes to its folder
(samples, reconstructions, interpolations, latent arithmetic, metrics, plots)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from diled_platform.config import JobConfig

log = logging.getLogger("diled")


def prepare_tokenizer(cfg: JobConfig, run_dir: Path, train_texts: list[str]) -> JobConfig:
    """If ``model.codec_args.tokenizer`` is unset or "train", train a byte-level BPE of
    ``model.codec_args.vocab_size`` (default 8000) on the training split into ``<run_dir>/tokenizer``
    (kept for resumed runs) and point the codec at it."""
    from diled.codecs.text import train_bpe

    args = dict(cfg.model.codec_args)
    vocab = args.pop("vocab_size", 8000)
    if args.get("tokenizer") in (None, "train"):
        directory = run_dir / "tokenizer"
        if not (directory / "tokenizer.json").is_file():
            t0 = time.perf_counter()
            train_bpe(train_texts, vocab, directory)
            log.info(f"trained a {vocab}-token BPE on {len(train_texts)} sentences in {time.perf_counter() - t0:.1f}s")
        args["tokenizer"] = str(directory)
    data = cfg.to_dict()
    data["model"]["codec_args"] = args
    return JobConfig.from_dict(data)


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


@torch.no_grad()
def text_report(model_dir: Path, splits: dict, out_dir: Path, n_eval: int = 300, n_samples: int = 200,
                ddim_steps: int = 50, probe_train: int = 4000, seed: int = 0) -> dict[str, Any]:
    """Evaluate a trained text model on the held-out split and write the run's text outputs."""
    from diled import DiLED
    from diled.metrics.sentiment import SentimentProbe
    from diled.metrics.text import corpus_bleu, distinct_n, novelty, self_bleu

    torch.manual_seed(seed)
    model = DiLED.from_pretrained(model_dir)
    codec = model.codec
    test = splits["test"].to_pylist()
    train = splits["train"].to_pylist()
    held = test[:n_eval]
    refs = [r["text"] for r in held]
    metrics: dict[str, Any] = {"n_test_sentences": len(held)}

    # reconstruction: decode(encode(x)), greedy
    recons, accs = [], []
    for chunk in _batches(refs, 100):
        batch = model._prepare(codec.collate(chunk))
        z0 = codec.encode(batch)
        recons += codec.decode(z0)
        accs += codec.token_accuracy(batch, z0).tolist()
    metrics["reconstruction_bleu"] = corpus_bleu(recons, refs)
    metrics["reconstruction_token_accuracy"] = sum(accs) / len(accs)
    metrics["reconstruction_exact_match"] = sum(a.strip() == b.strip() for a, b in zip(recons, refs)) / len(refs)
    with open(out_dir / "reconstructions.tsv", "w") as f:
        f.write("input\toutput\n")
        for a, b in zip(refs, recons):
            f.write(f"{a.replace(chr(9), ' ')}\t{b.replace(chr(9), ' ')}\n")

    # generation: z1 from the prior (DDIM), greedy decoding
    samples = []
    gen = torch.Generator().manual_seed(seed)
    for n in [100] * (n_samples // 100) + ([n_samples % 100] if n_samples % 100 else []):
        samples += model.generate(n, steps=ddim_steps, generator=gen)
    training = {r["text"].lower() for r in train}
    metrics.update({"samples": len(samples), "ddim_steps": ddim_steps,
                    "distinct_1": distinct_n(samples, 1), "distinct_2": distinct_n(samples, 2),
                    "self_bleu": self_bleu(samples), "novelty": novelty(samples, training),
                    "empty_samples": sum(not s.strip() for s in samples)})
    (out_dir / "samples.txt").write_text("\n".join(samples) + "\n")

    # interpolation between pairs of held-out sentences (slerp between DDIM-inverted codes)
    lines = []
    for i in range(5):
        a, b = held[2 * i]["text"], held[2 * i + 1]["text"]
        mid = model.interpolate(a, b, num=5, steps=ddim_steps)
        lines += [f"# {a}  ->  {b}"] + [f"  {k / 4:.2f}  {s}" for k, s in enumerate(mid)] + [""]
    (out_dir / "interpolations.txt").write_text("\n".join(lines))

    # latent arithmetic: add the positive-minus-negative direction to held-out negative sentences
    labelled = [r for r in train if r["label"] in ("positive", "negative")][:probe_train]
    if {r["label"] for r in labelled} == {"positive", "negative"}:
        probe = SentimentProbe().fit([r["text"] for r in labelled], [r["label"] for r in labelled])
        held_pn = [r for r in test if r["label"] in ("positive", "negative")][:n_eval]
        metrics["sentiment_classifier"] = ("logistic regression on frozen all-MiniLM-L6-v2 mean-pooled "
                                           f"embeddings, trained on {len(labelled)} training sentences")
        metrics["sentiment_classifier_test_accuracy"] = probe.accuracy([r["text"] for r in held_pn],
                                                                       [r["label"] for r in held_pn])
        means = {}
        for label in ("positive", "negative"):
            texts = [r["text"] for r in labelled if r["label"] == label]
            means[label] = torch.cat([model.encode(c) for c in _batches(texts, 200)]).mean(0)
        direction = means["positive"] - means["negative"]
        negatives = [r["text"] for r in test if r["label"] == "negative"][:200]
        z = torch.cat([model.encode(c) for c in _batches(negatives, 100)])
        base = [s for c in _batches(list(z), 100) for s in codec.decode(torch.stack(c))]
        shifted = [s for c in _batches(list(z + direction), 100) for s in codec.decode(torch.stack(c))]
        base_pred, shifted_pred = probe.predict(base), probe.predict(shifted)
        metrics["arithmetic_n"] = len(negatives)
        metrics["arithmetic_flip_rate"] = sum(p == "positive" for p in shifted_pred) / len(negatives)
        metrics["arithmetic_positive_rate_without_shift"] = sum(p == "positive" for p in base_pred) / len(negatives)
        with open(out_dir / "arithmetic.tsv", "w") as f:
            f.write("negative input\treconstruction\twith +(positive - negative)\tjudged\n")
            for a, b, c, p in zip(negatives, base, shifted, shifted_pred):
                f.write(f"{a}\t{b}\t{c}\t{p}\n")

    # the representation: a 2-D projection of the test latents, coloured by sentiment
    z_test = torch.cat([model.encode([r["text"] for r in c]) for c in _batches(test[:2000], 200)])
    _latent_plot(z_test, [r["label"] for r in test[:2000]], out_dir / "latents_pca.png")
    _loss_plot(out_dir / "tensorboard", out_dir / "loss_curves.png")
    (out_dir / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _latent_plot(z: torch.Tensor, labels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zc = z - z.mean(0)
    _, _, v = torch.linalg.svd(zc, full_matrices=False)
    xy = (zc @ v[:2].T).numpy()
    fig, ax = plt.subplots(figsize=(6, 5))
    for label, colour in (("negative", "tab:red"), ("neutral", "tab:gray"), ("positive", "tab:blue")):
        idx = [i for i, l in enumerate(labels) if l == label]
        if idx:
            ax.scatter(xy[idx, 0], xy[idx, 1], s=4, alpha=0.5, c=colour, label=f"{label} ({len(idx)})")
    ax.set_title("test-set latents mu(x), first two principal components")
    ax.legend(markerscale=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _loss_plot(tb_dir: Path, path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not tb_dir.is_dir():
        return
    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    tags = [t for t in ("train/loss", "train/rec", "train/diff", "val/val_loss", "val/val_rec", "val/val_diff")
            if t in acc.Tags().get("scalars", [])]
    if not tags:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, term in zip(axes, ("loss", "rec", "diff")):
        for tag in (t for t in tags if t.endswith("/" + term) or t.endswith("/val_" + term)):
            events = acc.Scalars(tag)
            ax.plot([e.step for e in events], [e.value for e in events], label=tag, marker="." if "val" in tag else None)
        ax.set_title(term)
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

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


GPT2_TIKTOKEN = "gpt2-tiktoken"  # codec_args.tokenizer: GPT-2's own BPE, from the offline ranks file


def gpt2_ranks_file() -> Path:
    """GPT-2's BPE ranks (``gpt2.tiktoken`` from the ``openai-whisper`` sdist), which ``scripts/setup.sh``
    puts in ``<venv>/share/diled/``; ``DILED_GPT2_TIKTOKEN`` names another copy."""
    import os
    import sys

    path = Path(os.environ.get("DILED_GPT2_TIKTOKEN") or Path(sys.prefix) / "share" / "diled" / "gpt2.tiktoken")
    if not path.is_file():
        raise FileNotFoundError(f"model.codec_args.tokenizer={GPT2_TIKTOKEN!r} needs GPT-2's BPE ranks at {path}: "
                                f"run scripts/setup.sh (it extracts whisper/assets/gpt2.tiktoken from the "
                                f"openai-whisper sdist) or set DILED_GPT2_TIKTOKEN to the file")
    return path


def prepare_tokenizer(cfg: JobConfig, run_dir: Path, train_texts: list[str]) -> JobConfig:
    """If ``model.codec_args.tokenizer`` is unset or "train", train a byte-level BPE of
    ``model.codec_args.vocab_size`` (default 8000) on the training split into ``<run_dir>/tokenizer``
    (kept for resumed runs) and point the codec at it; if it is "gpt2-tiktoken", write GPT-2's own
    50,257-token BPE there from the offline ranks file (``gpt2_ranks_file``). A bert decoder
    (``decoder_kind: bert``) with no ``tokenizer`` keeps its checkpoint's WordPiece: the config is returned
    unchanged; with one, its vocabulary is transplanted (``diled.codecs.text``)."""
    from diled.codecs.text import gpt2_tokenizer_from_tiktoken, train_bpe

    args = dict(cfg.model.codec_args)
    if args.get("decoder_kind") == "bert" and "tokenizer" not in args:  # the checkpoint's own WordPiece
        return cfg
    vocab = args.pop("vocab_size", 8000)
    if args.get("tokenizer") == GPT2_TIKTOKEN:
        directory = run_dir / "tokenizer"
        if not (directory / "tokenizer.json").is_file():
            gpt2_tokenizer_from_tiktoken(gpt2_ranks_file(), directory)
        args["tokenizer"] = str(directory)
    elif args.get("tokenizer") in (None, "train"):
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


def reconstruct_texts(model, refs: list[str], batch_size: int = 100) -> tuple[list[str], dict[str, float]]:
    """Greedy decode(encode(x)) of ``refs``: the outputs, and BLEU / teacher-forced token accuracy / exact match.

    The same two scores with each sentence given the previous sentence's latent (``..._other_latent``) are
    the floor to read them against: what the decoder's language model and the corpus' shared words
    (handles, "the", "movie") score with no information about this sentence."""
    from diled.metrics.text import corpus_bleu

    codec = model.codec
    batches = [model.prepare_batch(codec.collate(chunk)) for chunk in _batches(refs, batch_size)]
    latents = [codec.encode(batch) for batch in batches]
    others = torch.cat(latents).roll(1, dims=0).split([len(z) for z in latents])
    floor = len(refs) > 1  # with one sentence there is no other latent
    recons, recons_other, accs, accs_other = [], [], [], []
    for batch, z, z_other in zip(batches, latents, others):
        recons += codec.decode(z)
        accs += codec.token_accuracy(batch, z).tolist()
        if floor:
            recons_other += codec.decode(z_other)
            accs_other += codec.token_accuracy(batch, z_other).tolist()
    metrics = {"reconstruction_bleu": corpus_bleu(recons, refs),
               "reconstruction_token_accuracy": sum(accs) / len(accs),
               "reconstruction_exact_match": sum(a.strip() == b.strip() for a, b in zip(recons, refs)) / len(refs)}
    if floor:
        metrics.update({"reconstruction_bleu_other_latent": corpus_bleu(recons_other, refs),
                        "reconstruction_token_accuracy_other_latent": sum(accs_other) / len(accs_other)})
    return recons, metrics


def second_test_set(model, n: int, seed: int, exclude: set[str] = frozenset()) -> tuple[list[str], list[str], dict]:
    """``reconstruct_texts`` on ``n`` Guardian headlines (``diled.data.text.guardian_headlines``, a seeded
    sample; any that a training sentence equals, case aside, left out): the texts, outputs and metrics."""
    import random

    from diled.data.text import guardian_headlines

    pool = [t for t in guardian_headlines() if t.lower() not in exclude]
    texts = random.Random(seed).sample(pool, min(n, len(pool)))
    recons, metrics = reconstruct_texts(model, texts)
    return texts, recons, metrics


def generate_texts(model, n: int, steps: int, seed: int, batch_size: int = 100,
                   no_repeat_ngram: tuple[int, ...] = (0,)) -> list[list[str]]:
    """``n`` samples: z1 from the prior (DDIM, ``steps``), seeded, each latent decoded greedily once per
    value of ``no_repeat_ngram`` (0: plain greedy; k: no token k-gram repeated, Hugging Face's
    ``no_repeat_ngram_size``). One list of texts per value, the same latents in all."""
    gen, samples = torch.Generator().manual_seed(seed), [[] for _ in no_repeat_ngram]
    for k in [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else []):
        z = model.sample_latents(k, steps=steps, generator=gen)
        for out, block in zip(samples, no_repeat_ngram):
            out += model.codec.decode(z, no_repeat_ngram=block)
    return samples


def interpolation_paths(model, pairs: list[tuple[str, str]], num: int = 5, steps: int = 50) -> list[list[str]]:
    """Decoded points from a to b for each pair (DiLED: slerp between DDIM-inverted codes)."""
    return [model.interpolate(a, b, num=num, steps=steps) for a, b in pairs]


def one_line(text: str) -> str:
    """``text`` as one line of a text or TSV file: tabs and everything ``str.splitlines`` breaks at (a
    byte-level decoder can emit \\r, \\x0b, \\x1c-\\x1e, \\x85, \\u2028) become spaces."""
    return " ".join(text.replace("\t", " ").splitlines())


def write_text_outputs(out_dir: Path, refs: list[str], recons: list[str], samples: list[str],
                       pairs: list[tuple[str, str]], paths: list[list[str]]) -> None:
    """``reconstructions.tsv`` (input, output), ``samples.txt`` and ``interpolations.txt`` in ``out_dir``."""
    (out_dir / "reconstructions.tsv").write_text(
        "input\toutput\n" + "".join(f"{one_line(a)}\t{one_line(b)}\n" for a, b in zip(refs, recons)))
    (out_dir / "samples.txt").write_text("".join(one_line(t) + "\n" for t in samples))
    lines = []
    for (a, b), path in zip(pairs, paths):
        lines += [f"# {one_line(a)}  ->  {one_line(b)}"] + [f"  {k / (len(path) - 1):.2f}  {one_line(s)}"
                                                            for k, s in enumerate(path)] + [""]
    (out_dir / "interpolations.txt").write_text("\n".join(lines))


def sentiment_probe(train_rows: list[dict], n: int = 4000):
    """The flip-rate judge: logistic regression on frozen MiniLM embeddings of up to ``n`` labelled training
    sentences; None without both labels."""
    from diled.metrics.sentiment import SentimentProbe

    labelled = [r for r in train_rows if r["label"] in ("positive", "negative")][:n]
    if {r["label"] for r in labelled} != {"positive", "negative"}:
        return None, labelled
    return SentimentProbe().fit([r["text"] for r in labelled], [r["label"] for r in labelled]), labelled


def sentiment_arithmetic(model, probe, labelled: list[dict], negatives: list[str]) -> tuple[dict, list[tuple]]:
    """Add the (positive - negative) mean-latent direction of the ``labelled`` training sentences to the
    latents of held-out ``negatives``, decode, and let ``probe`` judge: the flip rate and the rows."""
    codec, means = model.codec, {}
    for label in ("positive", "negative"):
        texts = [r["text"] for r in labelled if r["label"] == label]
        means[label] = torch.cat([model.encode(c) for c in _batches(texts, 200)]).mean(0)
    direction = means["positive"] - means["negative"]
    z = torch.cat([model.encode(c) for c in _batches(negatives, 100)])
    base = [s for c in _batches(list(z), 100) for s in codec.decode(torch.stack(c))]
    shifted = [s for c in _batches(list(z + direction), 100) for s in codec.decode(torch.stack(c))]
    base_pred, shifted_pred = probe.predict(base), probe.predict(shifted)
    metrics = {"arithmetic_n": len(negatives),
               "arithmetic_flip_rate": sum(p == "positive" for p in shifted_pred) / len(negatives),
               "arithmetic_positive_rate_without_shift": sum(p == "positive" for p in base_pred) / len(negatives)}
    return metrics, list(zip(negatives, base, shifted, shifted_pred))


@torch.no_grad()
def text_report(model_dir: Path, splits: dict, out_dir: Path, n_eval: int = 300, n_samples: int = 200,
                ddim_steps: int = 50, probe_train: int = 4000, seed: int = 0, no_repeat_ngram: int = 3) -> dict[str, Any]:
    """Evaluate a trained text model on the held-out split and write the run's text outputs. Samples are
    decoded greedily with no repeated token ``no_repeat_ngram``-gram (0: plain greedy)."""
    from diled import DiLED
    from diled.data.text import GUARDIAN_HEADLINES
    from diled.metrics.text import distinct_n, novelty, repeated_ngram_share, self_bleu

    torch.manual_seed(seed)
    model = DiLED.from_pretrained(model_dir)
    test = splits["test"].to_pylist()
    train = splits["train"].to_pylist()
    held = test[:n_eval]
    refs = [r["text"] for r in held]
    metrics: dict[str, Any] = {"n_test_sentences": len(held)}

    recons, rec_metrics = reconstruct_texts(model, refs)
    metrics.update(rec_metrics)
    # the same on a second test set that the training corpus never saw: another source and domain
    second, second_recons, second_metrics = second_test_set(model, n_eval, seed, exclude={r["text"].lower() for r in train})
    metrics.update({"second_test_set": GUARDIAN_HEADLINES, "second_test_sentences": len(second),
                    **{f"second_test_{k}": v for k, v in second_metrics.items()}})
    (out_dir / "reconstructions_second_test.tsv").write_text(
        "input\toutput\n" + "".join(f"{one_line(a)}\t{one_line(b)}\n" for a, b in zip(second, second_recons)))

    # samples are decoded greedily with no repeated token 3-gram; the same latents plain greedy show what
    # the blocking changes (a decoder trained briefly loops: "new new new new")
    samples, greedy = generate_texts(model, n_samples, ddim_steps, seed, no_repeat_ngram=(no_repeat_ngram, 0))
    training = {r["text"].lower() for r in train}
    metrics.update({"samples": len(samples), "ddim_steps": ddim_steps,
                    "sample_decoding": f"greedy, no repeated token {no_repeat_ngram}-gram" if no_repeat_ngram else "greedy",
                    "samples_with_repeated_3gram": repeated_ngram_share(samples, 3),
                    "samples_with_repeated_3gram_plain_greedy": repeated_ngram_share(greedy, 3),
                    "distinct_1": distinct_n(samples, 1), "distinct_2": distinct_n(samples, 2),
                    "self_bleu": self_bleu(samples), "novelty": novelty(samples, training),
                    "empty_samples": sum(not s.strip() for s in samples)})
    pairs = [(held[2 * i]["text"], held[2 * i + 1]["text"]) for i in range(min(5, len(held) // 2))]
    write_text_outputs(out_dir, refs, recons, samples, pairs, interpolation_paths(model, pairs, steps=ddim_steps))

    probe, labelled = sentiment_probe(train, probe_train)
    if probe is not None:
        held_pn = [r for r in test if r["label"] in ("positive", "negative")][:n_eval]
        metrics["sentiment_classifier"] = ("logistic regression on frozen all-MiniLM-L6-v2 mean-pooled "
                                           f"embeddings, trained on {len(labelled)} training sentences")
        metrics["sentiment_classifier_test_accuracy"] = probe.accuracy([r["text"] for r in held_pn],
                                                                       [r["label"] for r in held_pn])
        negatives = [r["text"] for r in test if r["label"] == "negative"][:min(200, n_eval)]
        arith, rows = sentiment_arithmetic(model, probe, labelled, negatives)
        metrics.update(arith)
        with open(out_dir / "arithmetic.tsv", "w") as f:
            f.write("negative input\treconstruction\twith +(positive - negative)\tjudged\n")
            for row in rows:
                f.write("\t".join(row) + "\n")

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

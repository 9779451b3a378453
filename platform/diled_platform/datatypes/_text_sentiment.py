"""The text report's sentiment parts and shared helpers: the MiniLM sentiment probe (the flip-rate judge),
latent arithmetic along the sentiment direction, and generation guided toward a sentiment judged by two
judges (``guided_sentiment``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _can_guide(model, classes: tuple[str, ...]) -> bool:
    """Whether ``model`` can be guided toward each of ``classes`` (a conditional prior or a saved guide)."""
    from diled.guidance import guidable_classes

    return set(classes) <= set(guidable_classes(model))


def guided_sentiment(model, probe, train: list[dict], held: list[dict], out_dir: Path, n: int = 100,
                     steps: int = 50, seed: int = 0, scales: tuple[float, ...] = (0.0, 1.0, 3.0, 10.0),
                     vocabulary: set | None = None, texts: dict | None = None, model_dir: Path | None = None) -> dict[str, Any]:
    """Guided generation toward positive and toward negative at each guidance scale (0: unguided, the same
    seeds), judged by two judges the guide never saw: the MiniLM probe and a TF-IDF logistic regression
    (``TfidfSentiment``) fitted on the training split; with each, the share of samples judged as the target.
    Also the share of made-up words (quality) per scale, ``guided_samples.tsv`` and ``guided_control.png``
    (control against quality: the curve a scale is picked from). ``texts``: a dict that gets every sample,
    keyed ``(scale, target)``. With a judge saved in ``model_dir``: ``judged_edit`` (``judged_edit``)."""
    from diled.metrics.sentiment import TfidfSentiment
    from diled.metrics.text import unseen_word_share

    tfidf = TfidfSentiment().fit([r["text"] for r in train], [r["label"] for r in train])
    out: dict[str, Any] = {"n_per_condition": n, "ddim_steps": steps,
                           "judges": "MiniLM probe (the report's) and TF-IDF word/bigram logistic regression",
                           "tfidf_test_accuracy": tfidf.accuracy([r["text"] for r in held], [r["label"] for r in held]),
                           "by_scale": {}}
    rows = []
    for scale in scales:
        entry = {}
        for target in ("positive", "negative"):
            z = model.sample_latents(n, steps=steps, generator=torch.Generator().manual_seed(seed),
                                     condition=target if scale > 0 else None, guidance_scale=scale)
            decoded = model.codec.decode(z)
            entry[target] = {"probe": sum(p == target for p in probe.predict(decoded)) / n,
                             "tfidf": sum(p == target for p in tfidf.predict(decoded)) / n}
            if vocabulary is not None:
                entry[target]["unseen_words"] = unseen_word_share(decoded, vocabulary)
            if texts is not None:
                texts[(scale, target)] = decoded
            rows += [(scale, target, one_line(t)) for t in decoded[:20]]
        out["by_scale"][str(scale)] = entry
    (out_dir / "guided_samples.tsv").write_text(
        "scale\ttarget\tsample\n" + "".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows))
    _guided_plot(out["by_scale"], out_dir / "guided_control.png")
    from diled.editing import load_judge

    judge = load_judge(model_dir) if model_dir is not None else None
    if judge is not None and "positive" in judge.classes:
        out["judged_edit"] = judged_edit(model, probe, judge, [r["text"] for r in held if r["label"] == "negative"][:n],
                                         out_dir)
    if "source" in model.guides:  # a guide of each sentence's source too: the two composed
        out["composed"] = composed_sentiment(model, probe, train, held, out_dir, n=n, steps=steps, seed=seed,
                                             vocabulary=vocabulary)
    return out


COMPOSED_SCALES = (10.0, 10.0)  # sentiment, source: docs/text.md, "Composed conditions"


def composed_sentiment(model, probe, train: list[dict], held: list[dict], out_dir: Path, n: int = 100,
                       steps: int = 50, seed: int = 0, scales: tuple[float, float] = COMPOSED_SCALES,
                       vocabulary: set | None = None) -> dict[str, Any]:
    """Generation toward a sentiment and a source at once (the sentiment guide composed with
    ``model.guides["source"]`` at ``scales``): for each (sentiment, source) pair, ``n`` samples judged by the
    probe (the sentiment) and by a TF-IDF logistic regression of the sources fitted on the training split (the
    source), each the share judged as the target and the share judged as both; beside them, the same judges
    on the real ``held`` sentences of that pair (what guidance aims at) and on samples guided toward the
    sentiment alone (what composing adds); with the training ``vocabulary``, each set's share of made-up words.
    ``composed_samples.tsv``: 20 samples of each pair."""
    from diled.metrics.sentiment import TfidfSentiment
    from diled.metrics.text import unseen_word_share

    sources = list(model.guides["source"].classes)
    judge = TfidfSentiment(sources).fit([r["text"] for r in train], [r["source"] for r in train])

    def rates(texts: list[str], sentiment: str, source: str) -> dict[str, Any]:
        moods, origins, k = probe.predict(texts), judge.predict(texts), max(len(texts), 1)
        return {"n": len(texts), "sentiment": sum(m == sentiment for m in moods) / k,
                "source": sum(o == source for o in origins) / k,
                "both": sum(m == sentiment and o == source for m, o in zip(moods, origins)) / k,
                **({"unseen_words": unseen_word_share(texts, vocabulary)} if vocabulary and texts else {})}

    def sample(condition, scale) -> list[str]:
        return model.codec.decode(model.sample_latents(n, steps=steps, generator=torch.Generator().manual_seed(seed),
                                                       condition=condition, guidance_scale=scale))

    out: dict[str, Any] = {"n_per_pair": n, "scales": {"sentiment": scales[0], "source": scales[1]},
                           "source_judge": "TF-IDF word/bigram logistic regression of the training sentences' sources",
                           "source_judge_test_accuracy": judge.accuracy([r["text"] for r in held],
                                                                        [r["source"] for r in held]), "pairs": {}}
    rows = []
    for sentiment in ("positive", "negative"):
        alone = sample(sentiment, scales[0])
        for source in sources:
            texts = sample([sentiment, source], list(scales))
            real = [r["text"] for r in held if r["label"] == sentiment and r["source"] == source]
            out["pairs"][f"{sentiment} + {source}"] = {"composed": rates(texts, sentiment, source),
                                                       "sentiment_alone": rates(alone, sentiment, source),
                                                       "test_sentences": rates(real, sentiment, source)}
            rows += [(sentiment, source, one_line(t)) for t in texts[:20]]
    (out_dir / "composed_samples.tsv").write_text(
        "sentiment\tsource\tsample\n" + "".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows))
    return out


def judged_edit(model, probe, judge, negatives: list[str], out_dir: Path, accept: float = 0.8,
                min_similarity: float = 2.0) -> dict[str, Any]:
    """``negatives`` edited toward positive by judged editing (``diled.editing.edit_judged`` with the saved
    ``judge``; the knobs as measured on validation), judged by the probe: the share positive, the corpus BLEU to
    the inputs, the share the judge accepted; ``judged_edits.tsv`` holds each edit."""
    import time

    from diled.editing import JUDGED_SETTINGS, edit_judged
    from diled.metrics.text import corpus_bleu

    t0, outputs, accepted, taken = time.perf_counter(), [], [], []
    for chunk in _batches(negatives, 100):
        chosen = edit_judged(model, chunk, "positive", judge.probability, accept=accept, min_similarity=min_similarity)
        outputs, accepted, taken = outputs + chosen.outputs, accepted + chosen.accepted, taken + chosen.settings
    judged = probe.predict(outputs)
    rows = [f"{one_line(a)}\t{one_line(b)}\t{c}\t{d}\n" for a, b, c, d in zip(negatives, outputs, accepted, judged)]
    (out_dir / "judged_edits.tsv").write_text("negative input\tedited toward positive\taccepted by the judge\tprobe\n"
                                              + "".join(rows))
    n = max(len(negatives), 1)
    return {"n": len(negatives), "settings": len(JUDGED_SETTINGS), "accept": accept, "min_similarity": min_similarity,
            "positive": sum(j == "positive" for j in judged) / n, "accepted": sum(accepted) / n,
            "bleu_to_input": corpus_bleu(outputs, negatives) if negatives else float("nan"),
            "setting_taken": {str(JUDGED_SETTINGS[j]): taken.count(j) for j in sorted(set(taken))},
            "seconds": round(time.perf_counter() - t0, 1)}


def _guided_plot(by_scale: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for target, colour in (("positive", "tab:blue"), ("negative", "tab:red")):
        for judge, style in (("probe", "-o"), ("tfidf", "--s")):
            xs = [v[target].get("unseen_words", 0.0) for v in by_scale.values()]
            ys = [v[target][judge] for v in by_scale.values()]
            ax.plot(xs, ys, style, color=colour, label=f"toward {target} ({judge})")
            for x, y, s in zip(xs, ys, by_scale):
                ax.annotate(s, (x, y), fontsize=7)
    ax.set_xlabel("share of made-up words in the samples (lower is better)")
    ax.set_ylabel("share judged as the target")
    ax.set_title("guided generation: control against quality, by scale")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def one_line(text: str) -> str:
    """``text`` as one line of a text or TSV file: tabs and everything ``str.splitlines`` breaks at (a
    byte-level decoder can emit \\r, \\x0b, \\x1c-\\x1e, \\x85, \\u2028) become spaces."""
    return " ".join(text.replace("\t", " ").splitlines())


def sentiment_probe(train_rows: list[dict], n: int = 4000):
    """The flip-rate judge: logistic regression on frozen MiniLM embeddings of up to ``n`` labelled training
    sentences; None without both labels."""
    from diled.metrics.sentiment import SentimentProbe

    labelled = [r for r in train_rows if r["label"] in ("positive", "negative")][:n]
    if {r["label"] for r in labelled} != {"positive", "negative"}:
        return None, labelled
    return SentimentProbe().fit([r["text"] for r in labelled], [r["label"] for r in labelled]), labelled


def label_head_accuracy(model, rows: list[dict]) -> float:
    """The share of ``rows`` (``text``, ``label``) with one of the codec's label-head classes that the head,
    reading the encoder's latent without noise, labels right."""
    head = model.codec.label_head
    known = [r for r in rows if r["label"] in head.classes]
    if not known:
        return float("nan")
    z = torch.cat([model.encode([r["text"] for r in c]) for c in _batches(known, 200)])
    return sum(p == r["label"] for p, r in zip(model.codec.predict_labels(z), known)) / len(known)


def sentiment_arithmetic(model, probe, labelled: list[dict], negatives: list[str],
                         scale: float = 1.0) -> tuple[dict, list[tuple]]:
    """Add the (positive - negative) mean-latent direction of the ``labelled`` training sentences (times
    ``scale``; the report's is 1) to the latents of held-out ``negatives``, decode, and let ``probe`` judge:
    the flip rate and the rows."""
    codec, means = model.codec, {}
    for label in ("positive", "negative"):
        texts = [r["text"] for r in labelled if r["label"] == label]
        means[label] = torch.cat([model.encode(c) for c in _batches(texts, 200)]).mean(0)
    direction = means["positive"] - means["negative"]
    z = torch.cat([model.encode(c) for c in _batches(negatives, 100)])
    base = [s for c in _batches(list(z), 100) for s in codec.decode(torch.stack(c))]
    shifted = [s for c in _batches(list(z + scale * direction), 100) for s in codec.decode(torch.stack(c))]
    base_pred, shifted_pred = probe.predict(base), probe.predict(shifted)
    metrics = {"arithmetic_n": len(negatives),
               "arithmetic_flip_rate": sum(p == "positive" for p in shifted_pred) / len(negatives),
               "arithmetic_positive_rate_without_shift": sum(p == "positive" for p in base_pred) / len(negatives)}
    return metrics, list(zip(negatives, base, shifted, shifted_pred))

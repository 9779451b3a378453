"""Text metrics: reconstruction BLEU, diversity (distinct-n, self-BLEU), novelty and unseen words."""

from __future__ import annotations

import random
import re


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (sacrebleu, default 13a tokenisation), 0-100."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def sentence_bleus(hypotheses: list[str], references: list[str]) -> list[float]:
    """Sentence BLEU (sacrebleu, 0-100) of each hypothesis against its own reference: how much of an input
    an edit of it keeps (``diled.editing.edit_judged``'s similarity for text)."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    return [float(sacrebleu.sentence_bleu(h, [r]).score) for h, r in zip(hypotheses, references)]


def self_bleu(texts: list[str], max_texts: int = 200, seed: int = 0) -> float:
    """Mean sentence BLEU of each text against all the others (Zhu et al. 2018, Texygen); lower is more
    diverse. At most ``max_texts`` texts (a seeded sample) to keep it quadratic but small."""
    import sacrebleu

    texts = [t for t in texts if t.strip()]
    if len(texts) < 2:
        return 0.0
    if len(texts) > max_texts:
        texts = random.Random(seed).sample(texts, max_texts)
    scores = [sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1:]).score for i, t in enumerate(texts)]
    return sum(scores) / len(scores)


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams over the whitespace-tokenised texts."""
    grams = [tuple(words[i:i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def novelty(texts: list[str], training: set[str]) -> float:
    """Share of ``texts`` that are not (case-insensitively) a sentence of the training set."""
    if not texts:
        return 0.0
    return sum(t.strip().lower() not in training for t in texts) / len(texts)


def repeated_ngram_share(texts: list[str], n: int = 3) -> float:
    """Share of ``texts`` in which some whitespace-token n-gram occurs more than once (a looping decoder's
    signature: "new new new new")."""
    if not texts:
        return 0.0

    def repeats(words: list[str]) -> bool:
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        return len(set(grams)) < len(grams)

    return sum(repeats(t.split()) for t in texts) / len(texts)


def words(text: str) -> list[str]:
    """The lower-cased word tokens (runs of letters, digits and underscores) of ``text``."""
    return re.findall(r"\w+", text.lower())


def unseen_word_share(texts: list[str], vocabulary: set[str]) -> float:
    """Share of the word tokens of ``texts`` (``words``) that are not in ``vocabulary`` (e.g. every word of
    the training split): made-up words from a decoder that spells out noise raise it."""
    tokens = [w for t in texts for w in words(t)]
    return sum(w not in vocabulary for w in tokens) / len(tokens) if tokens else 0.0

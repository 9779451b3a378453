"""Metric code on cases with known answers."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from diled.codecs.text import load_decoder_tokenizer, train_bpe
from diled.metrics.distribution import mauve
from diled.metrics.lm import perplexity, sequence_nll
from diled.metrics.text import (corpus_bleu, distinct_n, novelty, repeated_ngram_share, self_bleu, sentence_bleus,
                                unseen_word_share, words)

SENTENCES = ["the film is a quiet triumph", "a dull and lifeless script", "i loved every minute of it",
             "not worth the ticket", "the cast is wonderful and the story moves"]


def test_bleu_of_identical_corpora_is_100_and_of_disjoint_is_0():
    assert corpus_bleu(SENTENCES, SENTENCES) == pytest.approx(100.0)
    assert corpus_bleu(["zz yy xx ww"] * 5, SENTENCES) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="5 hypotheses but 4 references"):
        corpus_bleu(SENTENCES, SENTENCES[:4])


def test_sentence_bleu_scores_each_hypothesis_against_its_own_reference():
    scores = sentence_bleus([SENTENCES[0], "zz yy xx ww", SENTENCES[1]], [SENTENCES[0], SENTENCES[1], SENTENCES[0]])
    assert scores[0] == pytest.approx(100.0) and scores[1] == pytest.approx(0.0) and scores[2] < 100.0
    with pytest.raises(ValueError, match="3 hypotheses but 2 references"):
        sentence_bleus(SENTENCES[:3], SENTENCES[:2])


def test_the_tfidf_judge_gives_probabilities_of_either_label():
    from diled.metrics.sentiment import TfidfSentiment

    texts = ["great flight thanks", "love this crew great", "thanks so much great", "awful delay again",
             "lost my bag awful", "worst delay ever"] * 3
    labels = ["positive"] * 3 + ["negative"] * 3
    judge = TfidfSentiment().fit(texts, labels * 3)
    positive = judge.probability(["great crew thanks", "awful lost delay"], "positive")
    negative = judge.probability(["great crew thanks", "awful lost delay"], "negative")
    assert positive[0] > 0.5 > positive[1]
    assert [p + n for p, n in zip(positive, negative)] == pytest.approx([1.0, 1.0])
    assert judge.probability([], "positive") == []
    with pytest.raises(ValueError, match="unknown label 'neutral'"):
        judge.probability(["fine"], "neutral")


def test_diversity_and_novelty_known_values():
    assert distinct_n(["a b a b"], 1) == 0.5 and distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert self_bleu(["same words here again"] * 4) == pytest.approx(100.0)
    assert novelty(["Seen", "new"], {"seen"}) == 0.5


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = train_bpe(SENTENCES * 20, 300, tmp_path_factory.mktemp("bpe"))
    return load_decoder_tokenizer(str(path))


class ConstantLM(nn.Module):
    """Logits that do not depend on the input: uniform (all zero) or all mass on one token."""

    def __init__(self, vocab: int, favourite: int | None = None):
        super().__init__()
        self.vocab, self.favourite = vocab, favourite

    def forward(self, input_ids, attention_mask):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        if self.favourite is not None:
            logits[..., self.favourite] = 100.0
        return SimpleNamespace(logits=logits)


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(tokenizer):
    vocab = len(tokenizer)
    assert perplexity(ConstantLM(vocab), tokenizer, SENTENCES) == pytest.approx(vocab, rel=1e-5)


def test_perplexity_of_a_certain_model_is_one_and_tokens_are_counted(tokenizer):
    # "" is scored as its closing EOS only: a model certain of EOS has perplexity 1 on it
    eos = tokenizer.eos_token_id
    assert perplexity(ConstantLM(len(tokenizer), favourite=eos), tokenizer, ["", ""]) == pytest.approx(1.0)
    total, count = sequence_nll(ConstantLM(len(tokenizer)), tokenizer, SENTENCES)
    assert count == sum(len(tokenizer(s)["input_ids"]) + 1 for s in SENTENCES)
    assert total == pytest.approx(count * math.log(len(tokenizer)), rel=1e-5)
    with pytest.raises(ValueError, match="empty list"):
        perplexity(ConstantLM(10), tokenizer, [])


def test_mauve_from_the_mauve_text_package_separates_equal_and_shifted_samples():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 16, generator=g), torch.randn(300, 16, generator=g)
    same, shifted = mauve(a, b), mauve(a, b + 1.0)
    assert len(same["per_seed"]) == 3 and same["mean"] == pytest.approx(sum(same["per_seed"]) / 3)
    assert same["mean"] > 0.9 and shifted["mean"] < 0.3
    with pytest.raises(ValueError, match="n >= 10"):
        mauve(a[:5], b)


def test_unseen_word_share():
    vocabulary = {"the", "film", "is", "good"}
    assert unseen_word_share(["The film is good."], vocabulary) == 0.0
    assert unseen_word_share(["The flim is goood", ""], vocabulary) == pytest.approx(0.5)
    assert words("Don't, @user #tag") == ["don", "t", "user", "tag"]


def test_repeated_ngram_share_counts_texts_that_loop():
    texts = ["i am not a new new new new plane", "a clear and simple sentence", "the cat the cat the cat", "hi"]
    assert repeated_ngram_share(texts, 3) == 0.5  # the first ("new new new" twice) and the third
    assert repeated_ngram_share(texts, 2) == 0.5 and repeated_ngram_share([], 3) == 0.0
    assert repeated_ngram_share(["a b a b"], 2) == 1.0 and repeated_ngram_share(["a b a b"], 3) == 0.0

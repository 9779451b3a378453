"""Text: sentences (the offline corpus of Rotten Tomatoes snippets and tweets; a user's .txt/.csv/.jsonl/
.parquet/.arrow file or saved ``datasets`` folder), the tokenizer trained before training, and the report
a finished run writes (reconstructions on two test sets, samples, interpolations, latent arithmetic,
metrics, plots)."""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from diled_platform.options import ConfigError, DataOptions, positive

if TYPE_CHECKING:
    from diled_platform.config import JobConfig
from diled_platform.datatypes.base import DataType, Metric, driver_dataset, label_indices
from diled_platform.datatypes._reports import loss_plot, write_eval
from diled_platform.datatypes._text_sentiment import (_batches, _can_guide, guided_sentiment, label_head_accuracy,
                                                      one_line, sentiment_arithmetic, sentiment_probe)

log = logging.getLogger("diled")


@dataclass
class TextOptions(DataOptions):
    type: str = "text"
    # text_corpus: the offline corpus (docs/design.md section 6); text_files: a user's .txt/.csv/.jsonl/.parquet/
    # .arrow file or saved datasets folder, cleaned like the corpus
    source: Literal["text_corpus", "text_files"] = "text_corpus"
    column: str = "text"                        # text_files: the column that holds one sentence
    label_column: str | None = None             # text_files: an optional label column (e.g. sentiment)
    min_words: int = 3                          # length filter, in words
    max_words: int = 30
    max_examples: int | None = None             # keep at most this many training sentences
    path_sources: ClassVar[tuple[str, ...]] = ("text_files",)
    codec_args_taken: ClassVar[tuple[str, ...]] = ("vocab_size",)  # the trained BPE's size (prepare_tokenizer)

    def validate(self):
        super().validate()
        positive(self, "min_words", "max_words")
        if self.min_words > self.max_words:
            raise ConfigError(f"data.min_words ({self.min_words}) > data.max_words ({self.max_words})")


class TextData(DataType):
    name, Options, preset, harness_steps, judges_text = "text", TextOptions, "text-cpu", 250, True
    metrics = (
        Metric("reconstruction_bleu", "rec. BLEU", True),
        Metric("reconstruction_token_accuracy", "token acc.", True),
        Metric("reconstruction_exact_match", "exact match", True),
        Metric("second_test_reconstruction_bleu", "rec. BLEU, 2nd test set", True),
        Metric("generation_perplexity", "gen. PPL (ref. LM)", False),
        Metric("distinct_2", "distinct-2", True),
        Metric("self_bleu", "self-BLEU", False),
        Metric("samples_with_repeated_3gram", "samples with a repeated 3-gram", False),
        Metric("mauve", "MAUVE", True),
        Metric("interpolation_perplexity", "interp. PPL", False),
        Metric("arithmetic_flip_rate", "flip rate", True),
    )
    outputs = ("samples.txt", "reconstructions.tsv", "reconstructions_second_test.tsv", "interpolations.txt",
               "arithmetic.tsv", "eval.json", "loss_curves.png", "latents_pca.png")

    # ------------------------------------------------------------------ data
    def load_splits(self):
        """Seeded train / val / test Arrow tables (columns text, label, source); ``self.stats`` holds the
        cleaning statistics."""
        from diled.data.text import default_corpus, read_user_texts, split_table

        opts = self.options
        if opts.source == "text_corpus":
            table, self.stats = default_corpus(opts.min_words, opts.max_words)
        else:
            try:
                table, self.stats = read_user_texts(opts.path, column=opts.column, label_column=opts.label_column,
                                                    min_words=opts.min_words, max_words=opts.max_words)
            except (FileNotFoundError, ValueError) as e:
                raise ConfigError(f"data.path: {e}") from None
        if table.num_rows == 0:
            raise ConfigError(f"no usable text in {opts.path or opts.source} ({self.stats.summary()})")
        splits = split_table(table, opts.val_fraction, opts.test_fraction, opts.seed)
        if opts.max_examples:
            splits["train"] = splits["train"].slice(0, opts.max_examples)
        return splits

    def summary(self) -> str:
        self.splits  # noqa: B018 -- reading the splits sets self.stats, the cleaning statistics
        return f"{self.stats.summary()}; " + super().summary()

    def training_examples(self) -> list[str]:
        return self.splits["train"].column("text").to_pylist()

    def training_labels(self) -> tuple[list[str], list[int]]:
        """The sentiment labels of the training split (Rotten Tomatoes fresh/rotten as positive/negative,
        the tweets' positive/negative/neutral, a user's ``label_column``); ValueError without any."""
        classes, indices = label_indices(self.splits["train"].column("label").to_pylist())
        if not classes:
            raise ValueError("no training sentence has a label (text_files: set data.label_column); set prior_stage.guide_steps=0")
        return classes, indices

    def further_labels(self) -> dict[str, tuple[list[str], list[int]]]:  # the corpus's Rotten Tomatoes and tweets
        classes, indices = label_indices(self.splits["train"].column("source").to_pylist())
        return {"source": (classes, indices)} if len(classes) > 1 else {}

    def sample_quality(self, model, z, seed: int = 0) -> float:
        """MAUVE (``mauve-text``, MiniLM mean-pooled embeddings, as the report) of the latents ``z`` decoded the
        codec's default way against as many validation sentences (the report scores against the test split)."""
        from diled.metrics.distribution import mauve_of_texts
        from diled.metrics.sentiment import SentimentProbe

        refs = self.splits["val"].column("text").to_pylist()[:len(z)]
        if getattr(self, "_quality_embed", None) is None:  # MiniLM, loaded once for all candidates
            self._quality_embed = SentimentProbe().embed
        texts = [t for i in range(0, len(z), 100) for t in model.codec.decode(z[i:i + 100])]
        score = mauve_of_texts(self._quality_embed, texts, refs, None)["mauve"]
        if score is None:
            raise ValueError(f"sample_quality needs at least 10 samples and validation sentences, got {len(texts)} "
                             f"and {len(refs)}; set prior_stage.temperatures=[]")
        return score

    def datasets(self):  # x: the texts; label: what a codec's label head trains on ("" unlabelled)
        return {name: driver_dataset(self.splits[name].select(["text", "label"]).rename_columns(["x", "label"]))
                for name in ("train", "val")}

    def prepare(self, cfg: JobConfig, run_dir: Path) -> JobConfig:
        """The tokenizer (``prepare_tokenizer``) trained on this training split, kept in ``run_dir``; a
        ConfigError if ``codec_args.label_head`` names classes that no training sentence has."""
        args = cfg.model.codec_args
        head = args.get("label_head")
        classes = head.get("classes") if isinstance(head, dict) else None
        if classes and not set(classes) & {str(v) for v in self.splits["train"].column("label").to_pylist()}:
            raise ConfigError(f"model.codec_args.label_head.classes={classes}: no training sentence has one of "
                              f"these labels (text_files: set data.label_column), so the head would never train")
        if args.get("tokenizer") not in (None, "train", GPT2_TIKTOKEN):
            return cfg  # a tokenizer folder already: prepared
        return prepare_tokenizer(cfg, run_dir, self.splits["train"].column("text").to_pylist())

    # ------------------------------------------------------------------ evaluation
    def tools(self, directory: Path, full: bool = False, lm_steps: int = 800, **options) -> dict[str, Any]:
        """What the report judges with, trained once: the sentiment probe (logistic regression on frozen
        MiniLM embeddings of up to 4,000 labelled training sentences; None without both labels) and, with
        ``full``, a reference LM trained on the training split (kept in ``directory/reference_lm``)."""
        probe, labelled = sentiment_probe(self.splits["train"].to_pylist())
        tools: dict[str, Any] = {"probe": probe, "labelled": labelled}
        if full:
            from diled.metrics.lm import INFO_NAME, ReferenceLM

            lm_dir = Path(directory) / "reference_lm"
            if (lm_dir / INFO_NAME).is_file():
                tools["lm"] = ReferenceLM.load(lm_dir)
            else:
                tools["lm"] = ReferenceLM.train(self.splits["train"].column("text").to_pylist(),
                                                self.splits["val"].column("text").to_pylist(), lm_dir,
                                                steps=lm_steps, log=log.info)
        return tools

    @torch.no_grad()
    def report(self, model_dir: Path, out_dir: Path, cfg: JobConfig, *, seed: int = 0, tools: dict | None = None,
               no_repeat_ngram: int = 3) -> dict[str, Any]:
        """Evaluate a trained text model on the held-out split and write the run's text outputs. ``samples.txt`` is
        decoded the model's default way with no repeated token ``no_repeat_ngram``-gram (0: no blocking); the
        same latents without the blocking, and plain greedy, are scored too. With a reference LM in ``tools`` (the harness), also the
        samples' and interpolations' perplexity under it. MAUVE (``mauve-text``, the mean over 3 k-means
        seeds) compares the samples decoded the model's default way (Serve's: the codec's saved ``decoding``,
        else greedy) with ``report_samples`` test sentences on MiniLM mean-pooled embeddings, beside the
        ceiling: as many validation sentences against the same test sentences. Reconstructions are greedy
        (and, beside them, decoded the default way where that is not greedy)."""
        from diled import DiLED
        from diled.data.text import GUARDIAN_HEADLINES
        from diled.metrics.distribution import mauve_of_texts
        from diled.metrics.text import distinct_n, novelty, repeated_ngram_share, self_bleu, unseen_word_share, words

        n_eval, n_samples = cfg.run.report_examples or 300, cfg.run.report_samples or 500
        ddim_steps = cfg.run.report_ddim_steps
        tools = self.tools(out_dir) if tools is None else tools
        torch.manual_seed(seed)
        model = DiLED.from_pretrained(model_dir)
        test = self.splits["test"].to_pylist()
        train = self.splits["train"].to_pylist()
        held = test[:n_eval]
        refs = [r["text"] for r in held]
        metrics: dict[str, Any] = {"n_test_sentences": len(held)}

        recons, rec_metrics = reconstruct_texts(model, refs, strategy="greedy")
        metrics.update(rec_metrics)
        default_decoding = getattr(model.codec, "decoding", None) or {}
        if default_decoding:  # what Serve returns by default, e.g. beam search
            recons_default, rec_default = reconstruct_texts(model, refs, floor=False)
            metrics["reconstruction_bleu_default_decoding"] = rec_default["reconstruction_bleu"]
        # the same on a second test set that the training corpus never saw: another source and domain
        second, second_recons, second_metrics = second_test_set(model, n_eval, seed,
                                                                exclude={r["text"].lower() for r in train})
        metrics.update({"second_test_set": GUARDIAN_HEADLINES, "second_test_sentences": len(second),
                        **{f"second_test_{k}": v for k, v in second_metrics.items()}})
        (out_dir / "reconstructions_second_test.tsv").write_text(
            "input\toutput\n" + "".join(f"{one_line(a)}\t{one_line(b)}\n" for a, b in zip(second, second_recons)))

        # samples are decoded the default way with no repeated token 3-gram; the same latents decoded the
        # default way alone (Serve's) show what the blocking changes (a decoder trained briefly loops: "new new
        # new new"), and plain greedy what a saved default decoding changes
        samples, served, greedy = generate_texts(model, n_samples, ddim_steps, seed, decodings=(
            {"no_repeat_ngram": no_repeat_ngram}, {"no_repeat_ngram": 0}, {"strategy": "greedy", "no_repeat_ngram": 0}))
        training = {r["text"].lower() for r in train}
        described = ", ".join(f"{k} {v}" for k, v in default_decoding.items()) or "greedy"
        metrics.update({"samples": len(samples), "ddim_steps": ddim_steps, "prior_temperature": model.prior_temperature,
                        "sampling_eta": model.sampling_eta, "default_decoding": described,
                        "sample_decoding": f"{described}, no repeated token {no_repeat_ngram}-gram" if no_repeat_ngram else described,
                        "samples_with_repeated_3gram": repeated_ngram_share(samples, 3),
                        "samples_with_repeated_3gram_default_decoding": repeated_ngram_share(served, 3),
                        "distinct_1": distinct_n(samples, 1), "distinct_2": distinct_n(samples, 2),
                        "self_bleu": self_bleu(samples), "novelty": novelty(samples, training),
                        "novelty_default_decoding": novelty(served, training),
                        "empty_samples": sum(not s.strip() for s in samples)})
        vocabulary = {w for r in train for w in words(r["text"])}
        test_refs = [r["text"] for r in test[:n_samples]]
        unseen_test = unseen_word_share(test_refs, vocabulary)
        metrics.update({"unseen_words_samples": unseen_word_share(served, vocabulary),
                        "unseen_words_samples_greedy": unseen_word_share(greedy, vocabulary),
                        "unseen_words_test": unseen_test,
                        "unseen_words_reconstructions": unseen_word_share(recons, vocabulary)})
        if default_decoding:
            metrics["unseen_words_reconstructions_default_decoding"] = unseen_word_share(recons_default, vocabulary)
        metrics["unseen_words_samples_vs_test"] = metrics["unseen_words_samples"] / max(unseen_test, 1e-9)
        pairs = [(held[2 * i]["text"], held[2 * i + 1]["text"]) for i in range(min(5, len(held) // 2))]
        paths = interpolation_paths(model, pairs, steps=ddim_steps)
        write_text_outputs(out_dir, refs, recons, samples, pairs, paths)

        probe, labelled = tools["probe"], tools["labelled"]
        from diled.metrics.sentiment import SentimentProbe  # its embedder, when there are no labels to fit

        metrics.update(mauve_of_texts((probe or SentimentProbe()).embed, served, test_refs,
                                      self.splits["val"].column("text").to_pylist()[:n_samples]))
        if probe is not None:
            held_pn = [r for r in test if r["label"] in ("positive", "negative")][:n_eval]
            metrics["sentiment_classifier"] = ("logistic regression on frozen all-MiniLM-L6-v2 mean-pooled "
                                               f"embeddings, trained on {len(labelled)} training sentences")
            metrics["sentiment_classifier_test_accuracy"] = probe.accuracy([r["text"] for r in held_pn],
                                                                           [r["label"] for r in held_pn])
            negatives = [r["text"] for r in test if r["label"] == "negative"][:min(200, n_eval)]
            arith, rows = sentiment_arithmetic(model, probe, labelled, negatives)
            metrics.update(arith)
            if getattr(model.codec, "label_head", None) is not None:
                metrics["label_head_test_accuracy"] = label_head_accuracy(model, held_pn)
            (out_dir / "arithmetic.tsv").write_text("negative input\treconstruction\twith +(positive - negative)\tjudged\n"
                                                    + "".join("\t".join(row) + "\n" for row in rows))

        if probe is not None and _can_guide(model, ("positive", "negative")):
            metrics["guided"] = guided_sentiment(model, probe, train, held_pn, out_dir, n=cfg.run.report_guided,
                                                 steps=ddim_steps, seed=seed, vocabulary=vocabulary, model_dir=model_dir)

        if "lm" in tools:  # the harness: generation judged by a reference LM
            nonempty = [s for s in samples if s.strip()] or [""]
            inner = [s for p in paths for s in p[1:-1]]
            metrics.update({"generation_perplexity": tools["lm"].perplexity(nonempty),
                            "generation_perplexity_default_decoding": tools["lm"].perplexity([s for s in served if s.strip()] or [""]),
                            "interpolation_perplexity": tools["lm"].perplexity(inner)})

        # the representation: a 2-D projection of the test latents, coloured by sentiment
        z_test = torch.cat([model.encode([r["text"] for r in c]) for c in _batches(test[:2000], 200)])
        _latent_plot(z_test, [r["label"] for r in test[:2000]], out_dir / "latents_pca.png")
        loss_plot(out_dir / "tensorboard", out_dir / "loss_curves.png")
        write_eval(out_dir, metrics)
        return metrics

    def reference(self, tools: dict | None = None, n_eval: int = 300) -> dict[str, Any]:
        """The same metrics on real held-out sentences (validation against test), where they apply."""
        from diled.metrics.distribution import mauve_of_texts
        from diled.metrics.text import distinct_n, self_bleu

        refs = self.splits["test"].column("text").to_pylist()[:n_eval]
        other = self.splits["val"].column("text").to_pylist()[:n_eval]
        out = {"distinct_2": distinct_n(other, 2), "self_bleu": self_bleu(other)}
        if tools and "lm" in tools:
            out["generation_perplexity"] = tools["lm"].perplexity(refs)
        if tools and tools.get("probe") is not None:
            refs_m = self.splits["test"].column("text").to_pylist()[:500]
            other_m = self.splits["val"].column("text").to_pylist()[:500]
            out["mauve"] = mauve_of_texts(tools["probe"].embed, other_m, refs_m, None)["mauve"]
        return out

    def describe(self, tools: dict | None = None) -> dict[str, Any]:
        out = {"tokens_per_sentence": round(self.tokens_per_sentence, 2) if hasattr(self, "tokens_per_sentence") else None,
               "sample_decoding": "greedy, no repeated token 3-gram (the plain greedy scores beside them)"}
        if tools and "lm" in tools:
            out.update({"reference_lm": tools["lm"].info,
                        "mauve": "mauve-text 0.4 with its defaults on all-MiniLM-L6-v2 mean-pooled sentence "
                                 "embeddings, mean over 3 k-means seeds"})
        if tools and tools.get("probe") is not None:
            out["sentiment_classifier"] = (f"logistic regression on frozen all-MiniLM-L6-v2 embeddings of "
                                           f"{len(tools['labelled'])} training sentences")
        return out

    def vae_options(self, cfg: JobConfig) -> dict[str, Any]:
        """Optimus' KL weight 1 on the summed token NLL, free bits 0.5 nats per dimension; our reconstruction
        term is the NLL per token, so the same objective per token has beta = 1 / tokens per sentence."""
        from diled.text_tokenizers import load_decoder_tokenizer

        tok = load_decoder_tokenizer(cfg.model.codec_args["tokenizer"])
        texts = self.splits["train"].column("text").to_pylist()[:5000]
        self.tokens_per_sentence = statistics.fmean(len(tok(t)["input_ids"]) + 1 for t in texts)
        return {"beta": round(1.0 / self.tokens_per_sentence, 4), "anneal_steps": max(1, cfg.optim.max_steps // 2),
                "free_bits": 0.5}

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
    (``decoder_kind: bert``) with no ``tokenizer`` keeps its checkpoint's WordPiece, a pretrained causal LM
    (``decoder_kind: causal_lm``) its own: the config is returned unchanged; with one, a bert decoder's
    vocabulary is transplanted (``diled.codecs.text``)."""
    from diled.text_tokenizers import gpt2_tokenizer_from_tiktoken, train_bpe

    args = dict(cfg.model.codec_args)
    if args.get("decoder_kind") in ("bert", "causal_lm") and "tokenizer" not in args:
        return cfg  # the checkpoint's own vocabulary (a bert decoder's WordPiece, a pretrained causal LM's)
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
    return type(cfg).from_dict(data)


def reconstruct_texts(model, refs: list[str], batch_size: int = 100, floor: bool = True,
                      **decoding) -> tuple[list[str], dict[str, float]]:
    """decode(encode(x)) of ``refs`` (``decoding``: the codec's decode options; none: its default): the
    outputs, and BLEU / teacher-forced token accuracy / exact match.

    With ``floor``, the same two scores with each sentence given the previous sentence's latent
    (``..._other_latent``): the floor to read them against, what the decoder's language model and the
    corpus' shared words (handles, "the", "movie") score with no information about this sentence."""
    from diled.metrics.text import corpus_bleu

    codec = model.codec
    batches = [model.prepare_batch(codec.collate(chunk)) for chunk in _batches(refs, batch_size)]
    latents = [codec.encode(batch) for batch in batches]
    others = torch.cat(latents).roll(1, dims=0).split([len(z) for z in latents])
    floor = floor and len(refs) > 1  # with one sentence there is no other latent
    recons, recons_other, accs, accs_other = [], [], [], []
    for batch, z, z_other in zip(batches, latents, others):
        recons += codec.decode(z, **decoding)
        accs += codec.token_accuracy(batch, z).tolist()
        if floor:
            recons_other += codec.decode(z_other, **decoding)
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
    recons, metrics = reconstruct_texts(model, texts, strategy="greedy")
    return texts, recons, metrics


def generate_texts(model, n: int, steps: int, seed: int, batch_size: int = 100,
                   decodings: tuple[dict, ...] = ({},)) -> list[list[str]]:
    """``n`` samples: z1 from the prior (DDIM, ``steps``, the model's temperature and eta), seeded, each latent
    decoded once per entry of ``decodings`` (the codec's decode options over its default, e.g.
    ``{"no_repeat_ngram": 3}``: no token 3-gram repeated, Hugging Face's ``no_repeat_ngram_size``). One list
    of texts per entry, the same latents in all."""
    gen, samples = torch.Generator().manual_seed(seed), [[] for _ in decodings]
    for k in [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else []):
        z = model.sample_latents(k, steps=steps, generator=gen)
        for out, options in zip(samples, decodings):
            out += model.codec.decode(z, **options)
    return samples


def interpolation_paths(model, pairs: list[tuple[str, str]], num: int = 5, steps: int = 50) -> list[list[str]]:
    """Decoded points from a to b for each pair (DiLED: slerp between DDIM-inverted codes)."""
    return [model.interpolate(a, b, num=num, steps=steps) for a, b in pairs]


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

"""What the benchmarks share: the repository on sys.path, the text models they time, real batches from
the offline corpus, and alternating A/B timing with medians."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "platform")]
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# the text-cpu preset's architecture as benchmarked (before the preset kept 3 encoder layers and 2 decoder layers), and a
# scaled-up one (GPT-2-small-like decoder, paper-sized prior)
TEXT_SIZES = {
    "text-cpu": {"decoder": {"n_layer": 4, "n_embd": 256, "n_head": 4}, "latent_dim": 64,
                 "prior": {"hidden": 512, "depth": 6, "time_dim": 128}, "encoder_trainable_layers": 2},
    "scaled": {"decoder": {"n_layer": 12, "n_embd": 768, "n_head": 12}, "latent_dim": 128,
               "prior": {"hidden": 2048, "depth": 20, "time_dim": 128}, "encoder_trainable_layers": 6},
}


def number_pair(names: str) -> Callable[[str], tuple[float, float]]:
    """An argparse ``type`` for two numbers written ``a,b``; ``names`` ("sentiment,source") is what the error
    says is expected."""
    import argparse

    def parse(text: str) -> tuple[float, float]:
        try:
            a, b = (float(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected '{names}' (two numbers), got {text!r}") from None
        return a, b

    return parse


def corpus_texts(n: int) -> list[str]:
    from diled.data.text import default_corpus

    return default_corpus()[0].column("text").to_pylist()[:n]


def length_bucket(n: int, pool: int = 5000) -> list[str]:
    """``n`` corpus sentences of similar length from the middle of the first ``pool`` sorted by length: one
    length bucket, as the trainer's batches are."""
    texts = sorted(corpus_texts(pool), key=len)
    return texts[len(texts) // 2 - n // 2:][:n]


def optimizer_step(model, opt, batch, bf16: bool = False) -> None:
    """One training step of a DiLED model on a prepared batch (bf16: under CPU autocast)."""
    import contextlib

    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        out = model(batch)
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    opt.step()


def text_tokenizer(directory: Path, vocab_size: int = 8000, n_texts: int = 5000) -> Path:
    """A BPE trained on the first ``n_texts`` corpus sentences (what the CPU preset trains on its split)."""
    from diled.text_tokenizers import train_bpe

    path = Path(directory) / f"bpe{vocab_size}"
    return path if path.is_dir() else train_bpe(corpus_texts(n_texts), vocab_size, path)


def text_model(size: str, tokenizer: Path, objective: str = "diled", seed: int = 0, w: float = 1.0):
    """An untrained DiLED with the text codec at ``size`` (see TEXT_SIZES); weights depend only on the seed,
    so two objectives built with one seed start from the same weights."""
    import torch
    from diled import DiLED, LatentDiffusion, MLPSkipNet
    from diled.codecs.text import TextCodec

    spec = TEXT_SIZES[size]
    torch.manual_seed(seed)
    codec = TextCodec(latent_dim=spec["latent_dim"], tokenizer=str(tokenizer), max_length=40,
                      encoder_trainable_layers=spec["encoder_trainable_layers"], decoder_trainable="all",
                      decoder_config={**spec["decoder"], "n_positions": 64, "resid_pdrop": 0.0,
                                      "embd_pdrop": 0.0, "attn_pdrop": 0.0})
    prior = MLPSkipNet(spec["latent_dim"], **spec["prior"])
    return DiLED(codec, prior, LatentDiffusion("constant", 1000), w=w, objective=objective)


def n_trainable(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def alternate(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run the functions in turn (A, B, C, A, B, C, ...) ``repeats`` times after ``warmup`` untimed rounds;
    seconds per call for each name. Alternating spreads the machine's drift over all of them."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    """``median (min-max)`` in milliseconds."""
    return f"{median(xs) * 1e3:.1f} ({min(xs) * 1e3:.1f}-{max(xs) * 1e3:.1f})"


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)

"""Perplexity under a causal LM, and the reference LM that scores generated text: a small GPT-2 trained
once on the training split with its own BPE, saved, and reported with its own held-out perplexity."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

INFO_NAME = "reference_lm.json"


def _sequences(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """``[EOS] + ids + [EOS]`` per text (EOS doubles as BOS, GPT-2's convention), ids cut at max_length."""
    eos = tokenizer.eos_token_id
    return [[eos] + tokenizer(t)["input_ids"][:max_length] + [eos] for t in texts]


@torch.no_grad()
def sequence_nll(lm: nn.Module, tokenizer, texts: list[str], max_length: int = 62,
                 batch_size: int = 64) -> tuple[float, int]:
    """Summed next-token NLL (nats) of every text's tokens and closing EOS, and the number of tokens
    scored. ``lm(input_ids=, attention_mask=)`` must return an object with ``logits`` [N x L x V]."""
    total, count = 0.0, 0
    seqs = _sequences(tokenizer, texts, max_length)
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i:i + batch_size]
        length = max(map(len, chunk))
        ids = torch.full((len(chunk), length), tokenizer.eos_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, s in enumerate(chunk):
            ids[j, :len(s)] = torch.tensor(s)
            mask[j, :len(s)] = 1
        logits = lm(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        m = mask[:, 1:].float()
        total += float((nll * m).sum())
        count += int(m.sum())
    return total, count


def perplexity(lm: nn.Module, tokenizer, texts: list[str], max_length: int = 62) -> float:
    """exp(mean NLL per token) over all ``texts`` (tokens plus each text's EOS)."""
    if not texts:
        raise ValueError("perplexity of an empty list of texts")
    total, count = sequence_nll(lm, tokenizer, texts, max_length)
    return math.exp(total / count)


class ReferenceLM:
    """A GPT-2-architecture LM that only scores text. ``ReferenceLM.train(...)`` or ``ReferenceLM.load(dir)``,
    then ``perplexity(texts)``. ``info`` holds its size, training budget and held-out perplexity."""

    def __init__(self, model: nn.Module, tokenizer, info: dict):
        self.model, self.tokenizer, self.info = model.eval(), tokenizer, info

    def perplexity(self, texts: list[str]) -> float:
        return perplexity(self.model, self.tokenizer, texts)

    @classmethod
    def load(cls, directory: str | Path) -> "ReferenceLM":
        from transformers import GPT2LMHeadModel

        from diled.text_tokenizers import load_decoder_tokenizer

        directory = Path(directory)
        if not (directory / INFO_NAME).is_file():
            raise FileNotFoundError(f"{directory} holds no reference LM ({INFO_NAME} missing)")
        return cls(GPT2LMHeadModel.from_pretrained(directory / "model"), load_decoder_tokenizer(str(directory / "tokenizer")),
                   json.loads((directory / INFO_NAME).read_text()))

    @classmethod
    def train(cls, texts: list[str], val_texts: list[str], directory: str | Path, vocab_size: int = 8000,
              n_layer: int = 4, n_embd: int = 256, n_head: int = 4, steps: int = 1500, batch_size: int = 32,
              lr: float = 1e-3, seed: int = 0, log: Callable[[str], None] = print) -> "ReferenceLM":
        """Train on ``texts`` (a BPE of its own, then the LM), report perplexity on ``val_texts``, save."""
        from transformers import GPT2Config, GPT2LMHeadModel

        from diled.text_tokenizers import load_decoder_tokenizer, train_bpe

        directory = Path(directory)
        t0 = time.perf_counter()
        tokenizer = load_decoder_tokenizer(str(train_bpe(texts, vocab_size, directory / "tokenizer")))
        torch.manual_seed(seed)
        config = GPT2Config(vocab_size=len(tokenizer), n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                            n_positions=64, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
        model = GPT2LMHeadModel(config)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, fused=True)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
        rng = random.Random(seed)
        model.train()
        for step in range(1, steps + 1):
            seqs = _sequences(tokenizer, rng.sample(texts, batch_size), 62)
            length = max(map(len, seqs))
            ids = torch.full((batch_size, length), tokenizer.eos_token_id, dtype=torch.long)
            labels = torch.full_like(ids, -100)
            for j, s in enumerate(seqs):
                ids[j, :len(s)] = labels[j, :len(s)] = torch.tensor(s)
            loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % max(1, steps // 5) == 0:
                log(f"reference LM step {step}/{steps}  loss {loss.item():.3f}")
        model.eval()
        n_params = sum(p.numel() for p in model.parameters())
        info = {"architecture": f"GPT-2, {n_layer} layers x {n_embd}, {n_head} heads", "parameters": n_params,
                "vocab_size": len(tokenizer), "train_sentences": len(texts), "steps": steps,
                "batch_size": batch_size, "seconds": round(time.perf_counter() - t0),
                "val_sentences": len(val_texts)}
        lm = cls(model, tokenizer, info)
        info["val_perplexity"] = lm.perplexity(val_texts)
        model.save_pretrained(directory / "model")
        (directory / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
        log(f"reference LM: {n_params / 1e6:.1f} M parameters, held-out perplexity {info['val_perplexity']:.1f}")
        return lm

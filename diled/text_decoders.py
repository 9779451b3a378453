"""The text codec's decoder builders and helpers: causal LMs built from scratch or found by their blocks,
BERT checkpoints run as causal decoders (with a transplanted vocabulary), the read-only KV cache that
holds the latent memory in a teacher-forced pass, and top-k / top-p sampling. ``diled.codecs.text`` uses
them; they live here so that the codec's file holds the codec."""

from __future__ import annotations

import torch
from torch import nn

_READ_ONLY_MEMORY = None


def _read_only_memory_class():
    """``DynamicCache`` whose ``update`` leaves the stored latent memory as it is and returns it followed by
    the new keys/values: a teacher-forced pass needs nothing stored, and a block recomputed by activation
    checkpointing must see the same keys as the first pass (a growing cache would give it memory + the
    first pass's keys + its own). Built on first use: transformers is imported lazily."""
    global _READ_ONLY_MEMORY
    if _READ_ONLY_MEMORY is None:
        from transformers import DynamicCache

        class _ReadOnlyMemory(DynamicCache):
            frozen = False

            def update(self, key_states, value_states, layer_idx, *args, **kwargs):
                if not self.frozen:  # filling the memory
                    return super().update(key_states, value_states, layer_idx, *args, **kwargs)
                layer = self.layers[layer_idx]
                return (torch.cat([layer.keys, key_states], dim=-2), torch.cat([layer.values, value_states], dim=-2))

        _READ_ONLY_MEMORY = _ReadOnlyMemory
    return _READ_ONLY_MEMORY


@torch.no_grad()
def transplant_vocabulary(decoder, wordpiece, tokenizer) -> int:
    """Give a BERT-family LM ``decoder`` the vocabulary of ``tokenizer``: its input (and tied output)
    embeddings get one row per new token, the mean of the old embeddings of the ``wordpiece`` pieces of the
    token's lower-cased text (the end-of-text token takes [SEP]'s; a token with no known piece, [UNK]'s);
    the output bias starts at zero. Returns how many tokens had no known piece."""
    old = decoder.get_input_embeddings().weight
    if hasattr(old, "ds_id"):
        raise NotImplementedError("a transplanted decoder vocabulary is not built under DeepSpeed ZeRO-3 "
                                  "(partitioned embeddings); use zero2, or the checkpoint's own tokenizer")
    old = old.detach().clone()
    rows, unknown = [], 0
    for i in range(len(tokenizer)):
        if i == tokenizer.eos_token_id:
            rows.append(old[wordpiece.sep_token_id])
            continue
        text = tokenizer.decode([i]).strip().lower()
        pieces = [j for j in wordpiece(text, add_special_tokens=False)["input_ids"] if j != wordpiece.unk_token_id]
        unknown += not pieces
        rows.append(old[pieces].mean(0) if pieces else old[wordpiece.unk_token_id])
    decoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    decoder.get_input_embeddings().weight.copy_(torch.stack(rows))
    decoder.get_output_embeddings().bias.zero_()
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        setattr(decoder.config, name, tokenizer.eos_token_id)
    return unknown


def causal_blocks(decoder) -> nn.ModuleList:
    """A causal LM's repeated blocks: the ModuleList of ``num_hidden_layers`` modules in its base model."""
    base, n = decoder.base_model, decoder.config.num_hidden_layers
    lists = [m for m in base.children() if isinstance(m, nn.ModuleList) and len(m) == n]
    if len(lists) != 1:
        raise ValueError(f"cannot find the {n} blocks of {type(decoder).__name__}: its base model has "
                         f"{len(lists)} ModuleLists of that length")
    return lists[0]


def build_causal_decoder(kind: str, sizes: dict, tokenizer):
    """A causal LM built from scratch (random weights) on ``tokenizer``: GPT-2 (``kind`` gpt2, ``sizes`` in
    GPT-2's names) or any architecture by ``sizes["model_type"]`` (``kind`` causal_lm). ``vocab_size``
    defaults to the tokenizer's (it may be set larger, e.g. a multiple of 64 for speed). Built with
    ``_from_config``: under DeepSpeed ZeRO-3 (HfDeepSpeedConfig alive) partitioned and initialised layer by
    layer, never whole on one worker."""
    from transformers import AutoConfig, AutoModelForCausalLM

    sizes = dict(sizes)
    arch = "gpt2" if kind == "gpt2" else sizes.pop("model_type")
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.eos_token_id}
    try:
        config = AutoConfig.for_model(arch, **{"vocab_size": len(tokenizer), **special, **sizes})
    except ValueError as e:
        raise ValueError(f"decoder_config: model_type {arch!r}: {e}") from None
    return AutoModelForCausalLM.from_config(config)


def build_bert_decoder(path: str, overrides: dict, layers: int = -1, pretrained: bool = True):
    """A BERT-family checkpoint as a causal LM (``BertLMHeadModel``, ``is_decoder``): its first ``layers``
    layers (-1: all), the checkpoint's weights (or, ``pretrained`` False, only its shape), ``overrides``
    applied to its config. The LM head's transform is new when the checkpoint has none (a plain BertModel,
    as the MiniLM); its output matrix is the input embedding matrix (tied)."""
    from transformers import AutoConfig, BertLMHeadModel

    config = AutoConfig.from_pretrained(path, is_decoder=True, add_cross_attention=False, **overrides)
    if config.model_type != "bert":
        raise ValueError(f"decoder_kind bert needs a BERT-architecture checkpoint; {path} is {config.model_type!r}")
    if layers != -1:
        if not 1 <= layers <= config.num_hidden_layers:
            raise ValueError(f"decoder_layers must be -1 or in 1..{config.num_hidden_layers} (the checkpoint's "
                             f"depth), got {layers}")
        config.num_hidden_layers = layers  # from_pretrained then loads the first `layers` layers
    if not pretrained:
        return BertLMHeadModel._from_config(config)
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the new LM head and the dropped layers are expected, not news
    try:
        return BertLMHeadModel.from_pretrained(path, config=config)
    finally:
        hf_logging.set_verbosity(level)


def _sample(logits: torch.Tensor, top_k: int, top_p: float, generator) -> torch.Tensor:
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1:
        sorted_logits, idx = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token once the mass before it already exceeds top_p (the first token always stays)
        drop = probs.cumsum(-1) - probs > top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(1, idx, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(logits.device)

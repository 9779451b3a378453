"""The text codec's keyword arguments checked without loading anything: what ``TextCodec`` checks before it
loads an encoder or a decoder, and what a driver checks before any worker starts (``TextCodec.check_args``,
reached from a job's ``--dry-run`` through the platform's config check). Each error names the argument
and its value."""

from __future__ import annotations

from typing import Any

from diled.codecs._text_labels import check_label_head
from diled.codecs._text_sentence import check_sentence_options
from diled.text_decoders import check_decoding

DECODER_KINDS = ("causal_lm", "gpt2", "bert")


def check_text_options(*, latent_dim, tokenizer, decoder, decoder_config, max_length, decoder_trainable,
                       decoder_kind, decoder_layers, decoder_init, latent_slots, slot_tokens, save_decoder,
                       decoding, label_head, sentence_latent, slot_dropout, slot_dropout_after,
                       _directory=None, **_others) -> dict[str, Any]:
    """Every ``TextCodec`` argument (defaults filled in) checked; what the codec keeps of them:
    ``causal`` (a causal decoder), ``from_scratch`` (built, not loaded), ``decoding``, ``label_options``
    (None: no head) and ``sentence`` (``sentence_latent, slot_dropout, slot_dropout_after``)."""
    if decoder_kind not in DECODER_KINDS:
        raise ValueError(f"decoder_kind must be one of {', '.join(DECODER_KINDS)}; got {decoder_kind!r}")
    if decoder_init not in ("pretrained", "random"):
        raise ValueError(f"decoder_init must be 'pretrained' or 'random', got {decoder_init!r}")
    causal = decoder_kind != "bert"
    from_scratch = causal and decoder is None and (decoder_kind == "gpt2" or "model_type" in (decoder_config or {}))
    if from_scratch and tokenizer is None and _directory is None:
        raise ValueError("TextCodec: a causal decoder built from scratch needs tokenizer=<path or name> "
                         "(train one with diled.text_tokenizers.train_bpe)")
    if save_decoder not in ("all", "trained"):
        raise ValueError(f"save_decoder must be 'all' or 'trained', got {save_decoder!r}")
    if save_decoder == "trained" and (not causal or from_scratch):
        raise ValueError("save_decoder='trained' needs a pretrained causal decoder (decoder_kind causal_lm or "
                         "gpt2 with a decoder to load): a decoder built from scratch or a bert decoder has no "
                         "base to read the frozen weights from")
    if causal and decoder_layers != -1:
        raise ValueError("decoder_layers applies to a bert decoder; a causal decoder's depth is its config's")
    if decoder_trainable not in ("all", "paper", "none"):
        raise ValueError(f"decoder_trainable must be one of all, paper, none; got {decoder_trainable!r}")
    if not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
    if not isinstance(latent_slots, int) or latent_slots < 1 or latent_dim % latent_slots:
        raise ValueError(f"latent_slots must be >= 1 and divide latent_dim={latent_dim}, got {latent_slots!r}")
    if not isinstance(slot_tokens, int) or slot_tokens < 1:
        raise ValueError(f"slot_tokens must be an integer >= 1, got {slot_tokens!r}")
    return {"causal": causal, "from_scratch": from_scratch, "decoding": check_decoding(decoding or {}),
            "label_options": check_label_head(label_head) if label_head is not None else None,
            "sentence": check_sentence_options(sentence_latent, slot_dropout, latent_slots, slot_dropout_after)}

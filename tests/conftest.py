"""Shared fixtures: a tiny model trained once per session on a slice of the bundled sample."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "data", "sample_products.csv")
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Fast settings for test training runs: tiny, few steps, CPU, no checkpoints.
TINY_TRAIN_FLAGS = [
    "--train_file", SAMPLE,
    "--max_seq_length", "32",
    "--num_train_epochs", "2",
    "--per_device_train_batch_size", "16",
    "--learning_rate", "3e-4",
    "--head_learning_rate", "3e-3",
    "--save_strategy", "no",
    "--load_best_model_at_end", "false",
    "--disable_tqdm", "true",
    "--seed", "7",
]


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory) -> str:
    """A model fine-tuned for a few steps on the bundled sample (embedded MiniLM, CPU)."""
    from prodcat.args import parse_train_args
    from prodcat.training import run_training

    out = str(tmp_path_factory.mktemp("model"))
    run_training(*parse_train_args(TINY_TRAIN_FLAGS + ["--output_dir", out]))
    return out


def shared_data_path(name: str) -> str:
    """Path of a file in ../shared/data, or skip the test with a clear message when it is absent."""
    path = os.path.join(SHARED_DATA, name)
    if not os.path.exists(path):
        pytest.skip(f"real product data not found at {path} (the shared/ folder beside the repo)")
    return path


def clone_model(src: str, dst: str, edit_config=None) -> str:
    """A copy of a model folder whose weights are a symlink (cheap; ONNX files or config edits never
    reach the shared fixture), with an optional in-place edit of its config dict."""
    os.makedirs(dst)
    for name in os.listdir(src):
        path = os.path.join(src, name)
        if name.endswith(".safetensors"):
            os.symlink(os.path.abspath(path), os.path.join(dst, name))
        elif os.path.isfile(path):
            shutil.copy(path, dst)
    if edit_config:
        with open(os.path.join(dst, "config.json")) as handle:
            config = json.load(handle)
        edit_config(config)
        with open(os.path.join(dst, "config.json"), "w") as handle:
            json.dump(config, handle)
    return dst


def linked_copy(src: str, dst: str) -> str:
    """Copy a model directory with hard links (fast; atomic rewrites never touch the original)."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link)
    return dst

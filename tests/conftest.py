"""Shared fixtures: a tiny model trained once per session on a slice of the bundled sample."""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
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
    """A model fine-tuned for a few steps on the bundled sample (embedded MiniLM, CPU), with the defaults'
    n-gram model; the sample doubles as its test file, so it has a test report and test scores too."""
    from prodcat.training.config import parse_train_args
    from prodcat.training.run import run_training

    out = str(tmp_path_factory.mktemp("model"))
    run_training(*parse_train_args(TINY_TRAIN_FLAGS + ["--output_dir", out, "--test_file", SAMPLE]))
    return out


def subprocess_env(cpu_only: bool = False, **extra: str) -> dict[str, str]:
    """The environment for a prodcat process a test starts: offline, one thread, the repo importable.

    ``cpu_only`` hides the GPUs (``CUDA_VISIBLE_DEVICES=""``), for tests of CPU behaviour that a GPU would
    change: two DDP processes (on a one-GPU machine they would share it, which NCCL refuses) and
    bit-exact resuming (CUDA's non-deterministic reductions move the last digits).
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(path for path in (ROOT, env.get("PYTHONPATH")) if path)
    if cpu_only:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def shared_data_path(name: str) -> str:
    """Path of a file in the shared catalogues folder beside the repository, or skip the test with a clear message."""
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


def same_weights(model_dir_a: str, model_dir_b: str) -> bool:
    """Whether two model folders hold the same tensors in ``model.safetensors``, bit for bit."""
    from safetensors.numpy import load_file

    a, b = (load_file(os.path.join(folder, "model.safetensors")) for folder in (model_dir_a, model_dir_b))
    return a.keys() == b.keys() and all(np.array_equal(a[name], b[name]) for name in a)


def linked_copy(src: str, dst: str) -> str:
    """Copy a model directory with hard links (fast; atomic rewrites never touch the original)."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link)
    return dst

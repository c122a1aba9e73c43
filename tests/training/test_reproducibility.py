"""Two CPU training runs with the same seed give the same metrics, weights and predictions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
from safetensors.numpy import load_file

from prodcat.modeling.loading import default_model_path
from tests.conftest import ROOT, SAMPLE, subprocess_env

# Prior correction and calibration stay on: they are part of what a run decides.
TINY = [
    "--train_file", SAMPLE, "--max_train_samples", "64", "--max_seq_length", "16", "--num_train_epochs", "1",
    "--per_device_train_batch_size", "8", "--audit", "false", "--disable_tqdm", "true", "--seed", "11",
]  # fmt: skip


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def train(output_dir: str, cwd: str) -> None:
    """A real ``python train.py`` process: nothing carried over from an earlier run in the same interpreter."""
    # Bit-exact is a CPU property: on a GPU, CUDA's reductions move the last digits (temperature 1.51862195 vs 1.51862192).
    env = subprocess_env(cpu_only=True)
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), *TINY, "--output_dir", output_dir],
        cwd=cwd, capture_output=True, text=True, check=False, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def decisions(output_dir: str) -> dict:
    """Metrics and post-training choices of a run, without timings."""

    def numbers(name: str) -> dict:
        data = read_json(os.path.join(output_dir, name))
        return {k: v for k, v in data.items() if "runtime" not in k and "per_second" not in k and "seconds" not in k}

    config = read_json(os.path.join(output_dir, "config.json"))
    return {
        "eval": numbers("eval_results.json"),
        "train_loss": numbers("train_results.json")["train_loss"],
        "calibration": numbers("calibration.json"),
        "id2label": config["id2label"],
        "temperature": config.get("prodcat_temperature"),
        "prior_correction": config.get("prodcat_prior_correction"),
    }


def logits(output_dir: str, texts: list[str]) -> np.ndarray:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prodcat.inference.batching import predict_logits

    model = AutoModelForSequenceClassification.from_pretrained(output_dir, use_safetensors=True).eval()
    return predict_logits(model, AutoTokenizer.from_pretrained(output_dir), texts, batch_size=16, max_length=16)


def test_same_seed_same_metrics_weights_and_logits(tmp_path):
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    train(first, str(tmp_path))
    train(second, str(tmp_path))

    assert decisions(first) == decisions(second)
    weights, again = load_file(os.path.join(first, "model.safetensors")), load_file(os.path.join(second, "model.safetensors"))
    assert weights.keys() == again.keys()
    assert all(np.array_equal(weights[name], again[name]) for name in weights)

    texts = pd.read_csv(SAMPLE, dtype=str)["description"].tolist()[-40:]  # rows the runs did not train on
    first_logits = logits(first, texts)
    np.testing.assert_array_equal(first_logits, logits(second, texts))

    # Not vacuous: the encoder was really fine-tuned (it moved away from the base model) and the
    # predictions are not constant.
    base = load_file(os.path.join(default_model_path(), "model.safetensors"))
    name = next(n for n in base if n.endswith("encoder.layer.0.attention.self.query.weight"))
    tuned = next(n for n in weights if n.endswith("encoder.layer.0.attention.self.query.weight"))
    assert not np.array_equal(base[name], weights[tuned])
    assert len(set(first_logits.argmax(-1))) > 1

"""Safe loading and safe writing: safetensors only unless opted in, no remote code unless asked for,
and no file name made from label or input text, nothing written outside the output directory.

(Tokens never reaching logs or files is covered by hub/test_push.py.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from prodcat.modeling.loading import default_model_path
from tests.conftest import ROOT, subprocess_env

FAST = [
    "--max_seq_length", "16", "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
    "--disable_tqdm", "true", "--seed", "5",
]  # fmt: skip
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def env(tmp_path) -> dict[str, str]:
    return subprocess_env(HF_MODULES_CACHE=str(tmp_path / "hf_modules"))  # where transformers would copy remote code


def run(script: str, args: list[str], cwd, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *args],
        cwd=str(cwd),
        capture_output=True,
        text=True,
        check=False,
        env=env(tmp_path),
        timeout=600,
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("prodcat: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def small_train_file(folder) -> str:
    rows = [(f"product {c}-{i}", f"Shop > Aisle{c % 2} > Shelf{c}") for c in range(3) for i in range(8)]
    path = os.path.join(str(folder), "train.csv")
    pd.DataFrame(rows, columns=["description", "category"]).to_csv(path, index=False)
    return path


# ---- pickled weights ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pickled_model(tmp_path_factory) -> str:
    """The embedded MiniLM saved the old way: pytorch_model.bin (a pickle), no safetensors."""
    import torch
    from safetensors.torch import load_file

    source = default_model_path()
    folder = tmp_path_factory.mktemp("pickled") / "model"
    folder.mkdir()
    torch.save(load_file(os.path.join(source, "model.safetensors")), folder / "pytorch_model.bin")
    for name in ("config.json", *TOKENIZER_FILES):
        shutil.copy(os.path.join(source, name), folder / name)
    return str(folder)


def test_pickled_weights_are_refused_by_default(pickled_model, tmp_path):
    train = small_train_file(tmp_path)
    result = run(
        "train.py",
        ["--train_file", train, "--model_name_or_path", pickled_model, "--output_dir", str(tmp_path / "out"), *FAST],
        tmp_path,
        tmp_path,
    )
    line = one_error_line(result)
    assert pickled_model in line and "only pickled weights" in line and "--allow_pickled_weights" in line
    assert not os.path.exists(tmp_path / "out")


def test_pickled_weights_load_with_the_explicit_opt_in_and_the_result_is_safetensors(pickled_model, tmp_path):
    from prodcat.training.config import parse_train_args
    from prodcat.training.run import run_training

    out = tmp_path / "out"
    argv = [
        "--train_file", small_train_file(tmp_path), "--model_name_or_path", pickled_model, "--allow_pickled_weights", "true",
        "--output_dir", str(out), "--prior_correction", "off", "--calibrate", "false", "--audit", "false", *FAST,
    ]  # fmt: skip
    results = run_training(*parse_train_args(argv))
    assert "eval" in results
    assert (out / "model.safetensors").is_file()
    assert not [name for name in os.listdir(out) if re.search(r"(pytorch_model.*\.bin|\.pt|\.pth|\.ckpt)$", name)]


# ---- remote code -------------------------------------------------------------------------------


@pytest.fixture
def remote_code_model(tmp_path) -> str:
    """A model folder whose config points at custom Python code that leaves a marker when imported."""
    source = default_model_path()
    folder = tmp_path / "custom"
    folder.mkdir()
    config = read_json(os.path.join(source, "config.json"))
    config.update(
        model_type="prodcat-custom",
        architectures=["CustomForSequenceClassification"],
        auto_map={"AutoConfig": "custom.CustomConfig", "AutoModelForSequenceClassification": "custom.CustomModel"},
    )
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "custom.py").write_text("import pathlib\npathlib.Path(__file__).with_name('CODE_WAS_RUN').write_text('yes')\n")
    os.symlink(os.path.join(source, "model.safetensors"), folder / "model.safetensors")
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(source, name), folder / name)
    return str(folder)


def test_remote_code_is_never_run_by_default(remote_code_model, tmp_path):
    from prodcat.training.config import parse_train_args

    assert parse_train_args([])[0].trust_remote_code is False
    train = run("train.py", ["--train_file", small_train_file(tmp_path), "--model_name_or_path", remote_code_model,
                             "--output_dir", str(tmp_path / "out"), *FAST], tmp_path, tmp_path)  # fmt: skip
    assert "custom code" in one_error_line(train)
    predict = run("predict.py", ["--model", remote_code_model, "stainless steel kettle"], tmp_path, tmp_path)
    assert "custom code" in one_error_line(predict)
    assert not os.path.exists(os.path.join(remote_code_model, "CODE_WAS_RUN"))
    assert not os.path.exists(tmp_path / "hf_modules")  # not even copied into transformers' module cache
    assert not os.path.exists(tmp_path / "out")


# ---- file names and output location -------------------------------------------------------------

HOSTILE_LABELS = [
    "../../etc > passwd",
    "/tmp > evil",
    "..\\..\\windows > system32",
    "CON > NUL",
    "$(touch pwned) > `id`",
    "<script>alert(1)</script> > x",
    "quote \" and ' > star * ? | : name",
    "new\nline > tab\there",
]


def snapshot(root) -> set[str]:
    return {os.path.relpath(os.path.join(folder, name), root) for folder, dirs, files in os.walk(root) for name in dirs + files}


def test_hostile_labels_and_texts_never_become_file_names_or_paths(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    rows = [(f"{label} item {i} ../../{i}.txt", label) for label in HOSTILE_LABELS for i in range(6)]
    frame = pd.DataFrame(rows, columns=["description", "category"])
    frame.iloc[::3].to_csv(work / "test.csv", index=False)
    frame.to_csv(work / "train.csv", index=False)
    before = snapshot(tmp_path)

    # Defaults on: audit, prior correction, calibration, test report with plots, model card.
    result = run("train.py", ["--train_file", "train.csv", "--test_file", "test.csv", "--output_dir", "out", *FAST], work, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    created = snapshot(tmp_path) - before
    assert created and all(
        path == os.path.join("work", "out") or path.startswith(os.path.join("work", "out") + os.sep) for path in created
    ), sorted(created)
    for path in ("/etc/passwd", "/tmp/evil", str(work / "pwned"), str(tmp_path / "etc")):
        assert not os.path.exists(path) or os.path.getmtime(path) < os.path.getmtime(work / "train.csv")
    assert os.path.join("work", "out", "report", "metrics.json") in created  # the report was written too
    safe_name = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    for path in created:
        for part in path.split(os.sep)[2:]:
            assert safe_name.match(part), path
            assert not any(word in part.lower() for word in ("passwd", "evil", "script", "pwned", "system32", "item")), path
    config = read_json(work / "out" / "config.json")
    from prodcat.core.hierarchy import normalize_path

    assert sorted(config["id2label"].values()) == sorted({normalize_path(label) for label in HOSTILE_LABELS})

"""Evaluation report, calibration of a saved model and the ``prodcat evaluate`` command."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT, SAMPLE

from prodcat.data.tables import load_table
from prodcat.evaluation.calibration import model_temperature, probabilities
from prodcat.evaluation.metrics.taxonomy_metrics import taxonomy_scores
from prodcat.evaluation.report import REPORT_FILES, short_label, write_report
from prodcat.inference.batching import predict_logits
from prodcat.modeling.loading import load_saved_model
from prodcat.training.postfit import calibrate_model_dir

LONG_UNSEEN = "Garden > Outdoor Living & Patio Furniture Accessories > Umbrella Bases $20 and under"
UNSEEN_TOP = "Automotive > Tyres"


@pytest.fixture(scope="module")
def loaded(trained_model_dir):
    return load_saved_model(trained_model_dir, "cpu")


@pytest.fixture(scope="module")
def evaluation_rows() -> tuple[list[str], list[str]]:
    """Every 8th sample row, plus two rows whose category the model never saw."""
    table = load_table(SAMPLE, ["description"], "category")
    texts = table.texts[::8] + ["Cast-iron umbrella base, 20 kg", "All-season tyre 205/55 R16"]
    labels = table.labels[::8] + [LONG_UNSEEN, UNSEEN_TOP]
    return texts, labels


def _strict_json(path: str) -> dict:
    def reject(constant):
        raise ValueError(f"{path} contains {constant}, which is not JSON")

    with open(path, encoding="utf-8") as handle:
        return json.load(handle, parse_constant=reject)


def test_write_report_files_and_numbers(loaded, evaluation_rows, tmp_path):
    model, tokenizer = loaded
    texts, labels = evaluation_rows
    report_dir = tmp_path / "report"
    logits = predict_logits(model, tokenizer, texts, max_length=32)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    temperature = model_temperature(model.config)
    metrics = write_report(logits, names, texts, labels, str(report_dir), temperature=temperature)

    assert sorted(os.listdir(report_dir)) == sorted(REPORT_FILES)
    for name in REPORT_FILES:
        if name.endswith(".png"):
            data = (report_dir / name).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    assert _strict_json(str(report_dir / "metrics.json")) == metrics

    # the numbers agree with an independent computation from the logits
    predicted = [names[i] for i in logits.argmax(1)]
    expected = taxonomy_scores(predicted, labels)
    for key in ("accuracy", "macro_f1", "level_1_accuracy", "hierarchical_f1"):
        assert metrics[key] == pytest.approx(expected[key])
    assert metrics["num_unseen_reference_rows"] == 2
    assert metrics["temperature"] == temperature and metrics["predictor"] == "transformer"
    curve = metrics["coverage_curve"]
    assert curve["coverage"][0] == 1.0 and curve["accuracy"][0] == pytest.approx(metrics["accuracy"])

    errors = pd.read_csv(report_dir / "errors.csv", keep_default_na=False)
    wrong = sum(p != r for p, r in zip(predicted, labels))
    assert len(errors) == wrong
    assert set(errors["true_label"]) >= {LONG_UNSEEN, UNSEEN_TOP}
    assert list(errors["top_1_score"]) == sorted(errors["top_1_score"], reverse=True)
    assert (errors["top_1_score"] >= errors["top_2_score"]).all() and (errors["top_2_score"] >= errors["top_3_score"]).all()
    unseen_rows = errors[errors["true_label"] == UNSEEN_TOP].iloc[0]
    assert unseen_rows["true_label_known"] in (False, "False") and unseen_rows["true_label_score"] == ""
    assert unseen_rows["row"] == len(texts)  # default row numbers: 1-based position

    per_class = pd.read_csv(report_dir / "per_class.csv", keep_default_na=False)
    assert set(per_class["level"].astype(str)) == {"leaf", "1", "2", "3"}
    for _, level_rows in per_class.groupby("level"):
        assert level_rows["support"].sum() == len(labels)
    leaf = per_class[(per_class["level"].astype(str) == "leaf") & (per_class["label"] == UNSEEN_TOP)].iloc[0]
    assert leaf["recall"] == 0.0 and leaf["support"] == 1

    confusions = pd.read_csv(report_dir / "confusions.csv", keep_default_na=False)
    assert confusions["count"].sum() == wrong
    row = confusions[confusions["true_label"] == UNSEEN_TOP].iloc[0]
    assert row["lowest_common_ancestor"] == "" and row["common_levels"] == 0


def test_report_uses_the_given_temperature(loaded, evaluation_rows, tmp_path):
    model, tokenizer = loaded
    texts, labels = evaluation_rows
    logits = predict_logits(model, tokenizer, texts, max_length=32)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    plain = write_report(logits, names, texts, labels, str(tmp_path / "t1"), temperature=1.0)
    hot = write_report(logits, names, texts, labels, str(tmp_path / "t3"), temperature=3.0)
    assert hot["temperature"] == 3.0 and plain["temperature"] == 1.0
    assert hot["accuracy"] == plain["accuracy"]  # the argmax never changes
    scores = pd.read_csv(tmp_path / "t3" / "errors.csv")["top_1_score"]
    assert scores.max() <= probabilities(logits, 3.0).max(axis=1).max() + 1e-9
    assert hot["coverage_at_p90"] <= plain["coverage_at_p90"]


def test_calibrate_model_dir_stores_the_temperature(trained_model_dir, evaluation_rows, tmp_path):
    model_dir = str(tmp_path / "model")
    shutil.copytree(trained_model_dir, model_dir)
    fixture_config = open(os.path.join(trained_model_dir, "config.json"), encoding="utf-8").read()
    texts, labels = evaluation_rows
    summary = calibrate_model_dir(model_dir, texts, labels, max_length=32)
    assert summary["num_examples"] == len(labels) - 2  # the unseen categories are skipped
    assert summary["nll_after"] <= summary["nll_before"] + 1e-9
    assert 0.05 <= summary["temperature"] <= 20
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as handle:
        assert json.load(handle)["prodcat_temperature"] == pytest.approx(summary["temperature"])
    model, _ = load_saved_model(model_dir, "cpu")
    assert model_temperature(model.config) == pytest.approx(summary["temperature"])
    # the shared fixture was not touched
    assert open(os.path.join(trained_model_dir, "config.json"), encoding="utf-8").read() == fixture_config
    skipped = calibrate_model_dir(model_dir, ["x"], ["Not > A > Category"], max_length=32)
    assert skipped["temperature"] == 1.0 and "skipped" in skipped


def test_short_label():
    assert short_label("Beauty & Hygiene > Hair Care > Hair Oil & Serum", 32) == "… > Hair Care > Hair Oil & Serum"
    assert short_label("Beauty & Hygiene > Hair Care > Hair Oil & Serum", 30) == "… > Hair Oil & Serum"  # whole segments
    assert len(short_label("x" * 100)) == 32
    assert short_label("Kitchen, Garden & Pets and more", 12, keep_end=False) == "Kitchen, Ga…"
    assert short_label("Deals > $5 $10") == r"Deals > \$5 \$10"


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(
        [sys.executable, "-m", "prodcat.cli.main", "evaluate", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_evaluate_cli_scores_the_path_it_names(trained_model_dir, tmp_path):
    """By default the transformer pooled with the n-gram model; --ensemble false the transformer alone.
    Each report's figures are those of Categorizer's predictions on that path."""
    from prodcat.inference.categorizer import Categorizer

    test_file = tmp_path / "test.csv"
    table = load_table(SAMPLE, ["description"], "category")
    texts, labels = table.texts[::15], table.labels[::15]
    with open(test_file, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["description", "category"])
        writer.writerows(zip(texts, labels))
    for flags, predictor, ensemble in (((), "ensemble", None), (("--ensemble", "false"), "transformer", False)):
        report_dir = tmp_path / f"report-{predictor}"
        result = _run_cli(
            "--model", trained_model_dir, "--test_file", str(test_file), "--report_dir", str(report_dir), "--batch_size", "16", *flags
        )
        assert result.returncode == 0, result.stderr
        assert "accuracy" in result.stdout and "hierarchical F1" in result.stdout
        assert ("n-gram" in result.stdout.splitlines()[0]) == (predictor == "ensemble")
        assert sorted(os.listdir(report_dir)) == sorted(REPORT_FILES)
        metrics = _strict_json(str(report_dir / "metrics.json"))
        assert metrics["num_examples"] == len(texts) and metrics["predictor"] == predictor
        categorizer = Categorizer.from_pretrained(trained_model_dir, device="cpu", ensemble=ensemble)
        expected = taxonomy_scores([p.category for p in categorizer.predict(texts)], labels)
        assert metrics["accuracy"] == pytest.approx(expected["accuracy"]) and metrics["macro_f1"] == pytest.approx(expected["macro_f1"])
        assert metrics["temperature"] == pytest.approx(
            categorizer.ensemble.temperature if categorizer.ensemble is not None else categorizer.temperature
        )


def test_evaluate_cli_quantize_needs_onnx(trained_model_dir, tmp_path):
    test_file = tmp_path / "test.csv"
    test_file.write_text("description,category\nBlue mug,Home > Kitchen\n", encoding="utf-8")
    result = _run_cli("--model", trained_model_dir, "--test_file", str(test_file), "--report_dir", str(tmp_path / "r"), "--quantize")
    assert result.returncode == 2 and "--backend onnx" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_evaluate_cli_missing_column_is_one_line(trained_model_dir, tmp_path):
    test_file = tmp_path / "test.csv"
    test_file.write_text("description,category\nBlue mug,Home > Kitchen\n", encoding="utf-8")
    result = _run_cli(
        "--model", trained_model_dir, "--test_file", str(test_file), "--report_dir", str(tmp_path / "r"), "--text_columns", "title"
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prodcat: error:"), result.stderr
    assert "'title'" in lines[0] and "description" in lines[0]
    assert not (tmp_path / "r").exists()

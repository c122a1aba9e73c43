"""The output folder's format (prodcat.core.artifacts): training_summary.json and prodcat's keys in config.json.

The on-disk format is fixed: summaries of older runs must load, and summaries written now must be readable by
older prodcat versions, so the keys a real training run writes are checked against a hard-coded list.
"""

from __future__ import annotations

import json
import logging
import os
import types

import pytest

from prodcat.core.artifacts import (
    SUMMARY_FILE,
    TEMPERATURE_KEY,
    TrainingSummary,
    has_summary,
    read_backoff_threshold,
    read_summary,
    read_temperature,
    set_prior_correction,
    set_temperature,
    write_summary,
    write_temperature,
)
from prodcat.core.errors import ProdcatError
from prodcat.evaluation.calibration import model_temperature

#: Top-level keys of training_summary.json as training writes them (``refit_on_all_rows`` only with that option).
SUMMARY_KEYS = {
    "base_model", "base_model_is_embedded_default", "train_file", "validation_file", "test_file", "text_columns",
    "label_column", "validation_split", "num_train", "num_validation", "num_test", "train_only_classes",
    "validation_min_category_rows", "unseen_rows", "label_counts", "widget_examples", "unseen_categories", "dataset_name",
    "calibration", "default_predictor", "predictors", "hyperparameters", "results",
}  # fmt: skip
HYPERPARAMETER_KEYS = {
    "learning_rate", "head_learning_rate", "head_init", "freeze_word_embeddings", "num_train_epochs",
    "per_device_train_batch_size", "max_seq_length", "category_name_examples", "warmup_steps", "weight_decay",
    "label_smoothing_factor", "class_weights", "hierarchy_loss_weight", "prior_correction", "epoch_kept", "seed",
    "mixed_precision",
}  # fmt: skip


def full_summary() -> TrainingSummary:
    return TrainingSummary(
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        base_model_is_embedded_default=True,
        train_file="train.csv",
        test_file="test.csv",
        text_columns=["title", "brand"],
        label_column="category",
        validation_split=0.1,
        num_train=90,
        num_validation=10,
        num_test=20,
        train_only_classes=1,
        validation_min_category_rows=2,
        unseen_rows={"validation": 0, "test": 1},
        label_counts={"A > x": 60, "B > y": 30},
        widget_examples=["Steel kettle 1.7 l"],
        unseen_categories=["C > z"],
        dataset_name="demo",
        calibration={"temperature": 1.3, "ece_before": 0.1, "ece_after": 0.02},
        default_predictor="ensemble",
        predictors={"transformer": {"test_accuracy": 0.7}, "ensemble": {"test_accuracy": 0.75}},
        hyperparameters={"max_seq_length": 48, "seed": 7, "num_train_epochs": 3.0},
        results={"train": {"train_wall_seconds": 12.5}, "test": {"test_accuracy": 0.7}},
    )


def test_summary_round_trips_through_the_file(tmp_path):
    summary = full_summary()
    path = write_summary(str(tmp_path), summary)
    assert path == os.path.join(str(tmp_path), SUMMARY_FILE) and has_summary(str(tmp_path))
    assert read_summary(str(tmp_path)) == summary
    with open(path, encoding="utf-8") as handle:
        stored = json.load(handle)
    # Plain JSON with exactly the keys training writes; no refit_on_all_rows unless it is set.
    assert set(stored) == SUMMARY_KEYS and stored == summary.to_dict()
    assert [p.name for p in tmp_path.iterdir()] == [SUMMARY_FILE]  # written atomically, nothing left behind


def test_summary_helpers_read_the_nested_values():
    summary = full_summary()
    assert (summary.max_seq_length, summary.seed, summary.num_train_epochs) == (48, 7, 3.0)
    assert summary.result("train") == {"train_wall_seconds": 12.5} and summary.result("ngram_ensemble") == {}
    assert summary.predictor_scores() == {"transformer": {"test_accuracy": 0.7}, "ensemble": {"test_accuracy": 0.75}}
    empty = TrainingSummary()
    assert (empty.max_seq_length, empty.seed, empty.num_train_epochs, empty.num_train) == (None, None, None, None)


def test_old_summary_without_the_newer_keys_loads_with_defaults(tmp_path):
    old = {
        "base_model": "org/encoder",
        "train_file": "catalogue.csv",
        "num_train": 100,
        "singleton_classes": 4,  # the key before train_only_classes
        "hyperparameters": {"max_seq_length": 32, "seed": 1},
        "results": {"ngram_ensemble": {"validation_transformer_accuracy": 0.7, "validation_ensemble_accuracy": 0.72,
                                       "test_accuracy": 0.74, "test_macro_f1": float("nan")}},
        "retired_key": {"kept": True},
    }  # fmt: skip
    with open(tmp_path / SUMMARY_FILE, "w", encoding="utf-8") as handle:
        json.dump(old, handle)
    summary = read_summary(str(tmp_path))
    assert summary.train_only_classes == 4 and summary.num_train == 100 and summary.max_seq_length == 32
    assert summary.num_validation == 0 and summary.text_columns == [] and summary.validation_min_category_rows is None
    assert summary.refit_on_all_rows is None and summary.predictors == {}
    # Before default_predictor, a run pooled when it recorded the n-gram model; before predictors, its figures were here.
    assert summary.default_predictor == "ensemble"
    assert summary.predictor_scores() == {
        "transformer": {"validation_accuracy": 0.7},
        "ensemble": {"validation_accuracy": 0.72, "test_accuracy": 0.74},  # NaN dropped
    }
    # Keys this version does not know survive a rewrite.
    write_summary(str(tmp_path), summary)
    assert read_summary(str(tmp_path)).extra == {"retired_key": {"kept": True}}


def test_nested_parts_of_the_wrong_type_are_dropped(caplog):
    with caplog.at_level(logging.WARNING, logger="prodcat.core.artifacts"):
        summary = TrainingSummary.from_dict({"hyperparameters": [48], "label_counts": None, "text_columns": "title"})
    assert summary.hyperparameters == {} and summary.label_counts == {} and summary.text_columns == []
    assert len(caplog.records) == 2  # None is only a missing value; the list and the string are reported


def test_missing_or_unreadable_summaries(tmp_path, caplog):
    assert read_summary(str(tmp_path)) is None and not has_summary(str(tmp_path))
    with pytest.raises(ProdcatError, match="no training summary"):
        read_summary(str(tmp_path), strict=True)
    (tmp_path / SUMMARY_FILE).write_text("{not json", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="prodcat.core.artifacts"):
        assert read_summary(str(tmp_path)) is None
    assert "unreadable training summary ignored" in caplog.text
    with pytest.raises(ProdcatError, match="unreadable training summary"):
        read_summary(str(tmp_path), strict=True)
    (tmp_path / SUMMARY_FILE).write_text("[1, 2]", encoding="utf-8")
    assert read_summary(str(tmp_path)) is None


def test_a_real_run_writes_the_same_keys_and_rewrites_byte_for_byte(trained_model_dir, tmp_path):
    path = os.path.join(trained_model_dir, SUMMARY_FILE)
    with open(path, encoding="utf-8") as handle:
        stored = json.load(handle)
    assert set(stored) == SUMMARY_KEYS
    assert set(stored["hyperparameters"]) == HYPERPARAMETER_KEYS
    summary = read_summary(trained_model_dir)
    assert summary.to_dict() == stored and summary.extra == {}
    assert summary.max_seq_length == 32 and summary.seed == 7 and summary.validation_min_category_rows == 2
    write_summary(str(tmp_path), summary)
    with open(path, "rb") as before, open(tmp_path / SUMMARY_FILE, "rb") as after:
        assert after.read() == before.read()


def test_refit_summary_carries_the_first_runs_split_and_writes_its_record(tmp_path):
    from prodcat.training.refit import HoldoutRun

    first = full_summary()
    first_dir = str(tmp_path / "holdout")
    write_summary(first_dir, first)
    holdout = HoldoutRun.load(first_dir)
    assert (holdout.epochs, holdout.temperature) == (3.0, 1.3)
    second = holdout.carry_over(TrainingSummary(num_train=100, num_validation=0, validation_split=None))
    assert second.num_train == 100 and second.num_validation == 10 and second.validation_split == 0.1
    assert second.refit_on_all_rows == {"holdout_dir": "holdout", "holdout_num_train": 90, "holdout_train_wall_seconds": 12.5}
    write_summary(str(tmp_path), second)
    with open(tmp_path / SUMMARY_FILE, encoding="utf-8") as handle:
        assert set(json.load(handle)) == SUMMARY_KEYS | {"refit_on_all_rows"}
    with pytest.raises(ProdcatError, match="train again without --resume_from_checkpoint"):
        HoldoutRun.load(str(tmp_path / "missing"))


def test_temperature_is_read_and_written_in_the_config(tmp_path, caplog):
    config = {"architectures": ["BertForSequenceClassification"], "id2label": {"0": "A > B"}}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    write_temperature(str(tmp_path), 1.5)
    stored = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert stored == {**config, TEMPERATURE_KEY: 1.5} and read_temperature(stored) == 1.5
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary file left behind

    in_memory = types.SimpleNamespace()
    assert read_temperature(in_memory) is None and model_temperature(in_memory) == 1.0
    set_temperature(in_memory, 1.25)
    set_prior_correction(in_memory, 0.5)
    assert read_temperature(in_memory) == 1.25 == model_temperature(in_memory)
    assert vars(in_memory) == {"prodcat_temperature": 1.25, "prodcat_prior_correction": 0.5}
    with caplog.at_level(logging.WARNING, logger="prodcat.core.artifacts"):
        assert read_temperature({TEMPERATURE_KEY: -2}) is None and read_temperature({TEMPERATURE_KEY: "nonsense"}) is None
    assert caplog.text.count("ignoring invalid prodcat_temperature") == 2


def test_backoff_threshold_is_read_from_the_config():
    assert read_backoff_threshold({"prodcat_backoff_threshold": 0.6}) == 0.6
    assert read_backoff_threshold(types.SimpleNamespace(prodcat_backoff_threshold="0.7")) == 0.7
    for value in (None, 0, 1.5, "high"):
        assert read_backoff_threshold({"prodcat_backoff_threshold": value}) is None


def test_every_object_or_array_field_is_type_checked_on_loading():
    import dataclasses

    from prodcat.core import artifacts

    containers = {f.name for f in dataclasses.fields(TrainingSummary) if f.name != "extra" and f.type.startswith(("dict", "list"))}
    assert containers == set(artifacts._CONTAINERS)

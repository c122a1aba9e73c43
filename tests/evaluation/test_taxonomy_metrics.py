"""Taxonomy metrics against hand-computed values, ragged depths included."""

from __future__ import annotations

import math

import pytest

from prodcat.evaluation.metrics import TAXONOMY_METRIC_PATH
from prodcat.evaluation.metrics.taxonomy_metrics import (
    coverage_curve,
    lowest_common_ancestor,
    per_class_scores,
    taxonomy_scores,
)

# Depths 3, 2, 1 and 3 in one set.
REFERENCES = ["A > B > C", "A > B", "D", "A > E > F"]
PREDICTIONS = ["A > B > C", "A > B > X", "D", "A > B > C"]


def test_leaf_and_level_scores_by_hand():
    scores = taxonomy_scores(PREDICTIONS, REFERENCES)
    assert scores["accuracy"] == pytest.approx(2 / 4)
    # leaf classes {ABC, AB, D, AEF, ABX}: F1 = 2/3 (ABC: P 1/2, R 1), 0, 1, 0, 0
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 1) / 5)
    assert scores["weighted_f1"] == pytest.approx((2 / 3 + 1) / 4)
    # level 1: A, A, D, A both sides
    assert scores["level_1_accuracy"] == 1.0
    # level 2: refs AB, AB, D, AE; preds AB, AB, D, AB
    assert scores["level_2_accuracy"] == pytest.approx(3 / 4)
    # AB: P 2/3, R 1 -> F1 0.8; D: 1; AE: 0
    assert scores["level_2_macro_f1"] == pytest.approx(1.8 / 3)
    assert scores["level_2_weighted_f1"] == pytest.approx((2 * 0.8 + 1) / 4)
    # level 3: the shallow "A > B" counts as itself, so predicting "A > B > X" is wrong there
    assert scores["level_3_accuracy"] == pytest.approx(2 / 4)
    assert "level_4_accuracy" not in scores
    assert scores["num_examples"] == 4


def test_hierarchical_precision_recall_by_hand():
    scores = taxonomy_scores(PREDICTIONS, REFERENCES)
    # |A(p) ∩ A(y)| = 3 + 2 + 1 + 1 = 7; sum |A(p)| = 3 + 3 + 1 + 3 = 10; sum |A(y)| = 3 + 2 + 1 + 3 = 9
    assert scores["hierarchical_precision"] == pytest.approx(7 / 10)
    assert scores["hierarchical_recall"] == pytest.approx(7 / 9)
    assert scores["hierarchical_f1"] == pytest.approx(14 / 19)


def test_empty_prediction_gets_no_credit_and_mismatch_is_an_error():
    scores = taxonomy_scores(["", "A > B"], ["A > B", "A > B"])
    assert scores["hierarchical_precision"] == 1.0  # the empty prediction predicts nothing wrong...
    assert scores["hierarchical_recall"] == pytest.approx(2 / 4)  # ...but recovers nothing either
    assert scores["level_1_accuracy"] == 0.5
    with pytest.raises(ValueError):
        taxonomy_scores(["A"], ["A", "B"])
    assert taxonomy_scores([], []) == {}


def test_coverage_curve_by_hand():
    curve = coverage_curve([0.95, 0.85, 0.6, 0.3], [True, True, False, True], thresholds=[0.0, 0.5, 0.9, 1.0])
    assert curve["coverage"] == pytest.approx([1.0, 0.75, 0.25, 0.0])
    assert curve["accuracy"][:3] == pytest.approx([0.75, 2 / 3, 1.0])
    assert math.isnan(curve["accuracy"][3])
    default = coverage_curve([0.5], [True])
    assert len(default["thresholds"]) == 101 and default["thresholds"][0] == 0.0 and default["thresholds"][-1] == 1.0
    with pytest.raises(ValueError):
        coverage_curve([0.5, 0.2], [True])


def test_prediction_scores_add_coverage_scalars_and_plain_path_has_none():
    plain = taxonomy_scores(PREDICTIONS, REFERENCES)
    assert not any(k.startswith("coverage") for k in plain)
    scored = taxonomy_scores(PREDICTIONS, REFERENCES, prediction_scores=[0.95, 0.85, 0.6, 0.3])
    # answered at p >= 0.5: rows 1-3 (right, wrong, right)
    assert scored["coverage_at_p50"] == pytest.approx(0.75)
    assert scored["answered_accuracy_at_p50"] == pytest.approx(2 / 3)
    assert scored["coverage_at_p90"] == pytest.approx(0.25)
    assert scored["answered_accuracy_at_p90"] == 1.0
    assert {k: v for k, v in scored.items() if k in plain} == plain


def test_per_class_scores_every_level():
    rows = per_class_scores(PREDICTIONS, REFERENCES)
    by_key = {(r["level"], r["label"]): r for r in rows}
    assert {r["level"] for r in rows} == {"leaf", "1", "2", "3"}
    assert by_key[("leaf", "A > B > C")]["precision"] == pytest.approx(0.5)
    assert by_key[("leaf", "A > B > C")]["recall"] == 1.0
    assert by_key[("leaf", "A > B > X")]["support"] == 0  # predicted only
    assert by_key[("2", "A > B")]["f1"] == pytest.approx(0.8)
    assert by_key[("1", "A")]["support"] == 3
    for level in ("leaf", "1", "2", "3"):
        assert sum(r["support"] for r in rows if r["level"] == level) == len(REFERENCES)


def test_lowest_common_ancestor():
    assert lowest_common_ancestor("A > B > C", "A > B > D") == "A > B"
    assert lowest_common_ancestor("A > B", "A > B > C") == "A > B"
    assert lowest_common_ancestor("A > B", "D > B") == ""
    assert lowest_common_ancestor("AB > C", "A > BC") == ""  # whole segments, not characters


def test_evaluate_load_matches_plain_function():
    import evaluate

    metric = evaluate.load(TAXONOMY_METRIC_PATH)
    result = metric.compute(predictions=PREDICTIONS, references=REFERENCES)
    assert result == pytest.approx(taxonomy_scores(PREDICTIONS, REFERENCES))
    scored = metric.compute(predictions=PREDICTIONS, references=REFERENCES, prediction_scores=[0.95, 0.85, 0.6, 0.3])
    assert scored["coverage_at_p50"] == pytest.approx(0.75)
    # batched accumulation keeps working
    for p, r in zip(PREDICTIONS, REFERENCES):
        metric.add(prediction=p, reference=r)
    assert metric.compute()["hierarchical_f1"] == pytest.approx(14 / 19)

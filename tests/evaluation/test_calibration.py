"""Temperature scaling, ECE and NLL on hand-made arrays; storing the temperature in a model folder."""

from __future__ import annotations

import json
import math
import types

import numpy as np
import pytest

from prodcat.evaluation.calibration import (
    TEMPERATURE_KEY,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    model_temperature,
    negative_log_likelihood,
    probabilities,
    reliability_bins,
)
from prodcat.training.postfit import write_temperature


def calibrated_sample(n: int = 6000, classes: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is the true label distribution (perfectly calibrated at T = 1)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, classes))
    probs = probabilities(logits)
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    return logits, labels


def test_probabilities_are_a_stable_softmax():
    probs = probabilities(np.array([[1000.0, 0.0], [2.0, 0.0]]), temperature=2.0)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert probs[0, 0] == pytest.approx(1.0)
    assert probs[1, 0] == pytest.approx(math.exp(1) / (math.exp(1) + 1))


def test_probabilities_in_float32_for_the_predictor():
    logits = np.array([[2.0, 1.0, 0.0], [30.0, -5.0, 1.0]], dtype=np.float32)
    probs = probabilities(logits, 2.0, dtype=np.float32)
    assert probs.dtype == np.float32
    expected = np.exp(logits / 2.0) / np.exp(logits / 2.0).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, expected, rtol=1e-6)


def test_ece_by_hand():
    # two rows at confidence 0.9, one right: |0.5 - 0.9| = 0.4
    assert expected_calibration_error(np.array([[0.9, 0.1], [0.9, 0.1]]), [0, 1]) == pytest.approx(0.4)
    # bin of 0.95 (2 right of 2): gap 0.05; bin of 0.7 (1 right of 2): gap 0.2; weights 1/2 each
    probs = np.array([[0.95, 0.05], [0.05, 0.95], [0.7, 0.3], [0.3, 0.7]])
    assert expected_calibration_error(probs, [0, 1, 1, 1]) == pytest.approx(0.5 * 0.05 + 0.5 * 0.2)
    # a label unseen in training (negative id) is always wrong
    assert expected_calibration_error(np.array([[0.9, 0.1]]), [-100]) == pytest.approx(0.9)


def test_reliability_bins_are_right_closed():
    bins = reliability_bins([0.0, 1.0, 1 / 15 + 1e-9, 1 / 15 - 1e-9], [True, True, False, False], n_bins=15)
    assert bins["count"][0] == 2  # 0 and just under 1/15
    assert bins["count"][1] == 1  # just over 1/15
    assert bins["count"][14] == 1  # exactly 1.0
    assert sum(bins["count"]) == 4
    assert math.isnan(bins["accuracy"][5])


def test_nll_by_hand_and_unseen_rows_skipped():
    assert negative_log_likelihood(np.array([[0.0, 0.0]]), [0]) == pytest.approx(math.log(2))
    assert negative_log_likelihood(np.array([[0.0, 0.0], [5.0, -5.0]]), [0, -100]) == pytest.approx(math.log(2))
    assert math.isnan(negative_log_likelihood(np.array([[0.0, 0.0]]), [-100]))


@pytest.mark.parametrize("scale", [3.0, 0.5])
def test_fit_temperature_recovers_the_scale(scale):
    logits, labels = calibrated_sample()
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.1)
    assert fit_temperature(scale * logits, labels) == pytest.approx(scale, rel=0.1)


def test_fitting_lowers_ece_and_nll_on_overconfident_logits():
    logits, labels = calibrated_sample(seed=1)
    overconfident = 3.0 * logits
    temperature = fit_temperature(overconfident, labels)
    summary = calibration_summary(overconfident, labels, temperature)
    assert summary["nll_after"] < summary["nll_before"]
    assert summary["ece_after"] < summary["ece_before"] / 2
    # temperature never changes the predicted class
    assert (probabilities(overconfident, temperature).argmax(1) == overconfident.argmax(1)).all()


def test_fit_temperature_skips_unseen_rows():
    logits, labels = calibrated_sample(n=3000, seed=2)
    labels_with_unseen = np.concatenate([labels, np.full(500, -100)])
    logits_with_unseen = np.concatenate([logits, np.random.default_rng(3).normal(scale=20.0, size=(500, logits.shape[1]))])
    assert fit_temperature(logits_with_unseen, labels_with_unseen) == pytest.approx(fit_temperature(logits, labels))
    assert fit_temperature(logits[:0], labels[:0]) == 1.0


def test_model_temperature_defaults_to_one():
    assert model_temperature(types.SimpleNamespace()) == 1.0
    assert model_temperature(types.SimpleNamespace(prodcat_temperature=1.7)) == 1.7
    assert model_temperature(types.SimpleNamespace(prodcat_temperature=-2)) == 1.0
    assert model_temperature(types.SimpleNamespace(prodcat_temperature="nonsense")) == 1.0


def test_write_temperature_keeps_the_rest_of_the_config(tmp_path):
    config = {"architectures": ["BertForSequenceClassification"], "id2label": {"0": "A > B"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    write_temperature(str(tmp_path), 1.5)
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored[TEMPERATURE_KEY] == 1.5
    assert stored["id2label"] == {"0": "A > B"}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary file left behind

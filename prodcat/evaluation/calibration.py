"""Temperature scaling: make the model's probabilities match how often it is right.

A single temperature T > 0 divides every logit before the softmax, p = softmax(z / T)
(Guo et al., 2017, "On Calibration of Modern Neural Networks"). T is fitted on validation data
by minimising the negative log-likelihood and stored in the saved model's ``config.json`` as
``prodcat_temperature``; everywhere prodcat turns logits into probabilities it uses
:func:`probabilities` with :func:`model_temperature`. A model without a stored temperature
behaves as T = 1. T changes confidences only, never the predicted class (argmax is unchanged).

Formulas (N examples, logits z_i, true class y_i, probabilities p_i = softmax(z_i / T)):

* ``NLL(T)`` = -(1/N) sum_i log p_i[y_i]
* ``ECE`` (expected calibration error, M = 15 equal-width bins B_m = ((m-1)/M, m/M] of the
  confidence c_i = max_k p_i[k]; c_i = 0 falls in the first bin):
  ECE = sum_m (|B_m| / N) * |acc(B_m) - conf(B_m)|, acc(B_m) = mean of [argmax p_i == y_i] over
  B_m and conf(B_m) = mean of c_i over B_m. Rows whose label is negative (a category unseen in
  training) count as wrong.

Example:
    >>> t = fit_temperature(val_logits, val_label_ids)          # e.g. 1.4 for an over-confident model
    >>> ece = expected_calibration_error(probabilities(test_logits, t), test_label_ids)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.special

# The key is owned with the rest of the output folder's format by prodcat.core.artifacts; re-exported here.
from prodcat.core.artifacts import TEMPERATURE_KEY as TEMPERATURE_KEY
from prodcat.core.artifacts import read_temperature

#: Search range of the temperature (log-space bounded minimisation).
TEMPERATURE_BOUNDS = (0.05, 20.0)


def model_temperature(config: Any) -> float:
    """``config.prodcat_temperature`` as a float, or 1.0 when absent or unusable (then with a warning).

    Example:
        >>> model_temperature(model.config)  # a model calibrated by prodcat train
        1.4
    """
    temperature = read_temperature(config)
    return 1.0 if temperature is None else temperature


def probabilities(logits: np.ndarray, temperature: float = 1.0, dtype: type = np.float64) -> np.ndarray:
    """Softmax of ``logits / temperature`` along the last axis, computed stably in ``dtype``.

    float64 (the default) for fitting and scoring the temperature; the predictor asks for float32, the
    dtype of its logits, to keep large batches cheap.

    Example:
        >>> probabilities(np.array([[2.0, 0.0]]), temperature=2.0).round(3)
        array([[0.731, 0.269]])
    """
    scaled = np.asarray(logits, dtype=dtype) / np.dtype(dtype).type(temperature)
    return scipy.special.softmax(scaled, axis=-1)


def _valid(logits: np.ndarray, labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"logits {logits.shape} must be [N, classes] with one label per row ({len(labels)} labels)")
    keep = (labels >= 0) & (labels < logits.shape[1])
    return logits[keep], labels[keep]


def negative_log_likelihood(logits: np.ndarray, labels: Sequence[int], temperature: float = 1.0) -> float:
    """Mean NLL of the true classes under softmax(logits / T); rows with a negative label are skipped.

    Example:
        >>> round(negative_log_likelihood(np.array([[0.0, 0.0]]), [0]), 4)
        0.6931
    """
    logits, labels = _valid(logits, labels)
    if len(labels) == 0:
        return float("nan")
    scaled = logits / float(temperature)
    log_norm = np.logaddexp.reduce(scaled, axis=1)
    return float(np.mean(log_norm - scaled[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: Sequence[int]) -> float:
    """Temperature minimising the validation NLL (bounded search on log T over TEMPERATURE_BOUNDS).

    NLL is convex in 1/T, hence unimodal in log T, so a bounded scalar search finds the optimum.
    Rows with a negative label (unseen categories) are skipped; with no usable rows the result is 1.0.

    Example:
        >>> fit_temperature(3.0 * calibrated_logits, labels)   # 3x too confident -> about 3.0
    """
    from scipy.optimize import minimize_scalar

    logits, labels = _valid(logits, labels)
    if len(labels) == 0:
        return 1.0
    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, math.exp(log_t)),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(math.exp(result.x))


def reliability_bins(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 15) -> dict[str, list]:
    """Per-bin counts, mean confidence and accuracy for a reliability diagram (empty bins: NaN).

    Bins are equal-width: bin m (1-based) holds confidences in ((m-1)/M, m/M], 0 in the first.
    """
    conf = np.asarray(confidences, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right-closed bins: ceil(c * M) - 1, clipped so c = 0 lands in bin 0 and c = 1 in bin M-1
    index = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(index, weights=hit, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(counts > 0, conf_sum / np.maximum(counts, 1), np.nan)
        accuracy = np.where(counts > 0, hit_sum / np.maximum(counts, 1), np.nan)
    return {
        "lower": edges[:-1].tolist(),
        "upper": edges[1:].tolist(),
        "count": counts.astype(int).tolist(),
        "confidence": mean_conf.tolist(),
        "accuracy": accuracy.tolist(),
    }


def expected_calibration_error(probs: np.ndarray, labels: Sequence[int], n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width confidence bins (formula in the module docstring).

    Example:
        >>> expected_calibration_error(np.array([[0.9, 0.1], [0.9, 0.1]]), [0, 1])   # 90% sure, 50% right
        0.4
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probs {probs.shape} must be [N, classes] with one label per row ({len(labels)} labels)")
    if len(labels) == 0:
        return float("nan")
    bins = reliability_bins(probs.max(axis=1), probs.argmax(axis=1) == labels, n_bins)
    counts = np.asarray(bins["count"], dtype=np.float64)
    gaps = np.abs(np.nan_to_num(np.asarray(bins["accuracy"]) - np.asarray(bins["confidence"])))
    return float(np.sum(counts / counts.sum() * gaps))


def label_ids(label_paths: Sequence[str], label2id: dict[str, int]) -> np.ndarray:
    """Class ids of category paths; paths the model does not know become -1."""
    return np.array([label2id.get(path, -1) for path in label_paths], dtype=np.int64)


def calibration_summary(logits: np.ndarray, labels: Sequence[int], temperature: float, n_bins: int = 15) -> dict[str, float]:
    """ECE and NLL at T = 1 and at ``temperature`` on the rows with a known label."""
    logits, labels = _valid(logits, labels)
    return {
        "temperature": float(temperature),
        "ece_before": expected_calibration_error(probabilities(logits), labels, n_bins),
        "ece_after": expected_calibration_error(probabilities(logits, temperature), labels, n_bins),
        "nll_before": negative_log_likelihood(logits, labels),
        "nll_after": negative_log_likelihood(logits, labels, temperature),
        "num_examples": int(len(labels)),
    }



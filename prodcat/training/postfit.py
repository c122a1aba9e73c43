"""Post-fit steps of a training run: what is fitted on validation outputs after the transformer is trained."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence

import numpy as np
import torch

from prodcat.core.errors import ProdcatError
from prodcat.core.io import write_json
from prodcat.evaluation.calibration import (
    TEMPERATURE_KEY,
    calibration_summary,
    fit_temperature,
    label_ids,
    model_temperature,
)
from prodcat.evaluation.metrics.taxonomy_metrics import taxonomy_scores
from prodcat.evaluation.report import write_report
from prodcat.inference.batching import predict_logits
from prodcat.inference.ngram import SUBDIR, NgramEnsemble, carry_over_ensemble, fit_ensemble_for_model, has_ensemble
from prodcat.modeling.loading import classifier_layer, load_saved_model
from prodcat.training.config import ProdcatTrainingArguments
from prodcat.training.refit import HoldoutRun

logger = logging.getLogger(__name__)

#: Strengths tried for the prior correction; 0 (no change) is always a candidate.
PRIOR_CORRECTION_TAUS = (0.0, 0.25, 0.5, 0.75, 1.0)


def write_temperature(model_dir: str, temperature: float) -> None:
    """Store ``temperature`` as ``prodcat_temperature`` in ``model_dir/config.json`` (atomic rewrite)."""
    path = os.path.join(model_dir, "config.json")
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    config[TEMPERATURE_KEY] = float(temperature)
    write_json(path, config)


def calibrate_model_dir(
    model_dir: str,
    texts: Sequence[str],
    label_paths: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = 64,
    n_bins: int = 15,
    model=None,
    tokenizer=None,
    logits: np.ndarray | None = None,
) -> dict[str, float]:
    """Fit a temperature on labelled validation texts and store it in ``model_dir/config.json``.

    ``model``/``tokenizer`` may be passed when already in memory (e.g. right after training; the
    model's ``config.prodcat_temperature`` is then updated too), otherwise they are loaded from
    ``model_dir``. ``logits`` (the model's, on all of ``texts``) skips inference when they were
    already computed. Rows whose category the model does not know are skipped. Returns
    ``{"temperature", "ece_before", "ece_after", "nll_before", "nll_after", "num_examples"}``;
    with no usable rows nothing is written and ``"skipped"`` says why (temperature stays 1.0).

    Example:
        >>> summary = calibrate_model_dir("outputs/model", val.texts, val.labels)
        >>> summary["ece_after"] <= summary["ece_before"]
        True
    """

    if model is None or tokenizer is None:
        model, tokenizer = load_saved_model(model_dir)
    labels = label_ids(label_paths, dict(model.config.label2id))
    known = labels >= 0
    if not known.any():
        message = "no validation rows with a category seen in training"
        logger.warning("calibration skipped: %s; the model keeps temperature 1.0", message)
        return {"temperature": 1.0, "num_examples": 0, "skipped": message}
    if logits is None:
        texts = [t for t, k in zip(texts, known) if k]
        logits = predict_logits(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    else:
        logits = np.asarray(logits)[known]
    temperature = fit_temperature(logits, labels[known])
    summary = calibration_summary(logits, labels[known], temperature, n_bins)
    write_temperature(model_dir, temperature)
    setattr(model.config, TEMPERATURE_KEY, temperature)
    logger.info(
        "Calibration: temperature %.3f on %d validation rows; ECE %.4f -> %.4f, NLL %.4f -> %.4f",
        temperature,
        summary["num_examples"],
        summary["ece_before"],
        summary["ece_after"],
        summary["nll_before"],
        summary["nll_after"],
    )
    return summary


def tune_prior_correction(
    logits: np.ndarray,
    references: list[str],
    label_names: list[str],
    train_counts: np.ndarray,
    metric: str = "macro_f1",
    taus: tuple[float, ...] = PRIOR_CORRECTION_TAUS,
) -> tuple[float, dict[float, float]]:
    """Pick the post-hoc logit adjustment strength tau that maximises ``metric`` on validation.

    Logit adjustment (Menon et al., 2021): predict argmax_c (z_c - tau * log pi_c), where pi_c is the
    training frequency of class c. A model trained on a long-tailed catalogue is biased towards
    frequent categories; subtracting tau * log pi_c trades a little head-class accuracy for recall
    on rare categories (macro-F1). Because it is a per-class constant, it folds into the
    classifier's bias and the saved model stays a plain sequence classifier.

    Returns ``(best_tau, {tau: metric})``; ties keep the smaller tau.
    """
    log_prior = np.log(np.maximum(train_counts, 1) / np.maximum(train_counts, 1).sum())
    scores = {}
    for tau in taus:
        predicted = [label_names[i] for i in (logits - tau * log_prior).argmax(-1)]
        scores[tau] = taxonomy_scores(predicted, references)[metric]
    best = max(taus, key=lambda tau: (scores[tau], -tau))
    return best, scores


def apply_prior_correction(model, train_counts: np.ndarray, tau: float) -> None:
    """Fold ``-tau * log(prior)`` into the classifier bias and record tau in the config."""
    if tau:
        log_prior = np.log(np.maximum(train_counts, 1) / np.maximum(train_counts, 1).sum())
        layer = classifier_layer(model)
        with torch.no_grad():
            layer.bias -= torch.as_tensor(tau * log_prior, dtype=layer.bias.dtype, device=layer.bias.device)
    model.config.prodcat_prior_correction = float(tau)


def ngram_step(
    enabled: bool,
    training_args: ProdcatTrainingArguments,
    model,
    tokenizer,
    splits,
    test_table,
    holdout: HoldoutRun | None,
    max_length: int,
    validation_logits: np.ndarray | None,
    test_logits: np.ndarray | None,
) -> dict[str, float] | None:
    """Fit the n-gram model on this run's validation split, or carry the held-out run's over; its figures.

    None when no n-gram model is saved: ``--ngram_ensemble false``, no validation rows to choose its
    weight, or data it cannot be fitted on (prediction then uses the transformer alone). An ``ngram/``
    folder left by an earlier run in the same output folder is removed first, so it never outlives its model.
    """

    output_dir = training_args.output_dir
    shutil.rmtree(os.path.join(output_dir, SUBDIR), ignore_errors=True)
    if not enabled:
        return None
    start = time.time()
    try:
        if splits.validation is not None:
            figures = fit_ensemble_for_model(
                output_dir, model, tokenizer, splits, test_table, batch_size=training_args.per_device_eval_batch_size,
                max_length=max_length, seed=training_args.seed, validation_logits=validation_logits, test_logits=test_logits,
            )
        elif holdout is not None and has_ensemble(holdout.directory):
            figures = carry_over_ensemble(
                holdout.directory, output_dir, splits.label_names, holdout.ngram_validation, test_table, test_logits
            )
        else:
            logger.info("No validation rows to choose the n-gram model's weight: none fitted; prediction uses the transformer alone")
            return None
    except ProdcatError as err:
        logger.warning("No n-gram model: %s; prediction uses the transformer alone", err)
        return None
    figures["fit_seconds"] = time.time() - start
    return figures


def write_test_report(output_dir: str, model, test_table, test_logits: np.ndarray, report_dir: str) -> dict:
    """The evaluation report of the test file, scored on the default prediction path (the ensemble when
    ``ngram/`` was saved, else the transformer), as ``prodcat evaluate`` scores it."""

    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    scores, temperature, predictor = test_logits, model_temperature(model.config), "transformer"
    if has_ensemble(output_dir):
        ensemble = NgramEnsemble.load(output_dir, labels)
        scores, temperature, predictor = ensemble.scores(test_table.texts, test_logits), ensemble.temperature, "ensemble"
    return write_report(
        scores, labels, test_table.texts, test_table.labels, report_dir,
        temperature=temperature, predictor=predictor, source_rows=test_table.source_rows,
    )

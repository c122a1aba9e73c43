"""Post-fit steps of a training run: what is fitted on validation outputs after the transformer is trained."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from prodcat.core.artifacts import set_prior_correction, set_temperature, write_temperature
from prodcat.core.errors import ProdcatError
from prodcat.data.splits import LABEL_PATH, TEXT, Splits, decode_label_id
from prodcat.data.tables import ProductTable
from prodcat.evaluation.calibration import (
    calibration_summary,
    fit_temperature,
    label_ids,
    model_temperature,
)
from prodcat.evaluation.metrics.taxonomy_metrics import taxonomy_scores
from prodcat.evaluation.report import write_report
from prodcat.inference import batching
from prodcat.inference.batching import predict_logits
from prodcat.inference.ngram import SUBDIR, NgramEnsemble, carry_over_ensemble, fit_ensemble_for_model, has_ensemble
from prodcat.modeling.head import classifier_layer
from prodcat.modeling.loading import load_saved_model
from prodcat.training.refit import HoldoutRun

logger = logging.getLogger(__name__)

#: Strengths tried for the prior correction; 0 (no change) is always a candidate.
PRIOR_CORRECTION_TAUS = (0.0, 0.25, 0.5, 0.75, 1.0)


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
    set_temperature(model.config, temperature)
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
    set_prior_correction(model.config, tau)






# --------------------------------------------------------------------------------------------
# The post-fit steps behind one interface
# --------------------------------------------------------------------------------------------


@dataclass
class PostFitContext:
    """What the post-fit steps read: the trained model, the run's data, and where the outputs go.

    The transformer's logits on the validation and test rows are computed once, when a step first asks.
    """

    output_dir: str
    model: Any
    tokenizer: Any
    splits: Splits
    test_table: ProductTable | None
    label_counts: np.ndarray
    metric: str
    batch_size: int
    max_length: int
    seed: int
    trainer: Any = None
    eval_dataset: Any = None
    _logits: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def logits(self, split: str) -> np.ndarray | None:
        """The transformer's logits on ``"validation"`` or ``"test"`` (None when the run has no such rows)."""
        if split not in self._logits:
            texts = self.splits.validation[TEXT][:] if split == "validation" and self.splits.validation is not None else None
            if split == "test" and self.test_table is not None and len(self.test_table.texts):
                texts = self.test_table.texts
            if texts is None:
                return None
            # Looked up on the module at call time, so a test can count the passes.
            self._logits[split] = batching.predict_logits(
                self.model, self.tokenizer, list(texts), batch_size=self.batch_size, max_length=self.max_length
            )
        return self._logits[split]


class PostFitStep:
    """A setting fitted after training on the validation outputs, or carried over from the held-out run.

    Subclasses give ``name`` (its key in the run's results) and both ways of getting the value; see
    :func:`run_post_fit` for which one runs.
    """

    name = ""

    def fit(self, context: PostFitContext) -> dict | None:
        """Fit on this run's validation split; the figures to report, or None when nothing was fitted."""
        raise NotImplementedError

    def carry_over(self, context: PostFitContext, holdout: HoldoutRun) -> dict | None:
        """Take the value the held-out run of ``--refit_on_all_rows`` fitted (this run has no validation rows)."""
        raise NotImplementedError

    def without_validation(self, context: PostFitContext) -> dict | None:
        """Neither validation rows nor a held-out run: the neutral setting stays."""
        return None


def run_post_fit(steps: Sequence[PostFitStep], context: PostFitContext, holdout: HoldoutRun | None) -> dict[str, dict]:
    """Run each step, fitted on this run's validation split or carried over from the held-out run.

    The one place that decides between the two for ``--refit_on_all_rows``. Returns ``{step.name: figures}``.

    Example:
        >>> run_post_fit([TemperatureStep(), NgramStep()], context, holdout=None)["calibration"]["temperature"]
        1.37
    """
    figures = {}
    for step in steps:
        if context.splits.validation is not None:
            found = step.fit(context)
        elif holdout is not None:
            found = step.carry_over(context, holdout)
        else:
            found = step.without_validation(context)
        if found is not None:
            figures[step.name] = found
    return figures


class PriorCorrectionStep(PostFitStep):
    """The logit adjustment for rare categories, folded into the classifier bias (before the model is saved)."""

    name = "prior_correction"

    def fit(self, context: PostFitContext) -> dict:
        # Every process predicts validation through the Trainer, so all of them fold in the same tau.
        prediction = context.trainer.predict(context.eval_dataset, metric_key_prefix="prior")
        names, unseen = context.splits.label_names, context.splits.unseen_names
        references = [decode_label_id(int(i), names, unseen) for i in prediction.label_ids]
        tau, scores = tune_prior_correction(prediction.predictions, references, names, context.label_counts, context.metric)
        logger.info(
            "Prior correction: validation %s by tau %s; chose tau=%s", context.metric, {t: round(v, 4) for t, v in scores.items()}, tau
        )
        apply_prior_correction(context.model, context.label_counts, tau)
        return {"tau": tau}

    def carry_over(self, context: PostFitContext, holdout: HoldoutRun) -> dict:
        apply_prior_correction(context.model, context.label_counts, holdout.prior_tau)
        return {"tau": holdout.prior_tau}


class TemperatureStep(PostFitStep):
    """Temperature scaling, stored as ``prodcat_temperature`` in ``config.json``."""

    name = "calibration"

    def fit(self, context: PostFitContext) -> dict:
        return calibrate_model_dir(
            context.output_dir, context.splits.validation[TEXT][:], context.splits.validation[LABEL_PATH][:],
            batch_size=context.batch_size, max_length=context.max_length, model=context.model, tokenizer=context.tokenizer,
            logits=context.logits("validation"),
        )

    def carry_over(self, context: PostFitContext, holdout: HoldoutRun) -> dict | None:
        if not holdout.calibration:
            return None
        write_temperature(context.output_dir, holdout.temperature)
        set_temperature(context.model.config, holdout.temperature)
        return holdout.calibration


class NgramStep(PostFitStep):
    """The n-gram model and its pooling weight (``ngram/``); None leaves prediction to the transformer alone."""

    name = "ngram_ensemble"

    def fit(self, context: PostFitContext) -> dict | None:
        return self._timed(
            lambda: fit_ensemble_for_model(
                context.output_dir, context.model, context.tokenizer, context.splits, context.test_table,
                batch_size=context.batch_size, max_length=context.max_length, seed=context.seed,
                validation_logits=context.logits("validation"), test_logits=context.logits("test"),
            )
        )

    def carry_over(self, context: PostFitContext, holdout: HoldoutRun) -> dict | None:
        if not has_ensemble(holdout.directory):
            return self.without_validation(context)
        return self._timed(
            lambda: carry_over_ensemble(
                holdout.directory, context.output_dir, context.splits.label_names, holdout.ngram_validation,
                context.test_table, context.logits("test"),
            )
        )

    def without_validation(self, context: PostFitContext) -> None:
        logger.info("No validation rows to choose the n-gram model's weight: none fitted; prediction uses the transformer alone")
        return None

    @staticmethod
    def _timed(fit: Callable[[], dict]) -> dict | None:
        start = time.time()
        try:
            figures = fit()
        except ProdcatError as err:  # data it cannot be fitted on: the transformer alone still works
            logger.warning("No n-gram model: %s; prediction uses the transformer alone", err)
            return None
        figures["fit_seconds"] = time.time() - start
        return figures


def remove_stale_ngram(output_dir: str) -> None:
    """Remove an ``ngram/`` left by an earlier run in the same folder, so it never outlives its transformer."""
    shutil.rmtree(os.path.join(output_dir, SUBDIR), ignore_errors=True)


def write_test_report(context: PostFitContext, report_dir: str) -> dict | None:
    """The evaluation report of the test file, scored on the default prediction path (the ensemble when
    ``ngram/`` was saved, else the transformer), as ``prodcat evaluate`` scores it; None without test rows."""
    test_logits = context.logits("test")
    if test_logits is None:
        return None
    model, table = context.model, context.test_table
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    scores, temperature, predictor = test_logits, model_temperature(model.config), "transformer"
    if has_ensemble(context.output_dir):
        ensemble = NgramEnsemble.load(context.output_dir, labels)
        scores, temperature, predictor = ensemble.scores(table.texts, test_logits), ensemble.temperature, "ensemble"
    return write_report(
        scores, labels, table.texts, table.labels, report_dir, temperature=temperature, predictor=predictor, source_rows=table.source_rows
    )

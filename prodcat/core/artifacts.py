"""The output folder of a training run: its file names, ``training_summary.json`` and prodcat's keys in ``config.json``.

This module is the only code that reads or writes ``training_summary.json`` and the ``prodcat_*`` keys of
``config.json``; everything else goes through :class:`TrainingSummary`, :func:`read_summary`,
:func:`write_summary` and the ``*_temperature`` helpers. The format on disk is plain JSON (sorted keys,
indented) and stays readable both ways: summaries of older runs load with defaults for the keys they lack,
and keys this version does not know are kept, so rewriting a summary loses nothing.

Layout of an output folder (``prodcat train --output_dir DIR``)::

    DIR/config.json             the transformer's config; id2label, prodcat_temperature, prodcat_prior_correction
    DIR/training_summary.json   what the run was and how it scored (TrainingSummary); written last
    DIR/calibration.json        the temperature fit on validation and its before/after figures
    DIR/audit.json              the data audit (prodcat.data.audit)
    DIR/{train,eval,test}_results.json   Trainer.save_metrics
    DIR/report/                 the test report (prodcat.evaluation.report)
    DIR/ngram/                  the n-gram model pooled with the transformer (prodcat.inference.ngram)
    DIR/onnx/                   ONNX exports (prodcat.inference.onnx_backend)

Example:
    >>> summary = read_summary("outputs/model")
    >>> summary.max_seq_length, summary.text_columns
    (64, ['description'])
    >>> write_temperature("outputs/model", 1.4)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prodcat.core.errors import ProdcatError
from prodcat.core.io import write_json

logger = logging.getLogger(__name__)

#: The transformer's config (``save_pretrained``), with prodcat's keys below.
CONFIG_FILE = "config.json"
#: What the run was and how it scored; the last file a finished run writes.
SUMMARY_FILE = "training_summary.json"
#: The softmax temperature fit on validation, with ECE / NLL before and after.
CALIBRATION_FILE = "calibration.json"
#: The data audit of the training files.
AUDIT_FILE = "audit.json"
#: The test report (metrics.json, per-class tables, plots).
REPORT_DIR = "report"
#: The n-gram model that prodcat pools with the transformer.
NGRAM_DIR = "ngram"
#: ONNX exports of the transformer.
ONNX_DIR = "onnx"

#: Fitted softmax temperature T (probabilities are softmax(logits / T)).
TEMPERATURE_KEY = "prodcat_temperature"
#: Strength tau of the prior correction folded into the classifier bias (0: none).
PRIOR_CORRECTION_KEY = "prodcat_prior_correction"
#: A back-off threshold chosen for the model by its publisher (read by the model card; prodcat writes none).
BACKOFF_THRESHOLD_KEY = "prodcat_backoff_threshold"

#: Prediction paths named in ``predictors`` and ``default_predictor``.
PREDICTORS = ("transformer", "ensemble")
#: Keys of older summaries and the field that replaced them.
_RENAMED = {"singleton_classes": "train_only_classes"}
#: Keys written only when set (a plain run's summary has no ``refit_on_all_rows``).
_OPTIONAL = frozenset({"refit_on_all_rows"})
#: Fields holding a JSON object or array: a value of another type is dropped on loading, not trusted.
_CONTAINERS: dict[str, type] = {
    "text_columns": list,
    "unseen_rows": dict,
    "label_counts": dict,
    "widget_examples": list,
    "unseen_categories": list,
    "calibration": dict,
    "predictors": dict,
    "hyperparameters": dict,
    "results": dict,
    "refit_on_all_rows": dict,
}


@dataclass
class TrainingSummary:
    """``training_summary.json``: the settings, data sizes and scores of one training run.

    Every field is a top-level key of the file. Nested parts (``hyperparameters``, ``results``,
    ``predictors``, ``calibration``) stay plain dicts, as training produces them; the properties below
    read the values other modules need.

    Example:
        >>> summary = TrainingSummary.from_dict({"num_train": 900, "hyperparameters": {"max_seq_length": 48}})
        >>> summary.num_train, summary.max_seq_length, summary.num_test
        (900, 48, 0)
    """

    #: Hub id or folder of the model fine-tuned (None: unknown, e.g. a summary written by hand).
    base_model: str | None = None
    #: True when it was the all-MiniLM-L6-v2 copy bundled with prodcat.
    base_model_is_embedded_default: bool = False
    #: Base names of the data files (never full paths).
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    text_columns: list[str] = field(default_factory=list)
    label_column: str | None = None
    #: Share of train carved out as validation (None with a validation file or no split).
    validation_split: float | None = None
    #: Training rows (the user's, without category-name examples); None in a summary without data sizes.
    num_train: int | None = None
    num_validation: int = 0
    num_test: int = 0
    #: Categories with too few rows to be held out, kept whole in train.
    train_only_classes: int = 0
    #: The per-category row count the validation split drew from (None without a split).
    validation_min_category_rows: int | None = None
    #: Rows per split whose category never occurs in training, e.g. ``{"validation": 0, "test": 2}``.
    unseen_rows: dict[str, int] = field(default_factory=dict)
    #: Training rows per category path.
    label_counts: dict[str, int] = field(default_factory=dict)
    #: Up to five validation texts (the model card's widget).
    widget_examples: list[str] = field(default_factory=list)
    unseen_categories: list[str] = field(default_factory=list)
    dataset_name: str | None = None
    #: ``calibration.json``'s figures, or None when calibration did not run.
    calibration: dict[str, Any] | None = None
    #: ``"ensemble"`` or ``"transformer"``: what Categorizer and ``prodcat predict`` use by default.
    default_predictor: str = "transformer"
    #: ``{"transformer": {"validation_accuracy": ...}, "ensemble": {...}}`` (see :meth:`predictor_scores`).
    predictors: dict[str, dict[str, float]] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    #: ``{"train": {...}, "eval": {...}, "test": {...}, "calibration": ..., "ngram_ensemble": ..., "report": ...}``.
    results: dict[str, Any] = field(default_factory=dict)
    #: With ``--refit_on_all_rows``: ``holdout_dir``, ``holdout_num_train``, ``holdout_train_wall_seconds``.
    refit_on_all_rows: dict[str, Any] | None = None
    #: Keys this version does not know, written back unchanged.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The summary's top-level keys, in the order training builds them (``extra`` excluded)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> TrainingSummary:
        """A summary from the parsed JSON; missing keys get their defaults, renamed ones their new name.

        A nested part of the wrong type (a list where a dict belongs) is dropped rather than trusted.

        Example:
            >>> TrainingSummary.from_dict({"singleton_classes": 3, "note": "kept"}).train_only_classes
            3
        """
        payload = dict(payload)
        for old, new in _RENAMED.items():
            if old in payload:
                value = payload.pop(old)
                payload.setdefault(new, value)
        known = set(cls.field_names())
        values = {key: payload[key] for key in known if key in payload}
        for name, expected in _CONTAINERS.items():
            if name in values and not isinstance(values[name], expected):
                if values[name] is not None:
                    logger.warning("training summary: ignoring %s=%r (not a %s)", name, values[name], expected.__name__)
                del values[name]
        if "default_predictor" not in values:
            # Summaries from before the key: the run pooled when it recorded the n-gram model's figures.
            values["default_predictor"] = "ensemble" if (values.get("results") or {}).get("ngram_ensemble") else "transformer"
        extra = {key: value for key, value in payload.items() if key not in known}
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``training_summary.json`` (unknown keys of a loaded summary included).

        Example:
            >>> "refit_on_all_rows" in TrainingSummary(num_train=10).to_dict()
            False
        """
        payload = dict(self.extra)
        for name in self.field_names():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            payload[name] = value
        return payload

    def result(self, name: str) -> dict[str, Any]:
        """One entry of ``results`` (``"train"``, ``"eval"``, ``"test"``, ``"ngram_ensemble"``...), or {}.

        Example:
            >>> TrainingSummary(results={"train": {"train_wall_seconds": 81.5}}).result("train")["train_wall_seconds"]
            81.5
        """
        value = self.results.get(name)
        return value if isinstance(value, dict) else {}

    @property
    def max_seq_length(self) -> int | None:
        """Tokens per text the model was trained with, or None when the summary does not say."""
        value = self.hyperparameters.get("max_seq_length")
        return int(value) if _is_number(value) and value > 0 else None

    @property
    def seed(self) -> int | None:
        """The run's random seed, or None when the summary does not say."""
        value = self.hyperparameters.get("seed")
        return int(value) if _is_number(value) else None

    @property
    def num_train_epochs(self) -> float | None:
        """Epochs trained (the number chosen from the data when ``--num_train_epochs 0``), or None."""
        value = self.hyperparameters.get("num_train_epochs")
        return float(value) if _is_number(value) else None

    def predictor_scores(self) -> dict[str, dict[str, float]]:
        """Validation and test accuracy / macro-F1 of each prediction path, finite numbers only.

        From ``predictors``; summaries from before that key have the figures in ``results.ngram_ensemble``
        (validation of both paths, test of the pooled one).

        Example:
            >>> TrainingSummary(predictors={"transformer": {"test_accuracy": 0.7}}).predictor_scores()
            {'transformer': {'test_accuracy': 0.7}, 'ensemble': {}}
        """
        metrics = ("accuracy", "macro_f1")
        if self.predictors:
            return {name: _finite_scores(self.predictors.get(name)) for name in PREDICTORS}
        old = self.result("ngram_ensemble")
        found = {
            name: _finite_scores({f"validation_{m}": old.get(f"validation_{name}_{m}") for m in metrics}) for name in PREDICTORS
        }
        found["ensemble"].update(_finite_scores({f"test_{m}": old.get(f"test_{m}") for m in metrics}))
        return found


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _finite_scores(raw: Any) -> dict[str, float]:
    """The finite numbers of a mapping as floats (None, booleans, NaN and anything else dropped)."""
    if not isinstance(raw, Mapping):
        return {}
    return {key: float(value) for key, value in raw.items() if _is_number(value)}


def summary_path(model_dir: str) -> str:
    """Where a run's summary lives in ``model_dir``.

    Example:
        >>> summary_path("outputs/model")
        'outputs/model/training_summary.json'
    """
    return os.path.join(model_dir, SUMMARY_FILE)


def has_summary(model_dir: str) -> bool:
    """True when ``model_dir`` holds a summary, i.e. a run finished there (the summary is written last).

    Example:
        >>> has_summary("outputs/model/holdout")
        True
    """
    return os.path.isfile(summary_path(model_dir))


def read_summary(model_dir: str, *, strict: bool = False) -> TrainingSummary | None:
    """The summary of the run in ``model_dir``; None when there is none (a model prodcat did not train).

    An unreadable file is logged and read as None, or with ``strict`` raised as a ProdcatError (so is a
    missing one then).

    Example:
        >>> read_summary("outputs/model").default_predictor
        'ensemble'
    """
    path = summary_path(model_dir)
    if not os.path.isfile(path):
        if strict:
            raise ProdcatError(f"{path}: no training summary (the run there did not finish)")
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
        if not isinstance(payload, dict):
            raise ValueError(f"a JSON {type(payload).__name__}, not an object")
    except (OSError, ValueError) as err:
        if strict:
            raise ProdcatError(f"{path}: unreadable training summary ({err})") from None
        logger.warning("%s: unreadable training summary ignored (%s)", path, err)
        return None
    return TrainingSummary.from_dict(payload)


def write_summary(model_dir: str, summary: TrainingSummary) -> str:
    """Write ``summary`` to ``model_dir/training_summary.json`` atomically; returns the path.

    Example:
        >>> write_summary("outputs/model", TrainingSummary(num_train=900))
        'outputs/model/training_summary.json'
    """
    path = summary_path(model_dir)
    write_json(path, summary.to_dict())
    return path


# --------------------------------------------------------------------------------------------
# prodcat's keys in config.json
# --------------------------------------------------------------------------------------------


def _config_value(config: Any, key: str) -> Any:
    """``key`` of a config given as the parsed ``config.json`` (a mapping) or as a ``PretrainedConfig``."""
    return config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)


def read_temperature(config: Any) -> float | None:
    """The stored temperature T, or None when there is none or it is not a positive number (then with a warning).

    ``config``: a ``PretrainedConfig`` or the parsed ``config.json``.

    Example:
        >>> read_temperature({"prodcat_temperature": 1.4}), read_temperature({})
        (1.4, None)
    """
    value = _config_value(config, TEMPERATURE_KEY)
    if value is None:
        return None
    try:
        temperature = float(value)
    except (TypeError, ValueError):
        temperature = float("nan")
    if not math.isfinite(temperature) or temperature <= 0:
        logger.warning("ignoring invalid %s=%r in the model config; using 1.0", TEMPERATURE_KEY, value)
        return None
    return temperature


def set_temperature(config: Any, temperature: float) -> None:
    """Record T on an in-memory ``PretrainedConfig`` (``save_pretrained`` then writes it to ``config.json``).

    Example:
        >>> set_temperature(model.config, 1.4)
    """
    setattr(config, TEMPERATURE_KEY, float(temperature))


def write_temperature(model_dir: str, temperature: float) -> None:
    """Store T as ``prodcat_temperature`` in ``model_dir/config.json``, keeping the rest (atomic rewrite).

    Example:
        >>> write_temperature("outputs/model", 1.4)
    """
    path = os.path.join(model_dir, CONFIG_FILE)
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    config[TEMPERATURE_KEY] = float(temperature)
    write_json(path, config)


def set_prior_correction(config: Any, tau: float) -> None:
    """Record the prior-correction strength on an in-memory ``PretrainedConfig`` (saved with the model).

    Example:
        >>> set_prior_correction(model.config, 0.5)
    """
    setattr(config, PRIOR_CORRECTION_KEY, float(tau))


def read_backoff_threshold(config: Any) -> float | None:
    """A back-off threshold stored in the config, or None when absent or not a number in (0, 1].

    Example:
        >>> read_backoff_threshold({"prodcat_backoff_threshold": 0.6})
        0.6
    """
    value = _config_value(config, BACKOFF_THRESHOLD_KEY)
    try:
        value = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and 0.0 < value <= 1.0 else None


__all__ = [
    "AUDIT_FILE",
    "BACKOFF_THRESHOLD_KEY",
    "CALIBRATION_FILE",
    "CONFIG_FILE",
    "NGRAM_DIR",
    "ONNX_DIR",
    "PREDICTORS",
    "PRIOR_CORRECTION_KEY",
    "REPORT_DIR",
    "SUMMARY_FILE",
    "TEMPERATURE_KEY",
    "TrainingSummary",
    "has_summary",
    "read_backoff_threshold",
    "read_summary",
    "read_temperature",
    "set_prior_correction",
    "set_temperature",
    "summary_path",
    "write_summary",
    "write_temperature",
]

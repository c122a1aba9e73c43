"""Building a run's :class:`~prodcat.core.artifacts.TrainingSummary` from its arguments, splits and results.

prodcat.core.artifacts owns the file (its name, format and reading); this module decides what a finished
training run puts in it.

Example:
    >>> summary = training_summary(model_args, data_args, training_args, model_path, splits, results)
    >>> write_summary(training_args.output_dir, summary)
    'outputs/model/training_summary.json'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from prodcat.core.artifacts import TrainingSummary
from prodcat.data.splits import TEXT, Splits, label_counts
from prodcat.training.config import DataArguments, ModelArguments, ProdcatTrainingArguments
from prodcat.training.trainer import selection_metric

#: Hub id recorded when no ``--model_name_or_path`` was given (the embedded copy of this model is used).
EMBEDDED_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: Rows a category needs to give rows to a validation split carved from train (the summary keeps the key for
#: readers of summaries from when it was a setting).
VALIDATION_MIN_CATEGORY_ROWS = 2


def predictor_scores(results: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Validation and test accuracy / macro-F1 of each prediction path (``transformer``, ``ensemble``).

    Example:
        >>> predictor_scores({"test": {"test_accuracy": 0.7, "test_macro_f1": 0.5}})
        {'transformer': {'test_accuracy': 0.7, 'test_macro_f1': 0.5}}
    """
    transformer = {
        f"{split}_{metric}": float(results[key][f"{prefix}_{metric}"])
        for split, key, prefix in (("validation", "eval", "eval"), ("test", "test", "test"))
        for metric in ("accuracy", "macro_f1")
        if f"{prefix}_{metric}" in (results.get(key) or {})
    }
    paths = {"transformer": transformer}
    ngram = results.get("ngram_ensemble") or {}
    if ngram:
        names = {"validation_accuracy": "validation_ensemble_accuracy", "validation_macro_f1": "validation_ensemble_macro_f1",
                 "test_accuracy": "test_accuracy", "test_macro_f1": "test_macro_f1"}
        paths["ensemble"] = {name: float(ngram[key]) for name, key in names.items() if key in ngram}
    return paths


def training_summary(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: ProdcatTrainingArguments,
    model_path: str,
    splits: Splits,
    results: Mapping[str, Any],
) -> TrainingSummary:
    """What a model card needs to know about a run, without any token or absolute home paths.

    ``model_path`` is the resolved base model folder; only ``--model_name_or_path`` as given is recorded.

    Example:
        >>> summary = training_summary(model_args, data_args, training_args, model_path, splits, results)
        >>> summary.default_predictor, summary.max_seq_length
        ('ensemble', 64)
    """
    counts = label_counts(splits.train)  # the user's rows, without the category-name examples
    validation_texts = splits.validation[TEXT][:] if splits.validation is not None else []
    carved = splits.validation is not None and not data_args.validation_file
    return TrainingSummary(
        base_model=model_args.model_name_or_path or EMBEDDED_BASE_MODEL,
        base_model_is_embedded_default=not model_args.model_name_or_path,
        train_file=os.path.basename(data_args.train_file),
        validation_file=os.path.basename(data_args.validation_file) if data_args.validation_file else None,
        test_file=os.path.basename(data_args.test_file) if data_args.test_file else None,
        text_columns=data_args.text_column_list,
        label_column=data_args.label_column,
        validation_split=data_args.validation_split if not data_args.validation_file else None,
        num_train=len(splits.train),
        num_validation=len(splits.validation) if splits.validation is not None else 0,
        num_test=len(splits.test) if splits.test is not None else 0,
        train_only_classes=splits.train_only_classes,
        validation_min_category_rows=VALIDATION_MIN_CATEGORY_ROWS if carved else None,
        unseen_rows=splits.unseen,
        label_counts={name: int(c) for name, c in zip(splits.label_names, counts)},
        widget_examples=list(validation_texts[:5]),
        unseen_categories=splits.unseen_names,
        dataset_name=data_args.dataset_name,
        calibration=results.get("calibration"),
        # What Categorizer / predict.py use by default; pipeline() always gives the transformer alone.
        default_predictor="ensemble" if results.get("ngram_ensemble") else "transformer",
        predictors=predictor_scores(results),
        hyperparameters={
            "learning_rate": training_args.learning_rate,
            "head_learning_rate": model_args.head_learning_rate,
            "head_init": model_args.head_init,
            "freeze_word_embeddings": model_args.freeze_word_embeddings,
            "num_train_epochs": training_args.num_train_epochs,
            "per_device_train_batch_size": training_args.per_device_train_batch_size,
            "max_seq_length": data_args.max_seq_length,
            "category_name_examples": data_args.category_name_examples,
            "warmup_steps": training_args.warmup_steps,
            "weight_decay": training_args.weight_decay,
            "label_smoothing_factor": training_args.label_smoothing_factor,
            "class_weights": model_args.class_weights,
            "hierarchy_loss_weight": model_args.hierarchy_loss_weight,
            "prior_correction": model_args.prior_correction,
            "epoch_kept": (
                f"best by validation {selection_metric(training_args)}"
                if training_args.load_best_model_at_end
                else "last"
            ),
            "seed": training_args.seed,
            "mixed_precision": training_args.mixed_precision,  # "bf16" by default on CPUs with AMX; weights stay fp32
        },
        results={split: {k: v for k, v in metrics.items() if isinstance(v, (int, float))} for split, metrics in results.items()},
    )

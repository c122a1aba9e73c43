"""Evaluation report of a trained categoriser on labelled texts: tables, metrics and plots.

``write_report`` scores a categoriser's outputs on texts with known categories and writes, into one folder
(every file atomically; names fixed, never derived from label text):

============================  ===============================================================
``metrics.json``              taxonomy metrics (see ``prodcat.evaluation.metrics.taxonomy_metrics``), ECE and
                              NLL at the model's temperature, coverage curve, reliability bins
``per_class.csv``             precision, recall, F1, support per category, ``level`` = leaf / 1 / 2 ...
``confusions.csv``            most frequent (true, predicted) leaf pairs with their lowest common ancestor
``errors.csv``                misclassified rows, most confident first, with the top-3 and scores
``confusion_level1.png``      level-1 confusion matrix (rows: true, colour: share of the row)
``confusion_top_leaves.png``  confusion matrix of the leaves involved in the most errors
``per_level_accuracy.png``    accuracy at every level and at the leaf
``coverage_accuracy.png``     share answered at leaf level versus accuracy of the answered items
``reliability.png``           reliability diagram (accuracy versus confidence, 15 bins)
============================  ===============================================================

Probabilities are softmax(scores / T): the transformer's logits with the model's ``prodcat_temperature``
(1 if absent), or the n-gram ensemble's pooled scores with its own temperature.
Reference categories the model never saw count as errors.

Example:
    >>> scores, temperature = categorizer.log_scores(table.texts)
    >>> metrics = write_report(scores, categorizer.labels, table.texts, table.labels, "outputs/report", temperature=temperature)
    >>> sorted(os.listdir("outputs/report"))[:3]
    ['confusion_level1.png', 'confusion_top_leaves.png', 'confusions.csv']
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from prodcat.core.hierarchy import max_depth, path_prefix
from prodcat.core.io import atomic_path, write_frame, write_json
from prodcat.evaluation.calibration import expected_calibration_error, negative_log_likelihood, probabilities, reliability_bins
from prodcat.evaluation.metrics.taxonomy_metrics import coverage_curve, lowest_common_ancestor, per_class_scores, taxonomy_scores

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PER_CLASS_FILE = "per_class.csv"
CONFUSIONS_FILE = "confusions.csv"
ERRORS_FILE = "errors.csv"
CONFUSION_LEVEL1_PNG = "confusion_level1.png"
CONFUSION_LEAVES_PNG = "confusion_top_leaves.png"
PER_LEVEL_PNG = "per_level_accuracy.png"
COVERAGE_PNG = "coverage_accuracy.png"
RELIABILITY_PNG = "reliability.png"
#: Every file ``write_report`` writes.
REPORT_FILES = (
    METRICS_FILE,
    PER_CLASS_FILE,
    CONFUSIONS_FILE,
    ERRORS_FILE,
    CONFUSION_LEVEL1_PNG,
    CONFUSION_LEAVES_PNG,
    PER_LEVEL_PNG,
    COVERAGE_PNG,
    RELIABILITY_PNG,
)

_TICK_WIDTH = 32  # characters kept of a tick label


def write_report(
    scores: np.ndarray,
    label_names: Sequence[str],
    texts: Sequence[str],
    references: Sequence[str],
    report_dir: str,
    *,
    temperature: float = 1.0,
    predictor: str = "transformer",
    source_rows: Sequence[int] | None = None,
    top_k: int = 3,
    n_bins: int = 15,
    max_confused_pairs: int = 100,
    matrix_leaves: int = 15,
) -> dict:
    """Score a categoriser's outputs on ``texts`` with true category paths ``references``; write the report files.

    ``scores`` are log-scores ``[len(texts), len(label_names)]`` whose ``softmax(scores / temperature)`` is the
    prediction: the transformer's logits, or the n-gram ensemble's pooled scores (``Categorizer.log_scores``
    returns both). ``predictor`` names that path in ``metrics.json``. ``references`` must be canonical paths
    (as ``data.tables.load_table`` returns them). ``source_rows`` (e.g. ``ProductTable.source_rows``) labels rows
    in ``errors.csv``; default: 1-based position. Returns what ``metrics.json`` holds.

    Example:
        >>> write_report(np.log([[0.9, 0.1]]), ["A", "B"], ["mug"], ["A"], "report")["accuracy"]
        1.0
    """
    if len(texts) != len(references):
        raise ValueError(f"{len(texts)} texts but {len(references)} references")
    if len(texts) == 0:
        raise ValueError("no rows to evaluate")
    scored = _Scored.of(scores, list(label_names), list(references), temperature)
    metrics = _metrics(scored, predictor, temperature, n_bins)
    os.makedirs(report_dir, exist_ok=True)
    rows = list(source_rows) if source_rows is not None else list(range(1, len(texts) + 1))
    _write_tables(scored, texts, rows, report_dir, top_k, max_confused_pairs)
    _write_plots(scored, metrics, temperature, report_dir, matrix_leaves)
    metrics = json_safe(metrics)
    write_json(os.path.join(report_dir, METRICS_FILE), metrics)
    logger.info("Report written to %s (accuracy %.4f, macro-F1 %.4f)", report_dir, metrics["accuracy"], metrics["macro_f1"])
    return metrics


@dataclass
class _Scored:
    """The predictions behind a report: probabilities, top-1 labels and ids, and the reference ids (-1: unseen)."""

    outputs: np.ndarray
    probs: np.ndarray
    label_names: list[str]
    references: list[str]
    true_ids: np.ndarray
    predicted: list[str]
    confidence: np.ndarray
    correct: np.ndarray

    @classmethod
    def of(cls, scores: np.ndarray, label_names: list[str], references: list[str], temperature: float) -> _Scored:
        outputs = np.asarray(scores, dtype=np.float64)
        probs = probabilities(outputs, temperature)
        label_index = {name: i for i, name in enumerate(label_names)}
        true_ids = np.array([label_index.get(r, -1) for r in references], dtype=np.int64)
        predicted_ids = probs.argmax(axis=1)
        return cls(
            outputs=outputs,
            probs=probs,
            label_names=label_names,
            references=references,
            true_ids=true_ids,
            predicted=[label_names[i] for i in predicted_ids],
            confidence=probs[np.arange(len(probs)), predicted_ids],
            correct=predicted_ids == true_ids,
        )


def _metrics(scored: _Scored, predictor: str, temperature: float, n_bins: int) -> dict:
    """What ``metrics.json`` holds: taxonomy scores, calibration, coverage curve and the unseen categories."""
    unseen = Counter(r for r, i in zip(scored.references, scored.true_ids) if i < 0)
    if unseen:
        logger.warning(
            "%d row(s) in %d categor%s the model never saw (scored as errors)",
            sum(unseen.values()),
            len(unseen),
            "y" if len(unseen) == 1 else "ies",
        )
    metrics: dict = dict(taxonomy_scores(scored.predicted, scored.references, prediction_scores=scored.confidence.tolist()))
    metrics.update(
        {
            "predictor": predictor,
            "temperature": temperature,
            "ece": expected_calibration_error(scored.probs, scored.true_ids, n_bins),
            "ece_bins": n_bins,
            # NLL is undefined for categories the model cannot output: computed on known ones only
            "nll": negative_log_likelihood(scored.outputs, scored.true_ids, temperature),
            "num_unseen_reference_rows": int(sum(unseen.values())),
            "num_unseen_reference_categories": len(unseen),
            "num_model_categories": len(scored.label_names),
            "coverage_curve": coverage_curve(scored.confidence, scored.correct),
            "reliability_bins": reliability_bins(scored.confidence, scored.correct, n_bins),
            "files": list(REPORT_FILES),
        }
    )
    return metrics


def _write_tables(scored: _Scored, texts: Sequence[str], rows: list[int], report_dir: str, top_k: int, max_confused_pairs: int) -> None:
    """``per_class.csv``, ``confusions.csv`` and ``errors.csv``."""
    write_frame(pd.DataFrame(per_class_scores(scored.predicted, scored.references)), os.path.join(report_dir, PER_CLASS_FILE))
    write_frame(confused_pairs(scored.predicted, scored.references, max_confused_pairs), os.path.join(report_dir, CONFUSIONS_FILE))
    errors = error_rows(texts, scored.references, rows, scored.probs, scored.label_names, scored.true_ids, top_k)
    write_frame(errors, os.path.join(report_dir, ERRORS_FILE))


def _write_plots(scored: _Scored, metrics: dict, temperature: float, report_dir: str, matrix_leaves: int) -> None:
    """The five PNG plots (``metrics`` holds the taxonomy scores, coverage curve, reliability bins and ECE)."""
    predicted, references = scored.predicted, scored.references
    depth = max(max_depth(references), 1)
    plot_confusion_level1(predicted, references, os.path.join(report_dir, CONFUSION_LEVEL1_PNG))
    plot_confusion_top_leaves(predicted, references, os.path.join(report_dir, CONFUSION_LEAVES_PNG), matrix_leaves)
    plot_per_level_accuracy(metrics, depth, os.path.join(report_dir, PER_LEVEL_PNG))
    plot_coverage_accuracy(metrics["coverage_curve"], os.path.join(report_dir, COVERAGE_PNG))
    plot_reliability(metrics["reliability_bins"], metrics["ece"], temperature, os.path.join(report_dir, RELIABILITY_PNG))


def json_safe(value):
    """Replace NaN / infinity by None (JSON has no NaN) and numpy scalars by Python numbers, recursively."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def confused_pairs(predictions: Sequence[str], references: Sequence[str], top: int = 100) -> pd.DataFrame:
    """The ``top`` most frequent (true, predicted) pairs among errors.

    Columns: ``true_label``, ``predicted_label``, ``count``, ``share_of_true`` (count / rows with
    that true label), ``lowest_common_ancestor`` (``""`` when they differ at level 1) and
    ``common_levels`` (its depth). Ties are broken by label text, so the order is stable.
    """
    support = Counter(references)
    pairs = Counter((r, p) for p, r in zip(predictions, references) if p != r)
    ordered = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:top]
    records = []
    for (true, pred), count in ordered:
        ancestor = lowest_common_ancestor(true, pred)
        records.append(
            {
                "true_label": true,
                "predicted_label": pred,
                "count": count,
                "share_of_true": count / support[true],
                "lowest_common_ancestor": ancestor,
                "common_levels": len(ancestor.split(" > ")) if ancestor else 0,
            }
        )
    columns = ["true_label", "predicted_label", "count", "share_of_true", "lowest_common_ancestor", "common_levels"]
    return pd.DataFrame(records, columns=columns)


def error_rows(
    texts: Sequence[str],
    references: Sequence[str],
    rows: Sequence[int],
    probs: np.ndarray,
    label_names: Sequence[str],
    true_ids: np.ndarray,
    top_k: int = 3,
) -> pd.DataFrame:
    """Misclassified rows, most confident mistakes first (often label noise worth checking).

    Columns: ``row``, ``text``, ``true_label``, ``true_label_known`` (the model has that category),
    ``true_label_score`` (its probability, empty when unknown), ``top_1_label``, ``top_1_score`` ...
    ``top_k_label``, ``top_k_score``, ``lowest_common_ancestor`` (of true and top-1).
    """
    k = min(top_k, probs.shape[1])
    predicted_ids = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted_ids != true_ids)
    order = wrong[np.argsort(-probs[wrong, predicted_ids[wrong]], kind="stable")]
    top = np.argsort(-probs[order], axis=1, kind="stable")[:, :k]
    columns = ["row", "text", "true_label", "true_label_known", "true_label_score"]
    for j in range(1, k + 1):
        columns += [f"top_{j}_label", f"top_{j}_score"]
    columns.append("lowest_common_ancestor")
    records = []
    for position, i in enumerate(order):
        true_id = int(true_ids[i])
        record = {
            "row": rows[i],
            "text": texts[i],
            "true_label": references[i],
            "true_label_known": true_id >= 0,
            "true_label_score": float(probs[i, true_id]) if true_id >= 0 else None,
        }
        for j, label_id in enumerate(top[position], start=1):
            record[f"top_{j}_label"] = label_names[label_id]
            record[f"top_{j}_score"] = float(probs[i, label_id])
        record["lowest_common_ancestor"] = lowest_common_ancestor(references[i], label_names[predicted_ids[i]])
        records.append(record)
    return pd.DataFrame(records, columns=columns)


# --- plots (matplotlib, Agg canvas; no pyplot global state) -------------------------------------


def short_label(label: str, width: int = _TICK_WIDTH, keep_end: bool = True) -> str:
    """A tick label of at most ``width`` characters; ``$`` escaped so matplotlib never reads math.

    Paths keep their last whole segments (the leaf is what differs); single names keep their start.

    Example:
        >>> short_label("Beauty & Hygiene > Hair Care > Hair Oil & Serum", 32)
        '… > Hair Care > Hair Oil & Serum'
    """
    text = str(label) if label else "(empty)"
    if len(text) > width:
        segments = text.split(" > ")
        if keep_end and len(segments) > 1 and len(segments[-1]) + 4 <= width:
            kept = [segments[-1]]
            for segment in reversed(segments[:-1]):
                if len(" > ".join([segment, *kept])) + 4 > width:
                    break
                kept.insert(0, segment)
            text = "… > " + " > ".join(kept)
        elif keep_end:
            text = "…" + text[-(width - 1) :]
        else:
            text = text[: width - 1] + "…"
    return text.replace("$", r"\$")


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)


def _matrix_plot(
    matrix: np.ndarray, labels: list[str], title: str, path: str, keep_end: bool, row_totals: np.ndarray | None = None
) -> None:
    """Counts with colour = share of the true category's rows, labels truncated; counts shown when small.

    ``row_totals``: rows per true category when the matrix shows only some predicted columns.
    """
    n = len(labels)
    size = min(max(4.5, 0.42 * n + 3.0), 22.0)
    figure = _new_figure(size + 1.5, size)
    axes = figure.add_subplot()
    row_totals = matrix.sum(axis=1, keepdims=True) if row_totals is None else np.asarray(row_totals).reshape(-1, 1)
    shares = np.divide(matrix, row_totals, out=np.zeros(matrix.shape, dtype=float), where=row_totals > 0)
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="equal")
    figure.colorbar(image, ax=axes, label="share of the true category's rows", shrink=0.8)
    ticks = [short_label(label, _TICK_WIDTH, keep_end) for label in labels]
    font = 9 if n <= 20 else max(5, 9 - (n - 20) // 8)
    axes.set_xticks(range(n), ticks, rotation=60, ha="right", rotation_mode="anchor", fontsize=font)
    axes.set_yticks(range(n), ticks, fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    colour = "white" if shares[i, j] > 0.5 else "black"
                    axes.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=font - 1, color=colour)
    _save(figure, path)


def plot_confusion_level1(predictions: Sequence[str], references: Sequence[str], path: str) -> None:
    """Confusion matrix of the level-1 categories (true and predicted)."""
    from sklearn.metrics import confusion_matrix

    true = [path_prefix(r, 1) for r in references]
    pred = [path_prefix(p, 1) for p in predictions]
    labels = sorted(set(true) | set(pred))
    matrix = confusion_matrix(true, pred, labels=labels)
    _matrix_plot(matrix, labels, "Level-1 confusion matrix", path, keep_end=False)


def plot_confusion_top_leaves(predictions: Sequence[str], references: Sequence[str], path: str, size: int = 15) -> None:
    """Confusion matrix restricted to the ``size`` leaves involved in the most errors (true or predicted)."""
    from sklearn.metrics import confusion_matrix

    involvement: Counter = Counter()
    for p, r in zip(predictions, references):
        if p != r:
            involvement[r] += 1
            involvement[p] += 1
    leaves = sorted(label for label, _ in sorted(involvement.items(), key=lambda item: (-item[1], item[0]))[:size])
    if not leaves:
        figure = _new_figure(5, 3)
        axes = figure.add_subplot()
        axes.axis("off")
        axes.text(0.5, 0.5, "no errors: every row was classified correctly", ha="center", va="center")
        _save(figure, path)
        return
    chosen = set(leaves)
    keep = [i for i, r in enumerate(references) if r in chosen]
    matrix = confusion_matrix([references[i] for i in keep], [predictions[i] for i in keep], labels=leaves)
    support = Counter(references)
    totals = np.array([support[leaf] for leaf in leaves])
    _matrix_plot(matrix, leaves, f"Most confused leaves (top {len(leaves)} by errors)", path, keep_end=True, row_totals=totals)


def plot_per_level_accuracy(scores: dict, depth: int, path: str) -> None:
    """Bars: accuracy at level 1..depth, then exact-leaf accuracy and hierarchical F1."""
    names = [f"level {k}" for k in range(1, depth + 1) if f"level_{k}_accuracy" in scores]
    values = [scores[f"level_{k}_accuracy"] for k in range(1, depth + 1) if f"level_{k}_accuracy" in scores]
    names += ["leaf (exact)", "hierarchical F1"]
    values += [scores["accuracy"], scores["hierarchical_f1"]]
    figure = _new_figure(max(4.5, 1.1 * len(names) + 1.5), 4.0)
    axes = figure.add_subplot()
    colours = ["tab:blue"] * (len(names) - 2) + ["tab:orange", "tab:green"]
    bars = axes.bar(names, values, color=colours)
    axes.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=2, fontsize=9)
    axes.set_ylim(0, 1.08)
    axes.set_ylabel("accuracy / F1")
    axes.set_title(f"Accuracy per level ({int(scores.get('num_examples', 0))} rows)")
    _save(figure, path)


def plot_coverage_accuracy(curve: dict, path: str, marked: Sequence[float] = (0.5, 0.8, 0.9)) -> None:
    """Accuracy of the items answered at leaf level versus the share answered, thresholds marked."""
    coverage = np.asarray(curve["coverage"], dtype=float)
    accuracy = np.asarray(curve["accuracy"], dtype=float)
    thresholds = np.asarray(curve["thresholds"], dtype=float)
    figure = _new_figure(5.5, 4.2)
    axes = figure.add_subplot()
    shown = np.isfinite(accuracy)
    axes.plot(coverage[shown], accuracy[shown], color="tab:blue", lw=2)
    colours = ["tab:red", "tab:orange", "tab:green", "tab:purple"]
    for colour, t in zip(colours * 4, marked):
        i = int(np.argmin(np.abs(thresholds - t)))
        if shown[i]:
            label = f"p ≥ {t:g}: {coverage[i]:.1%} answered, {accuracy[i]:.1%} right"
            axes.plot(coverage[i], accuracy[i], "o", color=colour, label=label)
    if shown.any():
        axes.axhline(accuracy[shown][0], color="gray", ls=":", lw=1, label=f"answer everything: {accuracy[shown][0]:.1%} right")
        axes.legend(loc="lower left", fontsize=8)
    axes.set_xlim(0, 1.02)
    axes.set_ylim(max(0.0, float(np.nanmin(accuracy[shown])) - 0.05) if shown.any() else 0.0, 1.01)
    axes.set_xlabel("coverage (share answered at leaf level)")
    axes.set_ylabel("accuracy of answered items")
    axes.set_title("Back-off trade-off: answer when top probability ≥ t")
    axes.grid(alpha=0.3)
    _save(figure, path)


def plot_reliability(bins: dict, ece: float, temperature: float, path: str) -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal, counts below."""
    lower = np.asarray(bins["lower"], dtype=float)
    upper = np.asarray(bins["upper"], dtype=float)
    accuracy = np.nan_to_num(np.asarray(bins["accuracy"], dtype=float))
    confidence = np.asarray(bins["confidence"], dtype=float)
    counts = np.asarray(bins["count"], dtype=float)
    centres = (lower + upper) / 2
    width = upper - lower
    figure = _new_figure(5.0, 5.5)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(centres, accuracy, width=width, edgecolor="black", color="tab:blue", alpha=0.8, label="accuracy")
    has = counts > 0
    top.plot(confidence[has], confidence[has], "_", color="tab:red", markersize=12, mew=2, label="mean confidence")
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability (ECE {ece:.3f}, temperature {temperature:.2f})")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, counts, width=width, color="gray", edgecolor="black")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top probability)")
    bottom.set_ylabel("rows")
    _save(figure, path)

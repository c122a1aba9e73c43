"""Taxonomy-aware classification metrics for category paths such as ``"A > B > C"``.

Load it offline with ``evaluate.load(prodcat.evaluation.metrics.TAXONOMY_METRIC_PATH)``: predictions and
references are canonical category paths (strings joined with ``" > "``). The Trainer uses the
same formulas through the plain function :func:`taxonomy_scores`.

Formulas (N examples, true path y_i, predicted path p_i; prefix_k(x) = the first k segments of x,
or the whole of x when it has fewer than k segments, so paths of different depths can be mixed):

* ``accuracy`` = (1/N) sum_i [p_i == y_i]
* ``macro_f1`` = (1/|C|) sum_c F1_c over C = the categories in references or predictions, with
  F1_c = 2 P_c R_c / (P_c + R_c), P_c = TP_c / (TP_c + FP_c), R_c = TP_c / (TP_c + FN_c)
  (0 where a denominator is 0)
* ``weighted_f1`` = sum_c (support_c / N) F1_c, support_c = number of references equal to c
* ``level_k_accuracy`` = (1/N) sum_i [prefix_k(p_i) == prefix_k(y_i)], and ``level_k_macro_f1`` /
  ``level_k_weighted_f1`` the same F1s over the level-k prefixes, for k = 1 .. the deepest
  reference. A reference shallower than k counts as its whole self at level k: predicting
  ``"A > B"`` for a true ``"A"`` is right at level 1 and wrong at level 2.
* hierarchical precision / recall / F1 (Kiritchenko et al., 2006): expand each label to itself
  plus all its ancestors, A(x) = {prefix_1(x), ..., x}; micro over examples,
  ``hierarchical_precision`` hP = sum_i |A(p_i) ∩ A(y_i)| / sum_i |A(p_i)|,
  ``hierarchical_recall`` hR = sum_i |A(p_i) ∩ A(y_i)| / sum_i |A(y_i)|,
  ``hierarchical_f1`` hF = 2 hP hR / (hP + hR). An empty prediction has A = {} (no credit).
* Coverage versus accuracy (back-off trade-off), when the probability s_i of each predicted leaf
  is given (``prediction_scores``): an item is answered at leaf level when s_i >= t, otherwise
  it would be backed off to a parent. For a threshold t,
  ``coverage(t)`` = (1/N) sum_i [s_i >= t] and
  ``answered_accuracy(t)`` = sum_i [s_i >= t][p_i == y_i] / sum_i [s_i >= t] (NaN when nothing
  is answered). :func:`coverage_curve` gives the whole curve; ``taxonomy_scores`` adds
  ``coverage_at_pXX`` / ``answered_accuracy_at_pXX`` for t = 0.5, 0.8 and 0.9.

Example:
    >>> import evaluate
    >>> from prodcat.evaluation.metrics import TAXONOMY_METRIC_PATH
    >>> metric = evaluate.load(TAXONOMY_METRIC_PATH)
    >>> metric.compute(predictions=["A > B", "A > C"], references=["A > B", "A > B"])["level_1_accuracy"]
    1.0
    >>> metric.compute(predictions=["A > B", "A > C"], references=["A > B", "A > B"],
    ...                prediction_scores=[0.9, 0.4])["answered_accuracy_at_p50"]
    1.0
"""

# This file is loaded by ``evaluate.load`` as a stand-alone module (copied into the modules cache),
# so it must not import prodcat itself.

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support

_SEPARATOR = " > "

#: Thresholds whose coverage / answered accuracy are reported as scalars when scores are given.
SCALAR_THRESHOLDS = (0.5, 0.8, 0.9)

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): predicted category paths.
    references (list of str): true category paths.
    max_level (int, optional): deepest level to report per-level metrics for (default: deepest reference).
    prediction_scores (list of float, optional): probability of each predicted path; adds the
        coverage / answered-accuracy scalars. Passed to ``compute`` only (not ``add_batch``).
Returns:
    dict of floats: accuracy, macro_f1, weighted_f1, level_k_accuracy / level_k_macro_f1 /
    level_k_weighted_f1 for k = 1..max_level, hierarchical_precision, hierarchical_recall,
    hierarchical_f1, num_examples, and with prediction_scores coverage_at_pXX and
    answered_accuracy_at_pXX for XX = 50, 80, 90.
"""
_CITATION = """@inproceedings{kiritchenko2006learning,
  title={Learning and evaluation in the presence of class hierarchies: Application to text categorization},
  author={Kiritchenko, Svetlana and Matwin, Stan and Nock, Richard and Famili, A. Fazel},
  booktitle={Canadian Conference on AI}, year={2006}}"""


def _segments(path: str) -> list[str]:
    return path.split(_SEPARATOR) if path else []


def _prefix(path: str, level: int) -> str:
    return _SEPARATOR.join(_segments(path)[:level])


def _ancestor_set(path: str) -> set[str]:
    parts = _segments(path)
    return {_SEPARATOR.join(parts[: i + 1]) for i in range(len(parts))}


def lowest_common_ancestor(first: str, second: str) -> str:
    """Longest shared prefix of two paths, in whole segments (``""`` when even level 1 differs).

    Example:
        >>> lowest_common_ancestor("A > B > C", "A > B > D")
        'A > B'
    """
    shared = []
    for a, b in zip(_segments(first), _segments(second)):
        if a != b:
            break
        shared.append(a)
    return _SEPARATOR.join(shared)


def _f1s(references: list[str], predictions: list[str]) -> tuple[float, float]:
    macro = f1_score(references, predictions, average="macro", zero_division=0)
    weighted = f1_score(references, predictions, average="weighted", zero_division=0)
    return float(macro), float(weighted)


def _depth(references: Sequence[str]) -> int:
    return max((len(_segments(r)) for r in references), default=0)


def coverage_curve(
    scores: Sequence[float], correct: Sequence[bool], thresholds: Sequence[float] | None = None
) -> dict[str, list[float]]:
    """Coverage and accuracy of the answered items for each threshold (formulas in the module doc).

    ``scores[i]`` is the probability of item i's predicted leaf and ``correct[i]`` whether that
    leaf is right. Default thresholds: 0, 0.01, ..., 1. An item is answered when score >= t, so
    t = 0 answers everything (coverage 1, accuracy = plain accuracy).

    Example:
        >>> coverage_curve([0.9, 0.6, 0.3], [True, False, True], thresholds=[0.0, 0.5, 0.95])
        {'thresholds': [0.0, 0.5, 0.95], 'coverage': [1.0, 0.6666666666666666, 0.0], 'accuracy': [0.6666666666666666, 0.5, nan]}
    """
    scores_arr = np.asarray(scores, dtype=np.float64)
    correct_arr = np.asarray(correct, dtype=bool)
    if scores_arr.shape != correct_arr.shape or scores_arr.ndim != 1:
        raise ValueError(f"scores {scores_arr.shape} and correct {correct_arr.shape} must be 1-D and the same length")
    grid = np.round(np.linspace(0.0, 1.0, 101), 2) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    coverage, accuracy = [], []
    n = len(scores_arr)
    for t in grid:
        answered = scores_arr >= t
        count = int(answered.sum())
        coverage.append(count / n if n else 0.0)
        accuracy.append(float(correct_arr[answered].mean()) if count else float("nan"))
    return {"thresholds": [float(t) for t in grid], "coverage": coverage, "accuracy": accuracy}


def per_class_scores(predictions: Sequence[str], references: Sequence[str], max_level: int | None = None) -> list[dict]:
    """Precision, recall, F1 and support of every category, at the leaf and at every level.

    One dict per (level, category) with keys ``level`` (``"leaf"`` or ``"1"``, ``"2"``, ...),
    ``label``, ``precision``, ``recall``, ``f1``, ``support`` (references with that label). The
    categories are those in references or predictions (a never-true prediction has support 0).

    Example:
        >>> rows = per_class_scores(["A > B", "A > C"], ["A > B", "A > B"])
        >>> [(r["level"], r["label"], r["recall"]) for r in rows if r["label"] == "A > B"]
        [('leaf', 'A > B', 0.5), ('2', 'A > B', 0.5)]
    """
    predictions = [p or "" for p in predictions]
    references = list(references)
    views: list[tuple[str, list[str], list[str]]] = [("leaf", references, predictions)]
    for level in range(1, (max_level or _depth(references)) + 1):
        views.append((str(level), [_prefix(r, level) for r in references], [_prefix(p, level) for p in predictions]))
    rows: list[dict] = []
    for level_name, true, pred in views:
        labels = sorted(set(true) | set(pred))
        precision, recall, f1, support = precision_recall_fscore_support(true, pred, labels=labels, zero_division=0)
        for i, label in enumerate(labels):
            rows.append(
                {
                    "level": level_name,
                    "label": label,
                    "precision": float(precision[i]),
                    "recall": float(recall[i]),
                    "f1": float(f1[i]),
                    "support": int(support[i]),
                }
            )
    return rows


def taxonomy_scores(
    predictions: Sequence[str],
    references: Sequence[str],
    max_level: int | None = None,
    prediction_scores: Sequence[float] | None = None,
) -> dict[str, float]:
    """The metrics described in the module docstring, as a plain function.

    Example:
        >>> taxonomy_scores(["A > B > C", "A > D"], ["A > B > C", "A > B"])["hierarchical_recall"]
        0.8
    """
    predictions = [p or "" for p in predictions]
    references = list(references)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not references:
        return {}
    n = len(references)
    correct = [p == r for p, r in zip(predictions, references)]
    scores: dict[str, float] = {"accuracy": float(np.mean(correct))}
    scores["macro_f1"], scores["weighted_f1"] = _f1s(references, predictions)
    depth = max_level or _depth(references)
    for level in range(1, depth + 1):
        true_k = [_prefix(r, level) for r in references]
        pred_k = [_prefix(p, level) for p in predictions]
        scores[f"level_{level}_accuracy"] = float(np.mean([p == t for p, t in zip(pred_k, true_k)]))
        scores[f"level_{level}_macro_f1"], scores[f"level_{level}_weighted_f1"] = _f1s(true_k, pred_k)
    overlap = predicted = true = 0
    for p, r in zip(predictions, references):
        pa, ra = _ancestor_set(p), _ancestor_set(r)
        overlap += len(pa & ra)
        predicted += len(pa)
        true += len(ra)
    hp = overlap / predicted if predicted else 0.0
    hr = overlap / true if true else 0.0
    scores["hierarchical_precision"] = hp
    scores["hierarchical_recall"] = hr
    scores["hierarchical_f1"] = 2 * hp * hr / (hp + hr) if hp + hr else 0.0
    if prediction_scores is not None:
        if len(prediction_scores) != n:
            raise ValueError(f"{len(prediction_scores)} prediction_scores but {n} references")
        curve = coverage_curve(prediction_scores, correct, SCALAR_THRESHOLDS)
        for t, cov, acc in zip(SCALAR_THRESHOLDS, curve["coverage"], curve["accuracy"]):
            scores[f"coverage_at_p{round(t * 100)}"] = cov
            scores[f"answered_accuracy_at_p{round(t * 100)}"] = acc
    scores["num_examples"] = float(n)
    return scores


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TaxonomyMetrics(evaluate.Metric):
    """``evaluate`` wrapper around :func:`taxonomy_scores`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, max_level: int | None = None, prediction_scores=None):
        return taxonomy_scores(list(predictions), list(references), max_level, prediction_scores)

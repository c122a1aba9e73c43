"""Taxonomy-aware classification metrics for category paths such as ``"A > B > C"``.

Load it offline with ``evaluate.load(prodcat.metrics.TAXONOMY_METRIC_PATH)``: predictions and
references are canonical category paths (strings joined with ``" > "``).

Formulas (N examples, true path y_i, predicted path p_i; prefix_k(x) = the first k segments):

* ``accuracy`` = (1/N) sum_i [p_i == y_i]
* ``macro_f1`` = (1/|C|) sum_c F1_c over C = the categories in references or predictions, with
  F1_c = 2 P_c R_c / (P_c + R_c), P_c = TP_c / (TP_c + FP_c), R_c = TP_c / (TP_c + FN_c)
* ``weighted_f1`` = sum_c (support_c / N) F1_c
* ``level_k_accuracy`` = (1/N) sum_i [prefix_k(p_i) == prefix_k(y_i)], and ``level_k_macro_f1`` /
  ``level_k_weighted_f1`` the same F1s over the level-k prefixes (a path shallower than k counts
  as its whole self).
* hierarchical precision / recall / F1 (Kiritchenko et al., 2006): expand each label to itself
  plus all its ancestors, A(x) = {prefix_1(x), ..., x}; micro over examples,
  ``hierarchical_precision`` hP = sum_i |A(p_i) ∩ A(y_i)| / sum_i |A(p_i)|,
  ``hierarchical_recall`` hR = sum_i |A(p_i) ∩ A(y_i)| / sum_i |A(y_i)|,
  ``hierarchical_f1`` hF = 2 hP hR / (hP + hR). An empty prediction has A = {} (no credit).

Example:
    >>> import evaluate
    >>> from prodcat.metrics import TAXONOMY_METRIC_PATH
    >>> metric = evaluate.load(TAXONOMY_METRIC_PATH)
    >>> metric.compute(predictions=["A > B", "A > C"], references=["A > B", "A > B"])["level_1_accuracy"]
    1.0
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np
from sklearn.metrics import f1_score

_SEPARATOR = " > "

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): predicted category paths.
    references (list of str): true category paths.
    max_level (int, optional): deepest level to report per-level metrics for (default: deepest reference).
Returns:
    dict of floats: accuracy, macro_f1, weighted_f1, level_k_accuracy / level_k_macro_f1 /
    level_k_weighted_f1 for k = 1..max_level, hierarchical_precision, hierarchical_recall, hierarchical_f1.
"""
_CITATION = """@inproceedings{kiritchenko2006learning,
  title={Learning and evaluation in the presence of class hierarchies: Application to text categorization},
  author={Kiritchenko, Svetlana and Matwin, Stan and Nock, Richard and Famili, A. Fazel},
  booktitle={Canadian Conference on AI}, year={2006}}"""


def _prefix(path: str, level: int) -> str:
    return _SEPARATOR.join(path.split(_SEPARATOR)[:level]) if path else ""


def _ancestor_set(path: str) -> set[str]:
    parts = path.split(_SEPARATOR) if path else []
    return {_SEPARATOR.join(parts[: i + 1]) for i in range(len(parts))}


def _f1s(references: list[str], predictions: list[str]) -> tuple[float, float]:
    macro = f1_score(references, predictions, average="macro", zero_division=0)
    weighted = f1_score(references, predictions, average="weighted", zero_division=0)
    return float(macro), float(weighted)


def taxonomy_scores(predictions: list[str], references: list[str], max_level: int | None = None) -> dict[str, float]:
    """The metrics described in the module docstring, as a plain function."""
    predictions = [p or "" for p in predictions]
    references = list(references)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not references:
        return {}
    n = len(references)
    scores: dict[str, float] = {"accuracy": float(np.mean([p == r for p, r in zip(predictions, references)]))}
    scores["macro_f1"], scores["weighted_f1"] = _f1s(references, predictions)
    depth = max_level or max(len(r.split(_SEPARATOR)) for r in references)
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

    def _compute(self, predictions, references, max_level: int | None = None):
        return taxonomy_scores(list(predictions), list(references), max_level)

"""How far a test-set difference can be trusted: paired bootstrap of macro-F1 against TF-IDF.

Scores the prodcat model that ``benchmarks/accuracy.py`` left in ``bench_out/DATASET`` (its transformer alone
and, when that model has an ``ngram/`` folder, its default path pooled with the n-gram model) and a freshly
fitted TF-IDF + LinearSVC on the same test titles. Then it resamples the test titles with replacement, B times,
and for each method m records

    delta_b(m) = macro-F1_m(resample b) - macro-F1_TF-IDF(resample b)

(the same resample for both, so the shared difficulty of the titles cancels). It prints the mean, the 95%
percentile interval and the share of resamples with delta >= --target (3 points of macro-F1 by default).

    python benchmarks/significance.py                             # bigbasket-27k, after benchmarks/accuracy.py
    python benchmarks/significance.py --dataset pricerunner-35k --resamples 2000
    python benchmarks/significance.py --data_dir DIR                # the test split in DIR/DATASET/test.csv

The catalogues are read from ``--data_dir`` (default ``$PRODCAT_DATA_DIR``, else ``shared/data`` beside the
repository); skips with a message when the data is absent.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

from accuracy import DATASETS, run_tfidf
from common import ROOT, add_data_dir_argument, split_paths


def macro_f1(references: np.ndarray, predicted: np.ndarray) -> float:
    """Macro-F1 over the categories in references or predictions (prodcat.evaluation.metrics' definition)."""
    from sklearn.metrics import f1_score

    return float(f1_score(references, predicted, average="macro", zero_division=0))


def paired_bootstrap(
    references: list[str], predictions: dict[str, list[str]], baseline: str, resamples: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """``{method: delta_b for b in 1..resamples}`` for every method other than ``baseline`` (module docstring).

    Example:
        >>> deltas = paired_bootstrap(["a", "b", "b"], {"m": ["a", "b", "b"], "base": ["b", "b", "b"]}, "base", 50)
        >>> bool((deltas["m"] >= 0).all())
        True
    """
    y = np.asarray(references)
    predicted = {name: np.asarray(values) for name, values in predictions.items()}
    rng = np.random.default_rng(seed)
    deltas: dict[str, list[float]] = {name: [] for name in predicted if name != baseline}
    for _ in range(resamples):
        rows = rng.integers(0, len(y), len(y))
        base = macro_f1(y[rows], predicted[baseline][rows])
        for name in deltas:
            deltas[name].append(macro_f1(y[rows], predicted[name][rows]) - base)
    return {name: np.asarray(values) for name, values in deltas.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=DATASETS[0], choices=DATASETS)
    parser.add_argument("--model_dir", help="prodcat model to score (default: bench_out/DATASET).")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--target", type=float, default=0.03, help="Lead over TF-IDF to report the share of resamples for.")
    parser.add_argument("--seed", type=int, default=42)
    add_data_dir_argument(parser)
    args = parser.parse_args()

    paths = split_paths(args.dataset, args.data_dir)
    if paths is None:
        return 0
    from prodcat.core.hierarchy import normalize_path
    from prodcat.inference.categorizer import Categorizer
    from prodcat.inference.ngram import has_ensemble

    model_dir = args.model_dir or os.path.join(ROOT, "bench_out", args.dataset)
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        print(f"no prodcat model in {model_dir}: run python benchmarks/accuracy.py --datasets {args.dataset} first")
        return 2
    train = pd.read_csv(paths[0], dtype=str, keep_default_na=False)
    test = pd.read_csv(paths[1], dtype=str, keep_default_na=False)
    references = [normalize_path(c) for c in test.category]
    categorizer = Categorizer.from_pretrained(model_dir, device="cpu", ensemble=False)
    predictions = {"transformer alone": [p.category for p in categorizer.predict(test.text.tolist(), batch_size=64)]}
    if has_ensemble(model_dir):
        categorizer = Categorizer.from_pretrained(model_dir, device="cpu", ensemble=True)
        pooled = categorizer.predict(test.text.tolist(), batch_size=64)
        predictions["prodcat defaults (transformer + n-gram)"] = [p.category for p in pooled]
    predictions["TF-IDF"] = [normalize_path(p) for p in run_tfidf(train, test, args.seed)[0]]

    y = np.asarray(references)
    print(f"{args.dataset}: {len(test)} test titles, {args.resamples} paired resamples, model {model_dir}")
    for name, values in predictions.items():
        print(f"  {name}: macro-F1 {macro_f1(y, np.asarray(values)):.4f}")
    deltas = paired_bootstrap(references, predictions, "TF-IDF", args.resamples, args.seed)
    print(f"\n| method | macro-F1 lead over TF-IDF (mean) | 95% interval | resamples with a lead >= {args.target:.3f} |")
    print("|---|---|---|---|")
    for name, delta in deltas.items():
        low, high = np.percentile(delta, [2.5, 97.5])
        print(f"| {name} | {delta.mean():+.4f} | [{low:+.4f}, {high:+.4f}] | {(delta >= args.target).mean():.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

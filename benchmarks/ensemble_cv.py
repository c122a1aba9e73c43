"""Cross-validation of how the n-gram ensemble chooses its pooling, on each public catalogue.

Training fits the n-gram model on the training split and picks the pool's scale ``a`` and weight ``w``
on the validation split by the lowest negative log-likelihood (prodcat.inference.ngram). This script checks that
rule against the alternatives on every catalogue, using only rows of ``train.csv``: it rebuilds the
validation split of the model that ``benchmarks/accuracy.py`` trained (same file, share and seed), fits
the n-gram model on the training split, and runs K-fold cross-validation over the validation rows. In
each fold every rule picks ``(a, w)`` on the other folds; its out-of-fold predictions are then scored.

Rules: ``nll`` (the default), ``accuracy`` and ``macro_f1`` (highest on the other folds), and every
fixed ``w`` of the grid with its best ``a``; the transformer alone (``w = 0``) and the n-gram model
alone are the references.

    python benchmarks/accuracy.py --methods prodcat       # trains bench_out/DATASET first
    python benchmarks/ensemble_cv.py                      # both catalogues, 5 folds
    python benchmarks/ensemble_cv.py --write              # also into docs/benchmarks.md
    python benchmarks/ensemble_cv.py --data_dir DIR       # DIR/DATASET/train.csv, as accuracy.py was given

The catalogues are read from ``--data_dir`` (default ``$PRODCAT_DATA_DIR``, else ``shared/data`` beside the
repository); a catalogue whose files or model are absent is skipped with a message.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from accuracy import DATASETS, model_dir, training_summary
from common import ROOT, add_data_dir_argument, split_paths, write_benchmarks_block


def validation_outputs(train_path: str, folder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """``(transformer logits, n-gram decisions, class ids, labels)`` on the validation rows of the run in ``folder``
    (rows of categories the model does not know are left out, as training leaves them out)."""
    from prodcat.data.splits import LABEL_PATH, TEXT, build_splits
    from prodcat.data.tables import load_table
    from prodcat.evaluation.calibration import label_ids
    from prodcat.inference.categorizer import Categorizer
    from prodcat.inference.ngram import NgramModel

    summary = training_summary(folder)
    table = load_table(train_path, summary.text_columns, summary.label_column)
    splits = build_splits(table, None, None, summary.validation_split, summary.seed)
    categorizer = Categorizer.from_pretrained(folder, device="cpu", ensemble=False)
    labels = list(categorizer.labels)
    texts = list(splits.validation[TEXT][:])
    ids = label_ids(list(splits.validation[LABEL_PATH][:]), {name: i for i, name in enumerate(labels)})
    known = np.flatnonzero(ids >= 0)
    ngram = NgramModel.fit(list(splits.train[TEXT][:]), list(splits.train[LABEL_PATH][:]), labels, summary.seed)
    texts = [texts[i] for i in known]
    return categorizer.logits(texts), ngram.decisions(texts), ids[known], labels


def grid() -> list[tuple[float, float]]:
    from prodcat.inference.ngram import SCALES, WEIGHTS

    return [(1.0, 0.0)] + [(a, w) for a in SCALES for w in WEIGHTS if w > 0]


def merit(rule: str, trial: tuple[float, float], logits: np.ndarray, decisions: np.ndarray, targets: np.ndarray) -> float:
    """How good ``(a, w)`` is on these rows by ``rule``'s measure (higher is better; ``w=...`` rules use the NLL)."""
    from prodcat.evaluation.calibration import fit_temperature, negative_log_likelihood
    from prodcat.evaluation.metrics.taxonomy_metrics import taxonomy_scores
    from prodcat.inference.ngram import pool

    scores = pool(logits, decisions, *trial)
    if rule in ("accuracy", "macro_f1"):
        return taxonomy_scores([str(i) for i in scores.argmax(axis=1)], [str(t) for t in targets])[rule]
    return -negative_log_likelihood(scores, targets, fit_temperature(scores, targets))


def choose(rule: str, logits: np.ndarray, decisions: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """The ``(a, w)`` that ``rule`` picks on these rows (a fixed ``w=...`` still picks its scale)."""
    trials = [t for t in grid() if t[1] == float(rule[2:])] if rule.startswith("w=") else grid()
    return max(trials, key=lambda trial: merit(rule, trial, logits, decisions, targets))


def cross_validate(logits, decisions, targets, rules: list[str], folds: int, seed: int) -> list[dict]:
    """Out-of-fold accuracy and macro-F1 of each rule, and the ``(a, w)`` it chose in each fold."""
    from sklearn.model_selection import KFold

    from prodcat.evaluation.metrics.taxonomy_metrics import taxonomy_scores
    from prodcat.inference.ngram import pool

    predicted = {rule: np.zeros(len(targets), dtype=np.int64) for rule in rules + ["n-gram alone"]}
    chosen: dict[str, list[tuple[float, float]]] = {rule: [] for rule in rules}
    for fit_rows, score_rows in KFold(folds, shuffle=True, random_state=seed).split(targets):
        for rule in rules:
            trial = choose(rule, logits[fit_rows], decisions[fit_rows], targets[fit_rows])
            chosen[rule].append(trial)
            predicted[rule][score_rows] = pool(logits[score_rows], decisions[score_rows], *trial).argmax(axis=1)
        predicted["n-gram alone"][score_rows] = decisions[score_rows].argmax(axis=1)
    rows = []
    for rule, found in predicted.items():
        scores = taxonomy_scores([str(i) for i in found], [str(t) for t in targets])
        picks = ", ".join(f"{a:g}/{w:g}" for a, w in chosen.get(rule, []))
        rows.append({"rule": rule, "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"], "chosen": picks or "-"})
    return rows


def main() -> int:
    from prodcat.inference.ngram import WEIGHTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--output_dir", default=os.path.join(ROOT, "bench_out"), help="Where benchmarks/accuracy.py left its models.")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42, help="The models' seed (their folder) and the folds' shuffle.")
    add_data_dir_argument(parser)
    parser.add_argument("--write", action="store_true", help="Update the ensemble-cv block of docs/benchmarks.md.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rules = ["nll", "accuracy", "macro_f1"] + [f"w={w:g}" for w in WEIGHTS]  # w=0: the transformer alone
    lines = ["| catalogue | rule | out-of-fold accuracy | out-of-fold macro-F1 | a/w chosen per fold |", "|---|---|---|---|---|"]
    for dataset in args.datasets:
        paths = split_paths(dataset, args.data_dir)
        folder = model_dir(args.output_dir, dataset, args.seed)
        if paths is None:
            continue
        if training_summary(folder) is None:
            print(f"skipping {dataset}: no model in {folder} (run benchmarks/accuracy.py --datasets {dataset} --methods prodcat)")
            continue
        print(f"== {dataset}: validation rows of {folder}", flush=True)
        logits, decisions, targets, _ = validation_outputs(paths[0], folder)
        for row in cross_validate(logits, decisions, targets, rules, args.folds, args.seed):
            rule = "transformer alone (w=0)" if row["rule"] == "w=0" else row["rule"] + (" (default)" if row["rule"] == "nll" else "")
            lines.append(f"| {dataset} ({len(targets)} rows) | {rule} | {row['accuracy']:.4f} | {row['macro_f1']:.4f} | {row['chosen']} |")
            print(lines[-1], flush=True)
    table = "\n".join(lines)
    print("\n" + table)
    if args.write and len(lines) > 2:
        page = write_benchmarks_block("ensemble-cv", table)
        print(f"wrote {os.path.relpath(page, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

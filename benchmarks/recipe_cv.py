"""Score a training recipe by k-fold cross-validation on a train split (validation only, never test).

Usage::

    python benchmarks/recipe_cv.py --name defaults                          # bigbasket-27k, 3 folds
    python benchmarks/recipe_cv.py --name lr3e-4 -- --learning_rate 3e-4    # train.py flags after --
    python benchmarks/recipe_cv.py --compare bench_out/cv/defaults.json bench_out/cv/lr3e-4.json
    python benchmarks/recipe_cv.py --name defaults --data_dir DIR          # DIR/bigbasket-27k/train.csv

Why: one 10% validation split of bigbasket-27k (1,878 titles) cannot rank recipe changes of 1-2 points of
macro-F1 (docs/experiments.md: five models' validation and test macro-F1 had rank correlation -0.8).
Here every fold trains with ``train.py`` on (k-1)/k of the training file and validates on the remaining
1/k, so every training row is validated on once. A fold's scores are what ``train.py`` reports for its
validation file (last epoch, then the prior correction) and the calibrated validation log-loss. The folds
are stratified by category and seeded, so two recipes see the same folds and ``--compare`` pairs them
fold by fold. Categories with fewer than k rows always stay in training (a fold could not hold them out
and still train on them). Costs k trainings per recipe (bigbasket-27k: about 16 minutes each on 2 cores).

Writes ``OUTPUT_DIR/NAME.json`` (per-fold and mean scores); the fold models are deleted unless
``--keep_models``. Each finished fold's scores stay in ``OUTPUT_DIR/NAME/fold_N/scores.json`` and are reused
by a later run of the same folds (file, k, seed, columns) and flags, so ``--only_folds`` can spread the folds
over cores or machines. The dataset's ``train.csv`` is read from ``--data_dir`` (default ``$PRODCAT_DATA_DIR``,
else ``shared/data`` beside the repository) unless ``--train_file`` names a file; skips with a message when the
data is absent.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd

from common import ROOT, add_data_dir_argument, split_paths
from prodcat.core.io import write_frame, write_json

#: Scores read from each fold's output folder: (name, file, key).
FOLD_SCORES = (
    ("accuracy", "eval_results.json", "eval_accuracy"),
    ("macro_f1", "eval_results.json", "eval_macro_f1"),
    ("level_1_accuracy", "eval_results.json", "eval_level_1_accuracy"),
    ("nll", "calibration.json", "nll_after"),
    ("train_seconds", "train_results.json", "train_wall_seconds"),
)


def fold_assignment(categories: list[str], folds: int, seed: int) -> np.ndarray:
    """Fold of each row (0..folds-1), or -1 for rows that always train (categories with < ``folds`` rows).

    Stratified: each fold holds about 1/folds of every category that has at least ``folds`` rows.

    Example:
        >>> fold_assignment(["a"] * 4 + ["b"] * 4 + ["c"], 2, 0).tolist().count(-1)
        1
    """
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(categories, dtype=object)
    values, counts = np.unique(labels, return_counts=True)
    frequent = np.isin(labels, values[counts >= folds])
    assignment = np.full(len(labels), -1, dtype=np.int64)
    rows = np.flatnonzero(frequent)
    if len(rows) and folds > 1:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        for fold, (_, held_out) in enumerate(splitter.split(rows, labels[rows])):
            assignment[rows[held_out]] = fold
    return assignment


def read_fold_scores(model_dir: str) -> dict[str, float]:
    """The scores of one finished fold (``FOLD_SCORES``); NaN for any the run did not write."""
    results = {}  # each file is read once, though several scores come from eval_results.json
    for filename in dict.fromkeys(filename for _, filename, _ in FOLD_SCORES):
        path = os.path.join(model_dir, filename)
        results[filename] = read_json(path) if os.path.exists(path) else {}
    scores = {}
    for name, filename, key in FOLD_SCORES:
        value = results[filename].get(key)
        scores[name] = float(value) if value is not None else math.nan
    return scores


def fold_key(args: argparse.Namespace, train_bytes: bytes) -> dict:
    """What makes two runs' folds the same: the data (file contents), k, the seed and the stratifying column."""
    return {"train_file_sha256": hashlib.sha256(train_bytes).hexdigest(), "folds": args.folds, "seed": args.seed,
            "label_column": args.label_column}


def run_key(folds: dict, args: argparse.Namespace, train_flags: list[str]) -> dict:
    """What makes a fold's scores reusable: the same ``folds`` (a ``fold_key``), text columns and flags."""
    return {**folds, "text_columns": args.text_columns, "train_flags": train_flags}


def finished_fold(fold_dir: str, key: dict) -> dict[str, float] | None:
    """The saved scores of a fold already trained under the same ``run_key``, else None."""
    path = os.path.join(fold_dir, "scores.json")
    if not os.path.exists(path):
        return None
    saved = read_json(path)
    return saved["scores"] if saved.get("key") == key else None


def read_json(path: str):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def summarise(folds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation over folds of every score."""
    names = [name for name, _, _ in FOLD_SCORES]
    table = np.array([[fold[name] for name in names] for fold in folds], dtype=np.float64)
    std = table.std(axis=0, ddof=1) if len(folds) > 1 else np.full(len(names), math.nan)
    return {"mean": dict(zip(names, table.mean(axis=0).tolist())), "std": dict(zip(names, std.tolist()))}


def compare(baseline: dict, candidate: dict) -> dict[str, dict[str, float]]:
    """Paired differences ``candidate - baseline`` per score: mean, standard error and per-fold values.

    se = sd(d_1..d_k) / sqrt(k), with d_i the difference on fold i. Both results must record the same
    ``fold_key`` (the same file contents, k, seed and label column).
    """
    for result in (baseline, candidate):
        if "fold_key" not in result:
            raise SystemExit(f"{result['name']}: the result does not record its folds; run recipe_cv.py --name "
                             f"{result['name']} again with the same flags (finished folds are reused) to rewrite it")
    if baseline["fold_key"] != candidate["fold_key"]:
        raise SystemExit("the two results were not cross-validated on the same folds "
                         "(train file contents, --folds, --seed and --label_column must match)")
    result = {}
    for name, _, _ in FOLD_SCORES:
        differences = np.array([c[name] - b[name] for b, c in zip(baseline["per_fold"], candidate["per_fold"])])
        se = differences.std(ddof=1) / math.sqrt(len(differences)) if len(differences) > 1 else math.nan
        result[name] = {"mean": float(differences.mean()), "se": float(se), "per_fold": differences.tolist()}
    return result


def run_recipe(args: argparse.Namespace, train_flags: list[str]) -> dict | None:
    """Train and score every fold of one recipe; returns the result written to OUTPUT_DIR/NAME.json."""
    train_path = args.train_file
    if train_path is None:
        paths = split_paths(args.dataset, args.data_dir)
        if paths is None:
            return None
        train_path = paths[0]
    with open(train_path, "rb") as handle:  # read once: parsed here and hashed for run_key
        train_bytes = handle.read()
    frame = pd.read_csv(io.BytesIO(train_bytes), dtype=str, keep_default_na=False)
    if args.label_column not in frame.columns:
        raise SystemExit(f"{train_path}: no column {args.label_column!r}; pass --label_column")
    assignment = fold_assignment(frame[args.label_column].tolist(), args.folds, args.seed)
    work = os.path.join(args.output_dir, args.name)
    per_fold = []
    wanted = set(args.only_folds or range(1, args.folds + 1))
    folds_of_this_run = fold_key(args, train_bytes)
    key = run_key(folds_of_this_run, args, train_flags)
    for fold in range(args.folds):
        fold_dir = os.path.join(work, f"fold_{fold}")
        saved = finished_fold(fold_dir, key)
        if saved is not None:  # a finished fold of the same recipe (an earlier or a parallel run)
            print(f"== {args.name}: fold {fold + 1} of {args.folds}: scores already in {fold_dir}", flush=True)
            per_fold.append(saved)
            continue
        if fold + 1 not in wanted:
            continue
        held_out = assignment == fold
        fold_train, fold_validation = os.path.join(fold_dir, "train.csv"), os.path.join(fold_dir, "validation.csv")
        write_frame(frame[~held_out], fold_train)
        write_frame(frame[held_out], fold_validation)
        model_dir = os.path.join(fold_dir, "model")
        command = [
            sys.executable, os.path.join(ROOT, "train.py"), "--train_file", fold_train, "--validation_file", fold_validation,
            "--text_columns", args.text_columns, "--label_column", args.label_column, "--output_dir", model_dir,
            "--seed", str(args.seed), *train_flags,
        ]
        print(f"== {args.name}: fold {fold + 1} of {args.folds} ({int((~held_out).sum())} train / "
              f"{int(held_out.sum())} validation rows)", flush=True)
        subprocess.run(command, check=True)
        per_fold.append(read_fold_scores(model_dir))
        print("   " + "  ".join(f"{k} {v:.4f}" for k, v in per_fold[-1].items()), flush=True)
        # Atomic: a run reusing finished folds (see --only_folds) never reads a half-written file.
        write_json(os.path.join(fold_dir, "scores.json"), {"key": key, "scores": per_fold[-1]})
        if not args.keep_models:
            shutil.rmtree(model_dir)
    if len(per_fold) < args.folds:
        print(f"{args.name}: {len(per_fold)} of {args.folds} folds finished; run again without --only_folds "
              "(finished folds are reused) to write the summary", flush=True)
        return None
    result = {
        "name": args.name, "train_file": os.path.abspath(train_path), "folds": args.folds, "seed": args.seed,
        "fold_key": folds_of_this_run, "train_flags": train_flags, "per_fold": per_fold, **summarise(per_fold),
    }
    write_json(os.path.join(args.output_dir, f"{args.name}.json"), result)
    return result


def format_result(result: dict) -> str:
    names = [name for name, _, _ in FOLD_SCORES]
    lines = [f"{result['name']} ({result['folds']} folds, flags: {' '.join(result['train_flags']) or 'defaults'})",
             "| fold | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for i, fold in enumerate(result["per_fold"], 1):
        lines.append(f"| {i} | " + " | ".join(f"{fold[n]:.4f}" for n in names) + " |")
    lines.append("| mean +- sd | " + " | ".join(f"{result['mean'][n]:.4f} +- {result['std'][n]:.4f}" for n in names) + " |")
    return "\n".join(lines)


def format_comparison(baseline: dict, candidate: dict) -> str:
    lines = [f"{candidate['name']} - {baseline['name']}, paired over {baseline['folds']} folds (mean +- standard error; per fold)"]
    for name, difference in compare(baseline, candidate).items():
        folds = ", ".join(f"{d:+.4f}" for d in difference["per_fold"])
        lines.append(f"  {name}: {difference['mean']:+.4f} +- {difference['se']:.4f}  ({folds})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="defaults", help="Name of the recipe (the result file's name).")
    parser.add_argument("--dataset", default="bigbasket-27k", help="Catalogue in --data_dir whose train.csv is split.")
    add_data_dir_argument(parser)
    parser.add_argument("--train_file", default=None, help="A training file instead of the catalogue's train.csv.")
    parser.add_argument("--text_columns", default="text")
    parser.add_argument("--label_column", default="category")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output_dir", default=os.path.join(ROOT, "bench_out", "cv"))
    parser.add_argument("--keep_models", action="store_true", help="Keep each fold's trained model.")
    parser.add_argument("--only_folds", type=int, nargs="+", metavar="N",
                        help="Train only these folds (1-based), e.g. one per core or machine; a later run without it "
                        "reuses every finished fold and writes the summary.")
    parser.add_argument("--compare", nargs=2, metavar=("BASELINE_JSON", "CANDIDATE_JSON"), help="Print paired differences and exit.")
    args = parser.parse_args(own)
    if args.compare:
        baseline, candidate = (read_json(path) for path in args.compare)
        print(format_comparison(baseline, candidate))
        return 0
    if args.folds < 2:
        parser.error("--folds must be at least 2")
    if args.only_folds and not all(1 <= fold <= args.folds for fold in args.only_folds):
        parser.error(f"--only_folds takes fold numbers from 1 to {args.folds}")
    os.makedirs(args.output_dir, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = run_recipe(args, train_flags)
    if result is not None:
        print("\n" + format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

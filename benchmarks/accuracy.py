"""Accuracy benchmark: prodcat (default recipe) against TF-IDF + LinearSVC and fastText.

Trains and scores every method on the fixed 80/20 splits of the two public catalogues (``--data_dir DIR``: a
folder holding ``bigbasket-27k/{train,test}.csv`` and ``pricerunner-35k/{train,test}.csv``; default
``$PRODCAT_DATA_DIR``, else ``shared/data`` beside the repository; see docs/benchmarks.md for where they come
from) and prints one table (accuracy, macro-F1, weighted-F1, per-level accuracy, hierarchical F1, train seconds,
predict items/s). ``--write`` also puts the table and a PNG bar chart into ``docs/benchmarks.md``.

    python benchmarks/accuracy.py                      # both datasets, all methods
    python benchmarks/accuracy.py --datasets pricerunner-35k --methods tfidf fasttext
    python benchmarks/accuracy.py --data_dir /data/catalogues          # the splits in another folder
    python benchmarks/accuracy.py --write              # update docs/benchmarks.md and docs/images/accuracy.png
    python benchmarks/accuracy.py --parallel --write   # the two datasets side by side, one core each
    python benchmarks/accuracy.py --datasets bigbasket-27k --seed 42 1 2   # one row per seed, then their mean

prodcat runs with its defaults: the only flags passed are the data files, the text column, the
output folder, the seed and the dataset's name for the model card (its validation split is carved from train.csv;
test.csv is only scored). ``--seed`` seeds every method; with several seeds each method gets one row per seed and a
row with their mean, and the chart shows the means. Seed 42 (prodcat's default) writes its models to
``OUTPUT_DIR/DATASET``, any other seed to ``OUTPUT_DIR/DATASET-seedN``.
One training run gives prodcat's two rows: ``prodcat`` is the default prediction path (the transformer
pooled with the n-gram model that training fits, as ``predict.py`` and ``Categorizer`` use it), and
``transformer`` is the same model's transformer alone (``--ensemble false``, what ``pipeline()`` loads).
Not in the default table (they double prodcat's training time): ``--methods refit refit_transformer`` trains with
``--refit_on_all_rows true`` and scores the all-rows model's two paths.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from common import IMAGES, ROOT, add_data_dir_argument, page_link, split_paths, write_benchmarks_block

if TYPE_CHECKING:
    from prodcat.core.artifacts import TrainingSummary

#: prodcat's default seed: its models keep the folder names they had before ``--seed`` took several values.
DEFAULT_SEED = 42

DATASETS = ["bigbasket-27k", "pricerunner-35k"]
METHODS = ["prodcat", "transformer", "tfidf", "fasttext"]
OPT_IN_METHODS = ["refit", "refit_transformer"]
METHOD_NAMES = {
    "prodcat": "prodcat defaults (transformer + n-gram model: predict.py, Categorizer)",
    "transformer": "prodcat's transformer alone (pipeline(), --ensemble false)",
    "tfidf": "TF-IDF (word 1-2 + char_wb 2-5) + LinearSVC",
    "fasttext": "fastText (lr 1.0, 25 epochs, wordNgrams 2)",
    "refit": "prodcat, refit on all rows (option: --refit_on_all_rows)",
    "refit_transformer": "prodcat, refit on all rows, transformer alone",
}


def run_tfidf(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> tuple[list[str], float, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.svm import LinearSVC

    model = make_pipeline(
        make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
        ),
        LinearSVC(C=1.0, random_state=seed),
    )
    start = time.perf_counter()
    model.fit(train.text.tolist(), train.category.tolist())
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    predicted = list(model.predict(test.text.tolist()))
    return predicted, train_seconds, len(test) / (time.perf_counter() - start)


def run_fasttext(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> tuple[list[str], float, float]:
    import fasttext

    names = sorted(set(train.category))
    token = {name: f"__label__{i}" for i, name in enumerate(names)}
    clean = lambda text: " ".join(str(text).lower().split())  # noqa: E731
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as handle:
        for text, category in zip(train.text, train.category):
            handle.write(f"{token[category]} {clean(text)}\n")
        path = handle.name
    try:
        start = time.perf_counter()
        # One thread: fastText's lock-free parallel SGD is not reproducible, and at lr 1.0 two threads moved
        # pricerunner's accuracy between 0.81 and 0.94 from run to run; one thread gives the same model each run.
        model = fasttext.train_supervised(path, lr=1.0, epoch=25, wordNgrams=2, dim=100, seed=seed, thread=1, verbose=0)
        train_seconds = time.perf_counter() - start
    finally:
        os.remove(path)
    start = time.perf_counter()
    labels, _ = model.predict([clean(t) for t in test.text])
    items_per_second = len(test) / (time.perf_counter() - start)
    predicted = [names[int(found[0].removeprefix("__label__"))] for found in labels]
    return predicted, train_seconds, items_per_second


def training_summary(output_dir: str) -> TrainingSummary | None:
    """The training summary a prodcat run left in ``output_dir``, or None when there is none."""
    from prodcat.core.artifacts import read_summary

    return read_summary(output_dir)


def model_dir(output_dir: str, dataset: str, seed: int) -> str:
    """Where prodcat's model for ``dataset`` and ``seed`` goes (the ``refit`` methods add ``-refit``).

    Example:
        >>> model_dir("bench_out", "bigbasket-27k", 42), model_dir("bench_out", "bigbasket-27k", 1)
        ('bench_out/bigbasket-27k', 'bench_out/bigbasket-27k-seed1')
    """
    return os.path.join(output_dir, dataset if seed == DEFAULT_SEED else f"{dataset}-seed{seed}")


#: Model folders trained by this process (a second method on the same folder scores it, never retrains it).
TRAINED: set[str] = set()


def train_prodcat(
    train_path: str, test_path: str, output_dir: str, dataset: str, seed: int = DEFAULT_SEED, reuse: bool = False,
    extra_flags: tuple = (),
) -> TrainingSummary:
    """Train prodcat with its defaults, ``seed`` and ``extra_flags`` into ``output_dir``; its training summary.

    With ``reuse``, or when this process already trained that folder, the model there is kept (it must have the
    same training file and seed).
    """
    from prodcat.training.config import parse_train_args
    from prodcat.training.run import run_training

    summary = training_summary(output_dir) if reuse or output_dir in TRAINED else None
    if summary is not None:
        if summary.train_file != os.path.basename(train_path):
            raise SystemExit(f"--reuse_models: {output_dir} was trained on {summary.train_file}, not {train_path}")
        if summary.seed != seed:
            raise SystemExit(f"--reuse_models: {output_dir} was trained with seed {summary.seed}, not {seed}")
        if output_dir not in TRAINED:
            print(f"   reusing the model in {output_dir} (train seconds as recorded by its training run)")
        return summary
    # Data and output locations, the seed and the card's dataset name: every training setting is a default.
    flags = ["--train_file", train_path, "--test_file", test_path, "--text_columns", "text", "--output_dir", output_dir,
             "--seed", str(seed), "--dataset_name", dataset, *extra_flags]
    run_training(*parse_train_args(flags))
    TRAINED.add(output_dir)
    return training_summary(output_dir)


def run_prodcat(
    train_path: str, test: pd.DataFrame, test_path: str, output_dir: str, dataset: str, seed: int = DEFAULT_SEED,
    reuse: bool = False, extra_flags: tuple = (), ensemble: bool = True,
) -> tuple[list[str], float, float]:
    """Train (or reuse) prodcat's model and predict ``test`` on its default path, or with ``ensemble=False`` on the
    transformer alone. Train seconds: the transformer's, plus the n-gram model's fit on the default path."""
    from prodcat.inference.categorizer import Categorizer

    summary = train_prodcat(train_path, test_path, output_dir, dataset, seed, reuse, extra_flags)
    categorizer = Categorizer.from_pretrained(output_dir, device="cpu", ensemble=None if ensemble else False)
    if ensemble and categorizer.ensemble is None:
        print(f"   {output_dir} has no n-gram model: its default path is the transformer alone")
    start = time.perf_counter()
    predicted = [p.category for p in categorizer.predict(test.text.tolist(), batch_size=64)]
    items_per_second = len(test) / (time.perf_counter() - start)
    return predicted, recorded_train_seconds(summary, ngram=categorizer.ensemble is not None), items_per_second


def recorded_train_seconds(summary: TrainingSummary, ngram: bool = False) -> float:
    """A training run's wall seconds as it recorded them, plus the held-out first run's with ``--refit_on_all_rows``,
    plus with ``ngram`` the n-gram model's fit."""
    first_run = (summary.refit_on_all_rows or {}).get("holdout_train_wall_seconds") or 0.0
    fit = (summary.result("ngram_ensemble").get("fit_seconds") or 0.0) if ngram else 0.0
    return float(summary.result("train")["train_wall_seconds"] + first_run + fit)


def run_method(
    method: str, train_path: str, train: pd.DataFrame, test: pd.DataFrame, test_path: str, output_dir: str, dataset: str,
    seed: int, reuse_models: bool,
) -> tuple[list[str], float, float] | None:
    """``(predicted test categories, train seconds, predict items/s)`` of one method; None when it was skipped."""
    if method in ("prodcat", "transformer"):
        return run_prodcat(train_path, test, test_path, output_dir, dataset, seed, reuse_models, ensemble=method == "prodcat")
    if method in ("refit", "refit_transformer"):
        return run_prodcat(
            train_path, test, test_path, output_dir + "-refit", dataset, seed, reuse_models, ("--refit_on_all_rows", "true"),
            ensemble=method == "refit",
        )
    if method == "tfidf":
        return run_tfidf(train, test, seed)
    return run_fasttext(train, test, seed)


def score(predicted: list[str], references: list[str]) -> dict[str, float]:
    from prodcat.core.hierarchy import normalize_path
    from prodcat.evaluation.metrics.taxonomy_metrics import taxonomy_scores

    return taxonomy_scores([normalize_path(p) for p in predicted], [normalize_path(r) for r in references])


def mean_rows(rows: list[dict]) -> list[dict]:
    """One row per (dataset, method) with the mean of its rows' scores and times, ``mean_of`` (their seeds) and
    ``macro_f1_range`` (the lowest and highest macro-F1 of those seeds).

    Example:
        >>> mean_rows([{"dataset": "d", "method": "m", "seed": 1, "macro_f1": 0.5},
        ...            {"dataset": "d", "method": "m", "seed": 2, "macro_f1": 0.75}])
        [{'dataset': 'd', 'method': 'm', 'mean_of': [1, 2], 'macro_f1_range': (0.5, 0.75), 'macro_f1': 0.625}]
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["method"]), []).append(row)
    means = []
    for (dataset, method), group in groups.items():
        macro_f1 = [row["macro_f1"] for row in group]
        mean = {"dataset": dataset, "method": method, "mean_of": [row["seed"] for row in group],
                "macro_f1_range": (min(macro_f1), max(macro_f1))}
        for key in group[0]:
            if key not in ("dataset", "method", "seed") and all(key in row for row in group):
                mean[key] = float(np.mean([row[key] for row in group]))
        means.append(mean)
    return means


def method_label(row: dict) -> str:
    """The table's method cell: the method's name, and its seed or seeds when the run had several."""
    if "mean_of" in row:
        low, high = row["macro_f1_range"]
        return f"{METHOD_NAMES[row['method']]}, mean of seeds {', '.join(map(str, row['mean_of']))} (macro-F1 {low:.3f}-{high:.3f})"
    if "seed" in row:
        return f"{METHOD_NAMES[row['method']]}, seed {row['seed']}"
    return METHOD_NAMES[row["method"]]


def format_table(rows: list[dict]) -> str:
    depth = max(int(m.group(1)) for row in rows for key in row for m in [re.match(r"level_(\d+)_accuracy", key)] if m)
    level_headers = [f"level-{k} acc" for k in range(1, depth + 1)]
    header = ["dataset", "method", "accuracy", "macro-F1", "weighted-F1", *level_headers, "hierarchical F1", "train s", "predict items/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        levels = [f"{row[f'level_{k}_accuracy']:.3f}" if f"level_{k}_accuracy" in row else "-" for k in range(1, depth + 1)]
        cells = [
            row["dataset"], method_label(row), f"{row['accuracy']:.3f}", f"{row['macro_f1']:.3f}",
            f"{row['weighted_f1']:.3f}", *levels, f"{row['hierarchical_f1']:.3f}", f"{row['train_seconds']:.0f}",
            f"{row['items_per_second']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        subset = [r for r in rows if r["dataset"] == dataset]
        x = np.arange(len(subset))
        ax.bar(x - 0.2, [r["accuracy"] for r in subset], 0.4, label="accuracy")
        ax.bar(x + 0.2, [r["macro_f1"] for r in subset], 0.4, label="macro-F1")
        ax.set_xticks(x, [r["method"] for r in subset])
        ax.set_ylim(0, 1)
        ax.set_title(dataset)
        for xi, r in zip(x, subset):
            ax.text(xi - 0.2, r["accuracy"] + 0.01, f"{r['accuracy']:.3f}", ha="center", fontsize=8)
            ax.text(xi + 0.2, r["macro_f1"] + 0.01, f"{r['macro_f1']:.3f}", ha="center", fontsize=8)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS + OPT_IN_METHODS)
    parser.add_argument("--output_dir", default=os.path.join(ROOT, "bench_out"), help="Where prodcat models are written.")
    parser.add_argument(
        "--seed", "--seeds", dest="seeds", type=int, nargs="+", default=[DEFAULT_SEED],
        help="Seed of every method (default 42). Several seeds: one row per seed and per method, then their mean.",
    )
    add_data_dir_argument(parser)
    parser.add_argument("--write", action="store_true", help="Update docs/benchmarks.md and docs/images/accuracy.png.")
    parser.add_argument(
        "--reuse_models", action="store_true",
        help="Score the prodcat models an earlier run left in --output_dir instead of retraining (train s as recorded then).",
    )
    parser.add_argument(
        "--parallel", action="store_true",
        help="Run each dataset in its own process pinned to its own core with one thread (the datasets train side by side).",
    )
    parser.add_argument("--rows_json", help=argparse.SUPPRESS)  # used by --parallel's child processes
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = run_parallel(args) if args.parallel and len(args.datasets) > 1 else run_datasets(args)
    if args.rows_json:
        with open(args.rows_json, "w") as handle:
            json.dump(rows, handle)
        return 0
    if not rows:
        print("no dataset found: nothing to benchmark")
        return 0
    if len(args.seeds) > 1:
        rows = rows + mean_rows(rows)
    table = format_table(rows)
    print("\n" + table)
    if args.write:
        png = os.path.join(IMAGES, "accuracy.png")
        plot([row for row in rows if "seed" not in row], png)  # the means when there are several seeds
        page = write_benchmarks_block("accuracy-table", f"{table}\n\n![accuracy and macro-F1]({page_link(png)})")
        print(f"wrote {os.path.relpath(page, ROOT)} and {os.path.relpath(png, ROOT)}")
    return 0


def run_parallel(args: argparse.Namespace) -> list[dict]:
    """One child process per dataset, each pinned to one core with one thread; rows come back as JSON."""
    cores = sorted(os.sched_getaffinity(0))
    children = []
    with tempfile.TemporaryDirectory() as folder:
        for i, dataset in enumerate(args.datasets):
            rows_json = os.path.join(folder, f"{i}.json")
            command = [sys.executable, os.path.abspath(__file__), "--datasets", dataset, "--methods", *args.methods,
                       "--output_dir", args.output_dir, "--seed", *map(str, args.seeds), "--data_dir", args.data_dir,
                       "--rows_json", rows_json]
            if args.reuse_models:
                command.append("--reuse_models")
            env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            core = cores[i % len(cores)]
            children.append((rows_json, subprocess.Popen(command, env=env, preexec_fn=lambda c=core: os.sched_setaffinity(0, {c}))))
        rows = []
        for rows_json, child in children:
            if child.wait() != 0:
                raise SystemExit(f"a benchmark process failed (exit {child.returncode})")
            with open(rows_json) as handle:
                rows.extend(json.load(handle))
    return rows


def run_datasets(args: argparse.Namespace) -> list[dict]:
    """Train and score every method on every dataset in this process; returns the table rows."""
    rows = []
    for dataset in args.datasets:
        paths = split_paths(dataset, args.data_dir)
        if paths is None:
            continue
        train_path, test_path = paths
        train = pd.read_csv(train_path, dtype=str, keep_default_na=False)
        test = pd.read_csv(test_path, dtype=str, keep_default_na=False)
        for seed in args.seeds:
            output_dir = model_dir(args.output_dir, dataset, seed)
            for method in args.methods:
                print(f"== {dataset}, seed {seed}: {METHOD_NAMES[method]}", flush=True)
                found = run_method(method, train_path, train, test, test_path, output_dir, dataset, seed, args.reuse_models)
                if found is None:
                    continue
                predicted, train_seconds, ips = found
                row = {"dataset": dataset, "method": method, "train_seconds": train_seconds, "items_per_second": ips}
                if len(args.seeds) > 1:
                    row["seed"] = seed
                row.update(score(predicted, test.category.tolist()))
                rows.append(row)
                print(format_table([row]), flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())

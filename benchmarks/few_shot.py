"""Few-shot curve: prodcat defaults against TF-IDF + LinearSVC and fastText with k examples per category.

Usage::

    python benchmarks/few_shot.py                      # k = 8, 32, 128 on bigbasket-27k
    python benchmarks/few_shot.py --shots 8 32 --write # also rewrite docs/benchmarks.md and docs/images/few_shot.png
    python benchmarks/few_shot.py --data_dir DIR       # DIR/bigbasket-27k/{train,test}.csv

For each k, the training set keeps at most k rows of every leaf category of ``bigbasket-27k/train.csv`` in
``--data_dir`` (default ``$PRODCAT_DATA_DIR``, else ``shared/data`` beside the repository). Rows are shuffled
once with ``--seed``, then the first k of each category are kept, so each smaller set is a subset of the larger
ones; categories with fewer rows keep all of theirs. Every method trains on that set, with the same ``--seed``,
and is scored on the full test split. prodcat runs with its defaults (its validation split is carved from the
sampled rows). Skips with a message when the data is absent.

Prints one table (examples per category, training rows, accuracy, macro-F1, train seconds per method)
and draws macro-F1 against examples per category.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import pandas as pd

from accuracy import METHOD_NAMES, METHODS, run_method, score
from common import IMAGES, ROOT, add_data_dir_argument, page_link, split_paths, write_benchmarks_block

DATASET = "bigbasket-27k"
DEFAULT_METHODS = ["prodcat", "transformer", "tfidf", "fasttext"]
SHORT_NAMES = {"prodcat": "prodcat (default)", "transformer": "transformer alone", "tfidf": "TF-IDF", "fasttext": "fastText"}


def sample_per_category(train: pd.DataFrame, k: int, seed: int, label_column: str = "category") -> pd.DataFrame:
    """At most ``k`` rows of each category; the seeded shuffle makes the k-row set a subset of the 2k-row one.

    >>> frame = pd.DataFrame({"text": list("abcde"), "category": ["x", "x", "x", "y", "y"]})
    >>> sorted(sample_per_category(frame, 2, seed=0).category)
    ['x', 'x', 'y', 'y']
    """
    shuffled = train.sample(frac=1.0, random_state=seed)
    return shuffled.groupby(label_column, sort=False).head(k).sort_index()


def format_table(rows: list[dict], methods: list[str]) -> str:
    header = ["examples per category", "training rows"]
    for method in methods:
        header += [f"{SHORT_NAMES[method]} accuracy", f"{SHORT_NAMES[method]} macro-F1", f"{SHORT_NAMES[method]} train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for shots in sorted({r["shots"] for r in rows}):
        subset = {r["method"]: r for r in rows if r["shots"] == shots}
        cells = [str(shots), f"{next(iter(subset.values()))['train_rows']:,}"]
        for method in methods:
            r = subset.get(method)
            cells += [f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}", f"{r['train_seconds']:.0f}"] if r else ["-"] * 3
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], methods: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric, title in zip(axes, ("macro_f1", "accuracy"), ("macro-F1", "accuracy")):
        for method in methods:
            points = sorted((r["shots"], r[metric]) for r in rows if r["method"] == method)
            if points:
                ax.plot(*zip(*points), marker="o", label=SHORT_NAMES[method])
        ax.set_xscale("log", base=2)
        shots = sorted({r["shots"] for r in rows})
        ax.set_xticks(shots, [str(s) for s in shots])
        ax.set_xlabel("training examples per category (at most)")
        ax.set_ylabel(f"test {title}")
        ax.set_title(f"{DATASET}: {title} vs examples per category")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", nargs="+", type=int, default=[8, 32, 128], help="Examples per category.")
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=METHODS)
    parser.add_argument("--output_dir", default=os.path.join(ROOT, "bench_out", "few_shot"), help="Where prodcat models go.")
    parser.add_argument("--seed", type=int, default=42)
    add_data_dir_argument(parser)
    parser.add_argument("--write", action="store_true", help="Rewrite the few-shot block of docs/benchmarks.md and its PNG.")
    parser.add_argument(
        "--reuse_models", action="store_true",
        help="Score the prodcat models an earlier run left in --output_dir instead of retraining (train s as recorded then).",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = split_paths(DATASET, args.data_dir)
    if paths is None:
        return 0
    train_path, test_path = paths
    train = pd.read_csv(train_path, dtype=str, keep_default_na=False)
    test = pd.read_csv(test_path, dtype=str, keep_default_na=False)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for shots in sorted(args.shots):
            subset = sample_per_category(train, shots, args.seed)
            subset_path = os.path.join(folder, f"train_{shots}.csv")
            subset.to_csv(subset_path, index=False)
            for method in args.methods:
                print(f"== {shots} per category ({len(subset):,} rows): {METHOD_NAMES[method]}", flush=True)
                output = os.path.join(args.output_dir, f"{DATASET}-{shots}")
                found = run_method(
                    method, subset_path, subset, test, test_path, output, f"{DATASET} ({shots} per category)", args.seed, args.reuse_models
                )
                if found is None:
                    continue
                predicted, seconds, _ = found
                row = {"shots": shots, "train_rows": len(subset), "method": method, "train_seconds": seconds}
                row.update(score(predicted, test.category.tolist()))
                rows.append(row)
                print(f"   accuracy {row['accuracy']:.3f}  macro-F1 {row['macro_f1']:.3f}  train {seconds:.0f} s", flush=True)
    table = format_table(rows, args.methods)
    header = (f"{DATASET}, scored on the full test split ({len(test):,} titles); training sets of at most k rows per "
              f"leaf category (seed {args.seed}).")
    print(f"\n{header}\n\n{table}")
    if args.write:
        png = os.path.join(IMAGES, "few_shot.png")
        plot(rows, args.methods, png)
        page = write_benchmarks_block(
            "few-shot", f"{header}\n\n{table}\n\n![macro-F1 against examples per category]({page_link(png)})"
        )
        print(f"wrote {os.path.relpath(page, ROOT)} and {os.path.relpath(png, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``prodcat evaluate``: score a trained model on a labelled file and write a report folder.

Example:
    $ prodcat evaluate --model outputs/model --test_file test.csv --report_dir outputs/report
    scored: transformer + n-gram model (torch)
    accuracy 0.7421  macro-F1 0.5893  hierarchical F1 0.8102  level-1 0.8791  ECE 0.0213
    report: outputs/report (metrics.json, per_class.csv, ... reliability.png)

It scores exactly the path ``predict.py`` would use with the same ``--backend``, ``--quantize`` and
``--ensemble`` flags: by default the transformer pooled with the model's n-gram model when the folder
has one; ``--ensemble false`` scores the transformer alone (what ``pipeline()`` returns).

Text columns, label column and sequence length default to what the model was trained with (read
from ``training_summary.json`` in the model folder), else ``description`` / ``category`` / 64.
"""

from __future__ import annotations

import argparse
import os

from prodcat.cli.predict import add_predictor_options
from prodcat.core.artifacts import read_summary
from prodcat.core.errors import ProdcatError
from prodcat.core.hierarchy import CANONICAL_SEPARATOR
from prodcat.data.columns import parse_text_columns
from prodcat.data.tables import load_table
from prodcat.evaluation.report import REPORT_FILES, write_report
from prodcat.inference.categorizer import Categorizer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prodcat evaluate",
        description="Score a trained prodcat model on a labelled file; write metrics, tables and plots.",
    )
    parser.add_argument("--model", required=True, help="Folder of a trained model (the --output_dir of prodcat train).")
    parser.add_argument("--test_file", required=True, help="Labelled data: .csv, .tsv, .jsonl or .parquet.")
    parser.add_argument("--report_dir", required=True, help="Folder for metrics.json, the CSV tables and the PNG plots.")
    parser.add_argument("--text_columns", default=None, help="Comma-separated text columns (default: as in training, else description).")
    parser.add_argument("--label_column", default=None, help="Category column (default: as in training, else category).")
    parser.add_argument("--label_separator", default=CANONICAL_SEPARATOR, help="Separator between category levels (default ' > ').")
    parser.add_argument("--batch_size", type=int, default=64, help="Texts per inference batch.")
    parser.add_argument("--max_seq_length", type=int, default=None, help="Tokens per text (default: as in training, else 64).")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available, else cpu).")
    parser.add_argument("--num_threads", type=int, default=None, help="CPU threads (default: all cores).")
    add_predictor_options(parser)
    return parser


def training_settings(model_dir: str) -> dict:
    """Columns and sequence length recorded in ``model_dir/training_summary.json`` ({} when absent).

    Example:
        >>> training_settings("outputs/model")
        {'text_columns': ['description'], 'label_column': 'category', 'max_seq_length': 64}
    """
    summary = read_summary(model_dir)
    if summary is None:
        return {}
    settings = {
        "text_columns": summary.text_columns,
        "label_column": summary.label_column,
        "max_seq_length": summary.max_seq_length,
    }
    return {k: v for k, v in settings.items() if v}


def main(argv: list[str]) -> int:
    """Run ``prodcat evaluate``; returns the exit code (ProdcatError for bad input)."""
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise ProdcatError(f"--batch_size must be at least 1 (got {args.batch_size})")
    if not os.path.isdir(args.model):
        raise ProdcatError(f"{args.model}: model folder not found; pass the --output_dir of prodcat train")
    trained = training_settings(args.model)
    text_columns = parse_text_columns(args.text_columns, trained.get("text_columns") or ["description"])
    label_column = args.label_column or trained.get("label_column") or "category"
    max_length = args.max_seq_length or int(trained.get("max_seq_length") or 64)
    if max_length < 1:
        raise ProdcatError(f"--max_seq_length must be at least 1 (got {max_length})")

    table = load_table(args.test_file, text_columns, label_column, args.label_separator)
    categorizer = Categorizer.from_pretrained(
        args.model, backend=args.backend, quantize=args.quantize, device=args.device, max_seq_length=max_length,
        num_threads=args.num_threads, recheck_margin=args.recheck_margin, ensemble=args.ensemble,
    )
    path = "transformer + n-gram model" if categorizer.ensemble is not None else "transformer alone"
    print(f"scored: {path} ({categorizer.backend})")
    scores, temperature = categorizer.log_scores(table.texts, args.batch_size)
    metrics = write_report(
        scores, categorizer.labels, table.texts, table.labels, args.report_dir, temperature=temperature,
        predictor="ensemble" if categorizer.ensemble is not None else "transformer", source_rows=table.source_rows,
    )
    parts = [
        f"accuracy {metrics['accuracy']:.4f}", f"macro-F1 {metrics['macro_f1']:.4f}", f"hierarchical F1 {metrics['hierarchical_f1']:.4f}"
    ]
    if "level_1_accuracy" in metrics:
        parts.append(f"level-1 {metrics['level_1_accuracy']:.4f}")
    if metrics.get("ece") is not None:
        parts.append(f"ECE {metrics['ece']:.4f} (T={metrics['temperature']:.2f})")
    print("  ".join(parts))
    print(f"{len(table)} rows scored", end="")
    dropped = table.dropped_empty_text + table.dropped_empty_label
    print(f" ({dropped} with empty text or label skipped)" if dropped else "", end="")
    unseen = metrics.get("num_unseen_reference_rows") or 0
    print(f"; {unseen} in categories the model never saw (counted as errors)" if unseen else "")
    print(f"report: {args.report_dir} ({', '.join(REPORT_FILES)})")
    return 0

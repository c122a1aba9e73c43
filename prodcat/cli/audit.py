"""``prodcat audit``: check a product file for conflicts, duplicates and leakage (see prodcat.data.audit)."""

from __future__ import annotations

import argparse

from prodcat.core.errors import ProdcatError
from prodcat.core.hierarchy import CANONICAL_SEPARATOR
from prodcat.core.io import write_json
from prodcat.data.audit import audit_tables
from prodcat.data.columns import parse_text_columns


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prodcat audit",
        description="Check a product file for empty rows, conflicting duplicates, label spelling variants, "
        "rare categories and train/test leakage.",
    )
    parser.add_argument("file", help="Training data: .csv, .tsv, .jsonl or .parquet.")
    parser.add_argument("--text_columns", default="description", help="Comma-separated text columns (default: description).")
    parser.add_argument("--label_column", default="category", help="Category column (default: category).")
    parser.add_argument("--label_separator", default=CANONICAL_SEPARATOR, help="Separator between category levels (default ' > ').")
    parser.add_argument("--validation_file", default=None, help="Validation data, checked for leakage from the file.")
    parser.add_argument("--test_file", default=None, help="Test data, checked for leakage from the file (and validation).")
    parser.add_argument("--min_count", type=int, default=5, help="Report categories with fewer training rows (default: 5).")
    parser.add_argument("--json_output", default=None, help="Also write every finding as JSON to this path.")
    parser.add_argument("--strict", action="store_true", help="Exit with status 1 on conflicting duplicates or leakage.")
    return parser


def main(argv: list[str]) -> int:
    """Run ``prodcat audit``: print the summary; exit 1 with ``--strict`` on blocking issues."""
    args = build_parser().parse_args(argv)
    if args.min_count < 1:
        raise ProdcatError(f"--min_count must be at least 1 (got {args.min_count})")
    columns = parse_text_columns(args.text_columns, default=["description"])
    report = audit_tables(
        args.file,
        columns,
        args.label_column,
        args.label_separator,
        validation_path=args.validation_file,
        test_path=args.test_file,
        min_count=args.min_count,
    )
    for line in report.summary_lines():
        print(line)
    if args.json_output:
        write_json(args.json_output, report.to_dict())
        print(f"details: {args.json_output}")
    return 1 if args.strict and report.has_blocking_issues() else 0

"""Data audit: find what would silently hurt training or inflate test scores, before training.

Checks, on the raw file (labels as written, before prodcat normalises them):

* rows with an empty text or an empty label (training drops them);
* duplicate texts: exact (the joined text the model sees) and case/whitespace-insensitive
  (Unicode NFKC, case-folded, whitespace collapsed), and which of them carry *conflicting*
  category paths (the model cannot get both right);
* label spelling variants: categories that differ only by case, spacing or the separator
  (``"Home > Bath"``, ``"home>bath"``, ``"Home / Bath"``) and would become separate classes;
* categories with fewer than ``min_count`` training rows;
* with a validation or test file: leakage, i.e. evaluation texts also in the training file
  (case/whitespace-insensitive), and evaluation categories never seen in training.

Conflicting duplicates and leakage are *blocking*: ``prodcat audit --strict`` exits 1 and
training with a strict audit stops (:func:`audit_for_training` raises ProdcatError).

Example:
    $ prodcat audit train.csv --text_columns title --test_file test.csv --json_output audit.json
    >>> report = audit_tables("train.csv", ["title"], "category", test_path="test.csv")
    >>> report.has_blocking_issues()
    True
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from prodcat.core.errors import ProdcatError
from prodcat.core.hierarchy import CANONICAL_SEPARATOR, max_depth, normalize_path
from prodcat.core.io import write_json
from prodcat.data.columns import check_text_columns, missing_columns_error
from prodcat.data.readers import read_frame, source_row_numbers
from prodcat.data.tables import join_text_columns

logger = logging.getLogger(__name__)

#: Separators treated as equivalent when looking for label spelling variants.
_SEPARATOR_CHARACTERS = ">/|\\»›"
#: Examples kept per finding in ``summary_lines`` (the JSON keeps every finding).
_SHOWN = 3


def normalize_text(text: str) -> str:
    """The key for case/whitespace-insensitive comparison: NFKC, case-folded, whitespace collapsed.

    Example:
        >>> normalize_text("  Chia  SEEDS ")
        'chia seeds'
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def label_variant_key(label: str, separator: str = CANONICAL_SEPARATOR) -> str:
    """Labels with equal keys differ only by case, spacing or separator character.

    Example:
        >>> label_variant_key("Home / Bath Towels") == label_variant_key("home>bathtowels")
        True
    """
    text = unicodedata.normalize("NFKC", str(label)).casefold()
    sep = separator.strip()
    if sep:
        text = text.replace(sep, ">")
    text = re.sub("[" + re.escape(_SEPARATOR_CHARACTERS) + "]+", ">", text)
    return re.sub(r"\s+", "", text)


@dataclass
class DuplicateGroup:
    """Rows sharing a text: ``kind`` is ``exact`` or ``normalized`` (equal only up to case/spacing)."""

    kind: str
    text: str
    rows: list[int]
    labels: list[str]  # distinct canonical category paths, sorted
    spellings: list[str] = field(default_factory=list)  # distinct texts (normalized groups)

    @property
    def conflicting(self) -> bool:
        return len(self.labels) > 1


@dataclass
class FileAudit:
    """Findings inside one file; rows are where each row is in its file (the line a CSV row starts on, see
    :func:`prodcat.data.readers.source_row_numbers`), so an editor can jump to them."""

    role: str
    path: str
    rows: int
    categories: int
    levels: int
    empty_text_rows: list[int]
    empty_label_rows: list[int]
    exact_duplicates: list[DuplicateGroup]
    normalized_duplicates: list[DuplicateGroup]

    @property
    def conflicting_exact(self) -> list[DuplicateGroup]:
        return [g for g in self.exact_duplicates if g.conflicting]

    @property
    def conflicting_normalized(self) -> list[DuplicateGroup]:
        return [g for g in self.normalized_duplicates if g.conflicting]


@dataclass
class LabelVariantGroup:
    """Spellings of what is probably one category, with how many rows (all files) use each."""

    key: str
    spellings: dict[str, int]  # raw spelling -> rows, most used first
    canonical: list[str]  # the distinct classes training would make of them


@dataclass
class Leakage:
    """Rows of an evaluation file (``role``) whose normalised text also occurs in ``other``."""

    role: str
    other: str
    rows: int  # evaluation rows whose text is also in ``other``
    distinct_texts: int
    different_label_rows: int  # ... of which the label differs from every label of that text in ``other``
    examples: list[dict]


@dataclass
class AuditReport:
    """Everything ``prodcat audit`` found; ``summary_lines()`` to print, ``to_dict()`` for JSON."""

    files: list[FileAudit]
    label_variants: list[LabelVariantGroup]
    min_count: int
    rare_categories: dict[str, int]  # training category -> rows, for categories below min_count
    leakage: list[Leakage]
    unseen_categories: dict[str, dict[str, int]]  # role -> {category: rows} for categories not in train

    def blocking_reasons(self) -> list[str]:
        """One short phrase per blocking finding (conflicting duplicates, leakage)."""
        reasons = []
        for audit in self.files:
            conflicts = len(audit.conflicting_exact) + len(audit.conflicting_normalized)
            if conflicts:
                reasons.append(f"{conflicts} duplicate text(s) with conflicting categories in {audit.path}")
        for leak in self.leakage:
            if leak.rows:
                reasons.append(f"{leak.rows} {leak.role} row(s) whose text is also in {leak.other}")
        return reasons

    def has_blocking_issues(self) -> bool:
        """True when there are conflicting duplicates or leakage (what ``--strict`` refuses)."""
        return bool(self.blocking_reasons())

    def counts(self) -> dict[str, int]:
        """Headline numbers (summed over files where it applies)."""
        return {
            "empty_text_rows": sum(len(f.empty_text_rows) for f in self.files),
            "empty_label_rows": sum(len(f.empty_label_rows) for f in self.files),
            "exact_duplicate_groups": sum(len(f.exact_duplicates) for f in self.files),
            "exact_conflicting_groups": sum(len(f.conflicting_exact) for f in self.files),
            "normalized_duplicate_groups": sum(len(f.normalized_duplicates) for f in self.files),
            "normalized_conflicting_groups": sum(len(f.conflicting_normalized) for f in self.files),
            "label_variant_groups": len(self.label_variants),
            "rare_categories": len(self.rare_categories),
            "leaked_rows": sum(leak.rows for leak in self.leakage),
            "leaked_rows_with_different_label": sum(leak.different_label_rows for leak in self.leakage),
            "unseen_category_rows": sum(sum(v.values()) for v in self.unseen_categories.values()),
        }

    def to_dict(self) -> dict:
        files = []
        for audit in self.files:
            entry = asdict(audit)
            for kind in ("exact_duplicates", "normalized_duplicates"):
                for group, raw in zip(getattr(audit, kind), entry[kind]):
                    raw["conflicting"] = group.conflicting
            files.append(entry)
        return {
            "counts": self.counts(),
            "blocking": self.blocking_reasons(),
            "files": files,
            "label_variants": [asdict(v) for v in self.label_variants],
            "min_count": self.min_count,
            "rare_categories": self.rare_categories,
            "leakage": [asdict(leak) for leak in self.leakage],
            "unseen_categories": self.unseen_categories,
        }

    def summary_lines(self, examples: int = _SHOWN) -> list[str]:
        """A readable summary: one line per check, with a few examples of each problem."""
        lines: list[str] = []
        for audit in self.files:
            lines.append(
                f"{audit.role} file {audit.path}: {audit.rows} rows, {audit.categories} categories, {audit.levels} level(s)"
            )
            lines.append(
                f"  empty text: {len(audit.empty_text_rows)} row(s){_rows_hint(audit.empty_text_rows)}; "
                f"empty label: {len(audit.empty_label_rows)} row(s){_rows_hint(audit.empty_label_rows)}"
            )
            lines.extend(_duplicate_lines("exact duplicate texts", audit.exact_duplicates, examples))
            lines.extend(_duplicate_lines("duplicates up to case/spacing", audit.normalized_duplicates, examples))
        if self.label_variants:
            lines.append(f"label spelling variants (case/spacing/separator): {len(self.label_variants)} group(s)")
            for group in self.label_variants[:examples]:
                shown = ", ".join(f"{s!r} ({n})" for s, n in group.spellings.items())
                lines.append(f"  {shown}")
        else:
            lines.append("label spelling variants (case/spacing/separator): none")
        train = self.files[0]
        singles = sum(1 for n in self.rare_categories.values() if n == 1)
        lines.append(
            f"categories with fewer than {self.min_count} training rows: {len(self.rare_categories)} of {train.categories}"
            + (f" ({singles} with a single row)" if singles else "")
        )
        for leak in self.leakage:
            lines.append(
                f"leakage: {leak.rows} {leak.role} row(s) ({leak.distinct_texts} distinct texts) also in {leak.other} "
                f"(case/spacing-insensitive), {leak.different_label_rows} of them with a different category"
            )
            for example in leak.examples[:examples]:
                lines.append(
                    f"  {leak.role} row {example['row']} = {leak.other} row {example['other_row']}: {_clip(example['text'])!r}"
                )
        for role, unseen in self.unseen_categories.items():
            lines.append(f"{role} categories never seen in training: {len(unseen)} ({sum(unseen.values())} rows, scored as errors)")
        reasons = self.blocking_reasons()
        lines.append("blocking issues (refused with --strict): " + ("; ".join(reasons) if reasons else "none"))
        return lines


def _clip(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _rows_hint(rows: list[int]) -> str:
    if not rows:
        return ""
    shown = ", ".join(str(r) for r in rows[:5])
    return f" (rows {shown}{', ...' if len(rows) > 5 else ''})"


def _duplicate_lines(title: str, groups: list[DuplicateGroup], examples: int) -> list[str]:
    conflicting = [g for g in groups if g.conflicting]
    rows = sum(len(g.rows) for g in groups)
    lines = [f"  {title}: {len(groups)} group(s) ({rows} rows), {len(conflicting)} with conflicting categories"]
    for group in conflicting[:examples]:
        lines.append(
            f"    rows {', '.join(map(str, group.rows[:4]))}{', ...' if len(group.rows) > 4 else ''}: "
            f"{_clip(group.text)!r} -> {' | '.join(group.labels)}"
        )
    return lines


@dataclass
class _Table:
    role: str
    path: str
    texts: list[str]
    raw_labels: list[str]
    labels: list[str]  # canonical; "" when empty
    rows: list[int]


def _read(role: str, path: str, text_columns: Sequence[str], label_column: str, separator: str) -> _Table:
    frame = read_frame(path)
    missing = [c for c in [*text_columns, label_column] if c not in frame.columns]
    if missing:
        raise missing_columns_error(path, missing, list(frame.columns))
    texts = join_text_columns(frame, list(text_columns))
    column = frame[label_column]
    if column.dtype != object:  # e.g. numeric category codes in Parquet, as load_table reads them
        column = column.astype(str)
    raw = [v if isinstance(v, str) else "" for v in column.tolist()]
    return _Table(role, path, texts, raw, [normalize_path(v, separator) for v in raw], source_row_numbers(frame))


def _audit_file(table: _Table) -> FileAudit:
    usable = [i for i, (text, label) in enumerate(zip(table.texts, table.labels)) if text and label]
    exact: dict[str, list[int]] = defaultdict(list)
    normalized: dict[str, list[int]] = defaultdict(list)
    for i in usable:
        exact[table.texts[i]].append(i)
        normalized[normalize_text(table.texts[i])].append(i)
    exact_groups = [
        DuplicateGroup("exact", text, [table.rows[i] for i in idx], sorted({table.labels[i] for i in idx}))
        for text, idx in exact.items()
        if len(idx) > 1
    ]
    normalized_groups = []
    for idx in normalized.values():
        spellings = sorted({table.texts[i] for i in idx})
        if len(spellings) > 1:  # groups of one spelling are already exact duplicates
            normalized_groups.append(
                DuplicateGroup(
                    "normalized", table.texts[idx[0]], [table.rows[i] for i in idx], sorted({table.labels[i] for i in idx}), spellings
                )
            )
    labels = [table.labels[i] for i in usable]
    return FileAudit(
        role=table.role,
        path=table.path,
        rows=len(table.texts),
        categories=len(set(labels)),
        levels=max_depth(labels),
        empty_text_rows=[table.rows[i] for i, t in enumerate(table.texts) if not t],
        empty_label_rows=[table.rows[i] for i, (text, label) in enumerate(zip(table.texts, table.labels)) if text and not label],
        exact_duplicates=exact_groups,
        normalized_duplicates=normalized_groups,
    )


def _label_variants(tables: list[_Table], separator: str) -> list[LabelVariantGroup]:
    spellings: dict[str, Counter] = defaultdict(Counter)
    for table in tables:
        for raw, label in zip(table.raw_labels, table.labels):
            if label:
                spellings[label_variant_key(raw, separator)][raw] += 1
    groups = []
    for key, counter in spellings.items():
        canonical = sorted({normalize_path(raw, separator) for raw in counter})
        if len(canonical) > 1:  # spellings that normalise to one class are harmless
            ordered = dict(sorted(counter.items(), key=lambda item: (-item[1], item[0])))
            groups.append(LabelVariantGroup(key, ordered, canonical))
    return sorted(groups, key=lambda g: (-sum(g.spellings.values()), g.key))


def _leakage(evaluation: _Table, other: _Table, keep_examples: int = 50) -> Leakage:
    other_rows: dict[str, int] = {}
    other_labels: dict[str, set[str]] = defaultdict(set)
    for text, label, row in zip(other.texts, other.labels, other.rows):
        if text:
            key = normalize_text(text)
            other_rows.setdefault(key, row)
            other_labels[key].add(label)
    rows = different = 0
    texts: set[str] = set()
    examples = []
    for text, label, row in zip(evaluation.texts, evaluation.labels, evaluation.rows):
        key = normalize_text(text) if text else ""
        if key and key in other_rows:
            rows += 1
            texts.add(key)
            differs = label not in other_labels[key]
            different += differs
            if len(examples) < keep_examples:
                examples.append(
                    {
                        "row": row,
                        "other_row": other_rows[key],
                        "text": text,
                        "label": label,
                        "other_labels": sorted(other_labels[key]),
                        "different_label": differs,
                    }
                )
    return Leakage(evaluation.role, other.role, rows, len(texts), different, examples)


def audit_tables(
    train_path: str,
    text_columns: Sequence[str],
    label_column: str,
    label_separator: str = CANONICAL_SEPARATOR,
    *,
    validation_path: str | None = None,
    test_path: str | None = None,
    min_count: int = 5,
) -> AuditReport:
    """Audit a training file and, optionally, validation/test files (see the module docstring).

    Raises ProdcatError for unreadable files or missing columns.
    """
    check_text_columns(text_columns)
    tables = [_read("train", train_path, text_columns, label_column, label_separator)]
    for role, path in (("validation", validation_path), ("test", test_path)):
        if path:
            tables.append(_read(role, path, text_columns, label_column, label_separator))
    train = tables[0]
    train_counts = Counter(label for text, label in zip(train.texts, train.labels) if text and label)
    rare = dict(sorted(((c, n) for c, n in train_counts.items() if n < min_count), key=lambda item: (item[1], item[0])))
    leakage = [_leakage(table, train) for table in tables[1:]]
    if validation_path and test_path:
        leakage.append(_leakage(tables[2], tables[1]))
    unseen = {}
    for table in tables[1:]:
        counter = Counter(label for text, label in zip(table.texts, table.labels) if text and label and label not in train_counts)
        unseen[table.role] = dict(sorted(counter.items(), key=lambda item: (-item[1], item[0])))
    return AuditReport(
        files=[_audit_file(table) for table in tables],
        label_variants=_label_variants(tables, label_separator),
        min_count=min_count,
        rare_categories=rare,
        leakage=leakage,
        unseen_categories=unseen,
    )


def audit_for_training(
    train_path: str,
    text_columns: Sequence[str],
    label_column: str,
    label_separator: str = CANONICAL_SEPARATOR,
    *,
    validation_path: str | None = None,
    test_path: str | None = None,
    min_count: int = 5,
    strict: bool = False,
    json_path: str | None = None,
) -> AuditReport:
    """Audit the training data, log a short summary, and with ``strict`` stop on blocking issues.

    Raises ProdcatError (one line listing the blocking findings) when ``strict`` and the data has
    conflicting duplicates or leakage; otherwise the findings are logged as warnings.
    """
    report = audit_tables(
        train_path, text_columns, label_column, label_separator, validation_path=validation_path, test_path=test_path, min_count=min_count
    )
    if json_path:
        write_json(json_path, report.to_dict())
    for line in report.summary_lines(examples=1):
        logger.info("audit: %s", line)
    reasons = report.blocking_reasons()
    if reasons and strict:
        raise ProdcatError(
            f"data audit failed: {'; '.join(reasons)}; run prodcat audit {train_path} for details, "
            "fix the data, or train without the strict audit"
        )
    if reasons:
        logger.warning("data audit: %s (training continues; see prodcat audit for details)", "; ".join(reasons))
    return report

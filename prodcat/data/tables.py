"""Product tables: the texts and canonical category paths of one file, cleaned for training or scoring.

The pipeline is: read the file (:mod:`prodcat.data.readers`) -> join the text columns -> normalise
the category paths -> drop empty rows (counted). :mod:`prodcat.data.splits` turns tables into
``datasets.Dataset`` objects.

Example:
    >>> table = load_table("data/sample_products.csv", ["description"], "category")
    >>> table.labels[0]
    'Beauty & Personal Care > Hair Care > Shampoo & Conditioner'
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from prodcat.core.errors import ProdcatError
from prodcat.core.hierarchy import CANONICAL_SEPARATOR, normalize_path
from prodcat.core.io import file_format
from prodcat.data.columns import missing_columns_error
from prodcat.data.readers import is_nested, read_frame, scalar_text, source_row_numbers

logger = logging.getLogger(__name__)


#: Longest text kept, in characters; longer texts are clipped (and counted in a warning). The model
#: never sees more than ``max_seq_length`` tokens (a few thousand characters at most), so nothing it
#: could use is lost, while a multi-megabyte cell (an HTML page or an image pasted into a
#: description) would otherwise cost seconds of tokenisation and memory for nothing.
MAX_TEXT_CHARS = 50_000

#: Whole-label spellings that mean "no category" when a catalogue is exported (pandas / NumPy
#: ``nan``, SQL ``NULL``, Python ``None``, R / Excel ``NA``, ``#N/A``); compared case-insensitively.
#: Rows with such a label are dropped and counted like rows with an empty label.
MISSING_LABEL_SPELLINGS = frozenset({"nan", "none", "null", "na", "n/a", "#n/a"})


@dataclass
class ProductTable:
    """Texts and canonical category paths of one file, with the row counts dropped on the way."""

    path: str
    texts: list[str]
    labels: list[str]
    source_rows: list[int]
    dropped_empty_text: int = 0
    dropped_empty_label: int = 0

    def __len__(self) -> int:
        return len(self.texts)


def _cell_as_text(value: object) -> str:
    """A text-column cell as text; lists (e.g. a JSON ``features`` array) are joined with ", "."""
    if is_nested(value):
        if isinstance(value, dict):
            return json.dumps(value, ensure_ascii=False)
        return ", ".join(_cell_as_text(v) for v in value)
    try:
        return scalar_text(value)
    except UnicodeDecodeError:
        return bytes(value).decode("utf-8", errors="replace")


def _join_text_columns(frame: pd.DataFrame, text_columns: Sequence[str]) -> tuple[list[str], int]:
    columns = []
    for column in text_columns:
        values = frame[column].tolist()
        if not all(isinstance(v, str) for v in values):
            values = [_cell_as_text(v) for v in values]
        columns.append(values)
    joined, clipped = [], 0
    for values in zip(*columns):
        parts = [" ".join(v.split()) for v in values]
        text = ". ".join(p for p in parts if p)
        if not text.isascii():
            # One spelling per character: "é" typed as e + combining accent is the same product text.
            text = unicodedata.normalize("NFC", text)
        if len(text) > MAX_TEXT_CHARS:
            text = text[:MAX_TEXT_CHARS]
            clipped += 1
        joined.append(text)
    return joined, clipped


def join_text_columns(frame: pd.DataFrame, text_columns: Sequence[str]) -> list[str]:
    """Join the chosen columns with ``". "`` between non-empty values, collapsing whitespace.

    Cells that are not strings become text (``3`` -> ``"3"``, missing -> ``""``, a list -> its items
    joined with ``", "``); the result is Unicode NFC and at most ``MAX_TEXT_CHARS`` characters.

    Example:
        >>> join_text_columns(pd.DataFrame({"title": ["Tea  bags"], "brand": [""]}), ["title", "brand"])
        ['Tea bags']
    """
    texts, clipped = _join_text_columns(frame, text_columns)
    if clipped:
        logger.warning("%d text(s) longer than %d characters clipped", clipped, MAX_TEXT_CHARS)
    return texts


def _label_text(value: object, path: str, column: str, row: int, unit: str) -> str:
    if is_nested(value):
        kind = "an object" if isinstance(value, dict) else "a list"
        raise ProdcatError(
            f"{path}: {unit} {row}, column {column!r} holds {kind}, not a category path; store one path string per "
            "product, e.g. 'Electronics > Audio' (levels joined with --label_separator)"
        )
    text = scalar_text(value)
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def load_table(
    path: str,
    text_columns: Sequence[str],
    label_column: str | None,
    label_separator: str = CANONICAL_SEPARATOR,
    *,
    require_rows: bool = True,
) -> ProductTable:
    """Read ``path`` and return texts and normalised labels, dropping (and counting) empty rows.

    ``label_column=None`` reads texts only (prediction). Raises ProdcatError for missing columns,
    listing the columns the file has, and for a file with a header but no rows (``require_rows``).

    Labels: any value is a category name (``3`` -> ``"3"``, a numeric category id is legitimate);
    it is NFC-normalised and put in canonical form by :func:`normalize_path` (stray separators
    such as ``"A >> B >"`` collapse to ``"A > B"``). Empty labels and the placeholders in
    ``MISSING_LABEL_SPELLINGS`` (``nan``, ``null``, ...) are dropped and counted. A list or object
    in the label column is an error naming the row. Texts longer than ``MAX_TEXT_CHARS`` are
    clipped and counted.

    Example:
        >>> load_table("data/sample_products.csv", ["description"], "category").dropped_empty_label
        0
    """
    if label_column and label_column in text_columns:
        raise ProdcatError(
            f"--text_columns includes the label column {label_column!r}: the model would read the answer; "
            "remove it from --text_columns"
        )
    wanted = [*text_columns, *([label_column] if label_column else [])]
    frame = _read_columns(path, wanted, require_rows)
    texts, clipped = _join_text_columns(frame, text_columns)
    if clipped:
        logger.warning("%s: %d text(s) longer than %d characters clipped", path, clipped, MAX_TEXT_CHARS)
    rows = source_row_numbers(frame)
    if label_column:
        labels, placeholders = _clean_labels(frame[label_column].tolist(), rows, path, label_column, label_separator)
    else:
        labels, placeholders = [""] * len(texts), 0
    keep, empty_text, empty_label = _usable_rows(texts, labels, needs_label=bool(label_column))
    if empty_text or empty_label:
        logger.warning(
            "%s: dropped %d row(s) with empty text and %d with an empty label%s",
            path,
            empty_text,
            empty_label,
            f" ({placeholders} of the labels were placeholders such as 'nan' or 'null')" if placeholders else "",
        )
    if require_rows and not keep:
        raise ProdcatError(f"{path}: no usable rows (every row has an empty text or label in {', '.join(wanted)})")
    return ProductTable(
        path=path,
        texts=[texts[i] for i in keep],
        labels=[labels[i] for i in keep],
        source_rows=[rows[i] for i in keep],  # see source_row_numbers
        dropped_empty_text=empty_text,
        dropped_empty_label=empty_label,
    )


def _read_columns(path: str, wanted: list[str], require_rows: bool) -> pd.DataFrame:
    """The file as :func:`read_frame` reads it, once it has the ``wanted`` columns (and rows)."""
    frame = read_frame(path)
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise missing_columns_error(path, missing, list(frame.columns))
    if require_rows and len(frame) == 0:
        raise ProdcatError(f"{path}: has a header but no product rows; add products below the header line")
    for column, kind in frame.attrs.get("column_types", {}).items():
        if column in wanted:
            logger.warning("%s: column %r has type %s; its %d values are used as text", path, column, kind, len(frame))
    return frame


def _clean_labels(values: list[object], rows: list[int], path: str, column: str, separator: str) -> tuple[list[str], int]:
    """Canonical category paths (``""`` for a missing one) and how many were placeholders such as ``nan``."""
    unit = "row" if file_format(path) == "parquet" else "line"
    labels, placeholders = [], 0
    for value, row in zip(values, rows):
        text = _label_text(value, path, column, row, unit)
        if text.strip().casefold() in MISSING_LABEL_SPELLINGS:
            placeholders += 1
            labels.append("")
        else:
            labels.append(normalize_path(text, separator))
    return labels, placeholders


def _usable_rows(texts: list[str], labels: list[str], needs_label: bool) -> tuple[list[int], int, int]:
    """Positions of the rows to keep, then the counts dropped for an empty text and for an empty label."""
    keep, empty_text, empty_label = [], 0, 0
    for i, (text, label) in enumerate(zip(texts, labels)):
        if not text:
            empty_text += 1
        elif needs_label and not label:
            empty_label += 1
        else:
            keep.append(i)
    return keep, empty_text, empty_label

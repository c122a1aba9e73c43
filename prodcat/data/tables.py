"""Loading product tables into ``datasets.Dataset`` objects ready for the Trainer.

The pipeline is: read a CSV / JSON Lines / Parquet file -> join the text columns -> normalise the
category paths -> drop empty rows (counted) -> ``ClassLabel`` with a sorted, stable order ->
stratified validation split -> ``map(batched=True)`` tokenisation.

Example:
    >>> table = load_table("data/sample_products.csv", ["description"], "category")
    >>> splits = build_splits(table, validation=None, test=None, validation_split=0.1, seed=42)
    >>> splits.label_names[0]
    'Beauty & Personal Care > Hair Care > Shampoo & Conditioner'
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, concatenate_datasets

from prodcat.core.errors import ProdcatError, first_line
from prodcat.core.hierarchy import CANONICAL_SEPARATOR, normalize_path, split_path
from prodcat.core.io import file_format

logger = logging.getLogger(__name__)

TEXT = "text"
LABEL_PATH = "category_path"
LABEL = "label"
#: Evaluation rows whose category never occurs in training get label id ``UNSEEN_BASE - k`` (k = the
#: category's index in ``Splits.unseen_names``): negative, so the loss ignores them, and decodable, so
#: metrics still know the true path (an error at the leaf, maybe right at a parent level). Far below
#: -100, which the Trainer uses as padding when it gathers labels.
UNSEEN_BASE = -1000


def decode_label_id(label_id: int, label_names: list[str], unseen_names: list[str]) -> str:
    """The category path of a label id produced by :func:`build_splits` (known or unseen)."""
    return label_names[label_id] if label_id >= 0 else unseen_names[UNSEEN_BASE - label_id]


#: Longest text kept, in characters; longer texts are clipped (and counted in a warning). The model
#: never sees more than ``max_seq_length`` tokens (a few thousand characters at most), so nothing it
#: could use is lost, while a multi-megabyte cell (an HTML page or an image pasted into a
#: description) would otherwise cost seconds of tokenisation and memory for nothing.
MAX_TEXT_CHARS = 50_000

#: Whole-label spellings that mean "no category" when a catalogue is exported (pandas / NumPy
#: ``nan``, SQL ``NULL``, Python ``None``, R / Excel ``NA``, ``#N/A``); compared case-insensitively.
#: Rows with such a label are dropped and counted like rows with an empty label.
MISSING_LABEL_SPELLINGS = frozenset({"nan", "none", "null", "na", "n/a", "#n/a"})

_SEPARATOR_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


def read_frame(path: str) -> pd.DataFrame:
    """Read a whole table; every scalar cell becomes a string (no NaN guessing: ``"NA"`` stays a product name).

    CSV / TSV cells are read verbatim; JSON Lines and Parquet values are turned into text the way a
    person would write them (``3`` -> ``"3"``, ``2.0`` -> ``"2"``, ``null`` / NaN -> ``""``, UTF-8
    bytes decoded). Nested values (lists, objects) are kept as they are; :func:`load_table` decides
    what they mean for the columns it uses. ``frame.attrs["source_rows"]`` holds where each row is in
    the file (see :func:`source_row_numbers`).

    Raises ProdcatError with the file name, and the line or column where known, for anything
    unreadable: missing or empty file, no header, duplicated column names, bytes that are not UTF-8,
    a row with more cells than the header, an unbalanced quote, a bad JSON line.

    Documented repairs: a UTF-8 byte order mark is ignored; column names are stripped of
    surrounding spaces and an empty one becomes ``Unnamed: <position>`` (pandas' name); blank lines
    are skipped; a CSV row with fewer cells than the header gets empty cells, and empty cells after
    the last column (a trailing separator) are dropped, each counted in a warning.
    """
    if not os.path.exists(path):
        raise ProdcatError(f"{path}: file not found; check the path")
    if os.path.isdir(path):
        raise ProdcatError(f"{path}: is a directory, expected a .csv, .jsonl or .parquet file")
    fmt = file_format(path)
    if os.path.getsize(path) == 0:
        raise ProdcatError(f"{path}: file is empty; it needs a header row and at least one product")
    try:
        if fmt in ("csv", "tsv"):
            frame = _read_delimited(path)
        elif fmt == "jsonl":
            frame = _read_jsonl(path)
        else:
            frame = _read_parquet(path)
    except ProdcatError:
        raise
    except UnicodeDecodeError:
        raise ProdcatError(f"{path}: {describe_decode_error(path)}") from None
    except MemoryError:
        raise ProdcatError(f"{path}: the file does not fit in memory; split it into smaller files") from None
    except Exception as err:  # pyarrow and friends raise many types; all mean "unreadable"
        raise ProdcatError(f"{path}: cannot read the file ({type(err).__name__}: {first_line(err)})") from None
    return frame


def source_row_numbers(frame: pd.DataFrame) -> list[int]:
    """Where each row of a :func:`read_frame` table is in its file, for messages and reports.

    CSV / TSV: the line on which the row starts (the header is line 1; a text with quoted line
    breaks makes later rows start further down). JSON Lines: the line number. Parquet: the row
    number counting the header as row 1, as a spreadsheet would show it. Frames not made by
    :func:`read_frame` get ``index + 2``.
    """
    rows = frame.attrs.get("source_rows")
    return list(rows) if rows is not None and len(rows) == len(frame) else [i + 2 for i in range(len(frame))]


@contextlib.contextmanager
def _large_csv_fields():
    # The csv module refuses cells over 128 KiB by default; a product export can have bigger ones
    # (they are clipped later, see MAX_TEXT_CHARS).
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _column_names(raw: list[str], path: str, line: int) -> list[str]:
    names = [name.strip() or f"Unnamed: {position}" for position, name in enumerate(raw)]
    seen: dict[str, int] = {}
    for position, name in enumerate(names):
        if name in seen:
            raise ProdcatError(
                f"{path}: columns {seen[name] + 1} and {position + 1} of the header (line {line}) are both named "
                f"{name!r}; give every column a unique name"
            )
        seen[name] = position
    return names


def _delimited_rows(path: str, sep: str) -> Iterator[tuple[list[str], int, list[str]]]:
    """``(header, line, cells)`` for every row of a CSV / TSV file, read with the ``csv`` module.

    The first item has ``line == 0`` and no cells (the header alone, so it can be read without the
    rows). pandas' parser is not used because it silently renames a duplicated ``name`` to
    ``name.1`` and, when every row has one cell more than the header, turns the first column into
    the index and shifts the others. Errors are ProdcatErrors naming the line.
    """
    header: list[str] | None = None
    padded = trimmed = 0
    try:
        with _large_csv_fields(), open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=sep)
            while True:
                start = reader.line_num + 1
                try:
                    record = next(reader)
                except StopIteration:
                    break
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue  # blank line
                if header is None:
                    header = _column_names(record, path, start)
                    yield header, 0, []
                    continue
                width = len(header)
                if len(record) != width and reader.line_num > start:
                    raise ProdcatError(
                        f"{path}: line {start}: a quoted text starting on this line runs on to line {reader.line_num} and the "
                        f"row has {len(record)} cells instead of {width}; check for an unbalanced quote (\")"
                    )
                if len(record) < width:
                    record = record + [""] * (width - len(record))
                    padded += 1
                elif len(record) > width:
                    if any(cell.strip() for cell in record[width:]):
                        name = _SEPARATOR_NAMES.get(sep, repr(sep))
                        raise ProdcatError(
                            f"{path}: line {start} has {len(record)} cells but the header has {width}; put texts that contain "
                            f"a {name} in double quotes (\"Pens, blue\") or remove the stray {name}s"
                        )
                    record = record[:width]
                    trimmed += 1
                yield header, start, record
    except UnicodeDecodeError:
        raise ProdcatError(f"{path}: {describe_decode_error(path)}") from None
    except csv.Error as err:
        raise ProdcatError(f"{path}: cannot parse the table ({first_line(err)}); check quoting and separators") from None
    if header is None:
        raise ProdcatError(f"{path}: file has no header row; the first line must name the columns")
    if padded:
        logger.warning("%s: %d row(s) have fewer cells than the header; the missing cells are read as empty", path, padded)
    if trimmed:
        logger.warning("%s: %d row(s) end with empty cells beyond the last column (a trailing separator); ignored", path, trimmed)


def _delimiter(path: str) -> str:
    fmt = file_format(path)
    if fmt not in ("csv", "tsv"):
        raise ValueError(f"{path}: not a CSV / TSV file")
    return "," if fmt == "csv" else "\t"


def _frame_of_rows(header: list[str], rows: list[list[str]], lines: list[int]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=header, dtype=object) if rows else pd.DataFrame({name: [] for name in header}, dtype=object)
    frame.attrs["source_rows"] = lines
    return frame


def _read_delimited(path: str) -> pd.DataFrame:
    # The whole file as one chunk; a file with a header and no rows still has its columns.
    for frame in iter_delimited_frames(path, chunk_size=sys.maxsize):
        return frame
    return _frame_of_rows(read_header(path), [], [])


def read_header(path: str) -> list[str]:
    """Column names of a CSV / TSV file exactly as :func:`read_frame` names them, reading only the header.

    Raises the same ProdcatErrors (duplicated names, not UTF-8, no header).
    """
    for header, _line, _cells in _delimited_rows(path, _delimiter(path)):
        return header
    raise ProdcatError(f"{path}: file has no header row; the first line must name the columns")  # pragma: no cover


def iter_delimited_frames(path: str, chunk_size: int) -> Iterator[pd.DataFrame]:
    """A CSV / TSV file as DataFrames of at most ``chunk_size`` rows, checked and repaired like :func:`read_frame`.

    For streaming (prediction on big files): memory stays bounded by the chunk size.
    """
    header: list[str] = []
    rows: list[list[str]] = []
    lines: list[int] = []
    for header, line, cells in _delimited_rows(path, _delimiter(path)):
        if not line:
            continue
        rows.append(cells)
        lines.append(line)
        if len(rows) == chunk_size:
            yield _frame_of_rows(header, rows, lines)
            rows, lines = [], []
    if rows:
        yield _frame_of_rows(header, rows, lines)


class _DuplicateKey(Exception):
    pass


def _object_without_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    obj: dict = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def iter_jsonl_rows(path: str) -> Iterator[tuple[int, dict]]:
    """``(line_number, object)`` for every non-blank line of a JSON Lines file, validated.

    A line that is not a JSON object, a repeated key, or a whole-file JSON array is a one-line
    ProdcatError naming the line. Training and prediction both read JSON Lines through this.
    """
    array_error = (
        f"{path}: a JSON array, not JSON Lines; write one product object per line "
        "(pandas: to_json(path, orient='records', lines=True))"
    )
    first = True
    with open(path, encoding="utf-8-sig") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line, object_pairs_hook=_object_without_duplicate_keys)
            except _DuplicateKey as key:
                raise ProdcatError(f"{path}: line {line_number} has the key {str(key)!r} twice; keep one") from None
            except json.JSONDecodeError as err:
                if first and line.lstrip().startswith("["):
                    raise ProdcatError(array_error) from None
                raise ProdcatError(f"{path}: line {line_number} is not valid JSON ({err.msg}); fix or remove that line") from None
            if not isinstance(row, dict):
                if first and isinstance(row, list):
                    raise ProdcatError(array_error)
                kind = "a JSON array" if isinstance(row, list) else "not a JSON object"
                raise ProdcatError(f"{path}: line {line_number} is {kind}; each line must be one product {{\"column\": value, ...}}")
            first = False
            yield line_number, row


def _read_jsonl(path: str) -> pd.DataFrame:
    rows: list[dict] = []
    lines: list[int] = []
    for line_number, row in iter_jsonl_rows(path):
        rows.append(row)
        lines.append(line_number)
    if not rows:
        raise ProdcatError(f"{path}: no JSON lines found; each line must be one product as a JSON object")
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    # Built column by column (not pd.DataFrame(rows)): pandas would turn integers into floats as
    # soon as one row lacks the key, and long numbers (barcodes) would lose digits.
    columns = {key: [row.get(key) for row in rows] for key in keys}
    frame = pd.DataFrame({key: _text_values(values, path, key, lines, "line") for key, values in columns.items()}, dtype=object)
    frame.attrs["source_rows"] = lines
    return frame


def parquet_columns(names: Sequence[str]) -> list[str]:
    """Physical Parquet columns, less the unnamed pandas index (``__index_level_0__``).

    A named pandas index (``df.set_index("sku").to_parquet(...)``) is stored as a column ``sku``
    and kept like any other column.
    """
    return [name for name in names if not re.fullmatch(r"__index_level_\d+__", name)]


def _read_parquet(path: str) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    names = parquet_columns(table.column_names)
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ProdcatError(f"{path}: duplicated column name(s) {', '.join(map(repr, duplicated))}; give every column a unique name")
    rows = list(range(2, table.num_rows + 2))
    data, types = {}, {}
    for name in names:
        column = table.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            types[name] = str(column.type)
        data[name] = _text_values(column.to_pylist(), path, name, rows, "row")
    frame = pd.DataFrame(data, dtype=object) if names else pd.DataFrame()
    frame.attrs["source_rows"] = rows
    frame.attrs["column_types"] = types  # non-string Parquet columns, reported when they are used
    return frame


def _is_nested(value) -> bool:
    return isinstance(value, (list, tuple, dict, set, np.ndarray))


def _scalar_text(value) -> str:
    """A scalar cell as text: ``None``/NaN -> ``""``, ``3``/``3.0`` -> ``"3"``, bytes decoded as UTF-8."""
    if isinstance(value, str):
        return value
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return ""
        # 3.0 -> "3": a category id or a size that went through a float column is still "3".
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8")
    return str(value)


def _text_values(values: list, path: str, column: str, rows: list[int], unit: str) -> list:
    out = []
    for value, row in zip(values, rows):
        if _is_nested(value):
            out.append(value)  # judged by load_table, only if the column is used
            continue
        try:
            out.append(_scalar_text(value))
        except UnicodeDecodeError:
            raise ProdcatError(
                f"{path}: {unit} {row}, column {column!r}: bytes that are not UTF-8 text; store the column as UTF-8 strings"
            ) from None
    return out


def describe_decode_error(path: str) -> str:
    """Which line of ``path`` holds the first byte that is not UTF-8, what the file probably is, and the fix.

    Example:
        >>> describe_decode_error("latin1.csv")
        'line 4 is not valid UTF-8 (byte 0xe9) (it looks like Windows-1252 / Latin-1: ...); save the file as UTF-8'
    """
    with open(path, "rb") as handle:
        data = handle.read()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "the file is UTF-16 (Excel 'Unicode Text'); save it as CSV UTF-8"
    try:
        data.decode("utf-8")
        return "not valid UTF-8; save the file as UTF-8"
    except UnicodeDecodeError as exact:
        line = data.count(b"\n", 0, exact.start) + 1
        hint = ""
        try:
            data.decode("cp1252")
            hint = " (it looks like Windows-1252 / Latin-1: re-save as UTF-8, e.g. iconv -f cp1252 -t utf-8)"
        except UnicodeDecodeError:
            pass
        return f"line {line} is not valid UTF-8 (byte 0x{data[exact.start]:02x}){hint}; save the file as UTF-8"


def _missing_columns_error(path: str, missing: list[str], header: list[str]) -> ProdcatError:
    shown = ", ".join(map(str, header[:30])) + (f", ... ({len(header)} columns)" if len(header) > 30 else "")
    hints = []
    if len(header) == 1:
        for sep, name in _SEPARATOR_NAMES.items():
            if sep in header[0]:
                fix = "rename it to .tsv" if sep == "\t" else "save it comma-separated"
                hints.append(f"the header looks {name}-separated: {fix}")
                break
    folded = {str(c).strip().casefold(): str(c) for c in header}
    for name in missing:
        match = folded.get(name.strip().casefold())
        if match is not None and match != name:
            hints.append(f"did you mean {match!r}?")
    hint = f"; {'; '.join(hints)}" if hints else ""
    return ProdcatError(
        f"{path}: no column {', '.join(repr(c) for c in missing)} (the file has: {shown}){hint}; "
        "pass --text_columns / --label_column"
    )


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


def _cell_as_text(value) -> str:
    """A text-column cell as text; lists (e.g. a JSON ``features`` array) are joined with ", "."""
    if _is_nested(value):
        if isinstance(value, dict):
            return json.dumps(value, ensure_ascii=False)
        return ", ".join(_cell_as_text(v) for v in value)
    try:
        return _scalar_text(value)
    except UnicodeDecodeError:
        return bytes(value).decode("utf-8", errors="replace")


def _join_text_columns(frame: pd.DataFrame, text_columns: list[str]) -> tuple[list[str], int]:
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


def join_text_columns(frame: pd.DataFrame, text_columns: list[str]) -> list[str]:
    """Join the chosen columns with ``". "`` between non-empty values, collapsing whitespace.

    Cells that are not strings become text (``3`` -> ``"3"``, missing -> ``""``, a list -> its items
    joined with ``", "``); the result is Unicode NFC and at most ``MAX_TEXT_CHARS`` characters.
    """
    texts, clipped = _join_text_columns(frame, text_columns)
    if clipped:
        logger.warning("%d text(s) longer than %d characters clipped", clipped, MAX_TEXT_CHARS)
    return texts


def _label_text(value, path: str, column: str, row: int, unit: str) -> str:
    if _is_nested(value):
        kind = "an object" if isinstance(value, dict) else "a list"
        raise ProdcatError(
            f"{path}: {unit} {row}, column {column!r} holds {kind}, not a category path; store one path string per "
            "product, e.g. 'Electronics > Audio' (levels joined with --label_separator)"
        )
    text = _scalar_text(value)
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def load_table(
    path: str,
    text_columns: list[str],
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
    """
    if label_column and label_column in text_columns:
        raise ProdcatError(
            f"--text_columns includes the label column {label_column!r}: the model would read the answer; "
            "remove it from --text_columns"
        )
    frame = read_frame(path)
    wanted = list(text_columns) + ([label_column] if label_column else [])
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise _missing_columns_error(path, missing, [str(c) for c in frame.columns])
    if require_rows and len(frame) == 0:
        raise ProdcatError(f"{path}: has a header but no product rows; add products below the header line")
    rows = source_row_numbers(frame)
    unit = "row" if file_format(path) == "parquet" else "line"
    for column, kind in frame.attrs.get("column_types", {}).items():
        if column in wanted:
            logger.warning("%s: column %r has type %s; its %d values are used as text", path, column, kind, len(frame))
    texts, clipped = _join_text_columns(frame, text_columns)
    if clipped:
        logger.warning("%s: %d text(s) longer than %d characters clipped", path, clipped, MAX_TEXT_CHARS)
    placeholders = 0
    if label_column:
        labels = []
        for value, row in zip(frame[label_column].tolist(), rows):
            text = _label_text(value, path, label_column, row, unit)
            if text.strip().casefold() in MISSING_LABEL_SPELLINGS:
                placeholders += 1
                labels.append("")
            else:
                labels.append(normalize_path(text, label_separator))
    else:
        labels = [""] * len(texts)
    keep, empty_text, empty_label = [], 0, 0
    for i, (text, label) in enumerate(zip(texts, labels)):
        if not text:
            empty_text += 1
        elif label_column and not label:
            empty_label += 1
        else:
            keep.append(i)
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


@dataclass
class Splits:
    """Train / validation / test ``Dataset`` objects sharing one ``ClassLabel``."""

    train: Dataset
    validation: Dataset | None
    test: Dataset | None
    label_names: list[str]
    train_only_classes: int = 0
    unseen: dict[str, int] = field(default_factory=dict)
    unseen_names: list[str] = field(default_factory=list)
    #: The threshold the split used (``min_category_rows`` or its fallback 2); None without a split.
    validation_min_category_rows: int | None = None

    @property
    def class_label(self) -> ClassLabel:
        return self.train.features[LABEL]


def _encode(
    table_texts: list[str], table_labels: list[str], class_label: ClassLabel, unseen_names: list[str] = ()
) -> Dataset:
    index = {name: i for i, name in enumerate(class_label.names)}
    index.update({name: UNSEEN_BASE - k for k, name in enumerate(unseen_names)})
    ids = [index[label] for label in table_labels]
    return Dataset.from_dict({TEXT: table_texts, LABEL_PATH: table_labels, LABEL: ids})


def _count_unseen(name: str, table: ProductTable | None, known: set[str]) -> int:
    if table is None:
        return 0
    unseen = Counter(label for label in table.labels if label not in known)
    if unseen:
        logger.warning(
            "%s: %d row(s) in %d categor%s never seen in training (scored as errors), e.g. %r",
            table.path,
            sum(unseen.values()),
            len(unseen),
            "y" if len(unseen) == 1 else "ies",
            next(iter(unseen)),
        )
    return sum(unseen.values())


def build_splits(
    train: ProductTable,
    validation: ProductTable | None,
    test: ProductTable | None,
    validation_split: float,
    seed: int,
    min_category_rows: int = 2,
) -> Splits:
    """Encode labels as a sorted ``ClassLabel`` and make a stratified validation split if needed.

    Without a validation table, ``validation_split`` of the training rows are held out, stratified
    by category and seeded, from the categories with at least ``min_category_rows`` rows. Smaller
    categories stay whole in train: one or two held-out rows say little about them and are a large
    share of what the model can learn from them. When the categories that qualify hold under half of
    the rows (a small or few-shot file), the threshold falls back to 2, and a category with a single
    example is all that stays in train. A warning counts the categories kept out of validation. A
    single category is an error, and so is a split when every category has a single example
    (nothing can be held out: pass ``validation_split=0``).
    """
    if not 0 <= validation_split < 1:
        raise ProdcatError(f"--validation_split must be at least 0 and below 1, got {validation_split}")
    if min_category_rows < 2:
        raise ProdcatError(f"--validation_min_category_rows must be at least 2, got {min_category_rows}")
    label_names = sorted(set(train.labels))
    if len(label_names) < 2:
        raise ProdcatError(
            f"{train.path}: only one category ({label_names[0]!r}) after cleaning; a classifier needs at least two"
        )
    class_label = ClassLabel(names=label_names)
    full = _encode(train.texts, train.labels, class_label).cast_column(LABEL, class_label)
    train_only_count = 0
    effective_min_rows = None
    train_ds = validation_ds = None
    if validation is None and validation_split > 0:
        counts = Counter(train.labels)
        effective_min_rows = min_category_rows
        qualifying_rows = sum(c for c in counts.values() if c >= min_category_rows)
        if min_category_rows > 2 and qualifying_rows * 2 < len(train.labels):
            logger.info(
                "categories with %d+ rows hold only %d of %d rows: validation is drawn from every category with 2+ rows",
                min_category_rows,
                qualifying_rows,
                len(train.labels),
            )
            effective_min_rows = 2
        splittable = [i for i, label in enumerate(train.labels) if counts[label] >= effective_min_rows]
        train_only = [i for i, label in enumerate(train.labels) if counts[label] < effective_min_rows]
        train_only_count = sum(1 for c in counts.values() if c < effective_min_rows)
        if train_only_count:
            logger.warning(
                "%d categor%s with %s stay in train only (not in the validation split)",
                train_only_count,
                "y" if train_only_count == 1 else "ies",
                "a single example" if effective_min_rows == 2 else f"fewer than {effective_min_rows} examples",
            )
        if not splittable:
            raise ProdcatError(
                f"{train.path}: every category has a single example ({len(label_names)} categories), so none can be "
                "held out for validation; pass --validation_split 0 to train without validation (no best-model "
                "selection or calibration), give a --validation_file, or add more examples per category"
            )
        n_val = int(round(validation_split * len(splittable)))
        if n_val < 1 or len(splittable) - n_val < 1:
            raise ProdcatError(
                f"{train.path}: too few rows with repeated categories ({len(splittable)}) to hold out "
                f"{validation_split:.0%} for validation; add data, pass --validation_file, or --validation_split 0"
            )
        pool = full.select(splittable)
        try:
            parts = pool.train_test_split(test_size=n_val, seed=seed, stratify_by_column=LABEL)
        except ValueError:
            # More categories than validation rows: stratification is impossible, fall back to random.
            logger.warning("validation split too small to stratify over %d categories; using a random split", len(label_names))
            parts = pool.train_test_split(test_size=n_val, seed=seed)
        train_ds = parts["train"]
        if train_only:
            train_ds = concatenate_datasets([train_ds, full.select(train_only)])
        validation_ds = parts["test"]
    known = set(label_names)
    unseen = {"validation": _count_unseen("validation", validation, known), "test": _count_unseen("test", test, known)}
    unseen_names = sorted({label for table in (validation, test) if table for label in table.labels} - known)
    if validation is not None:
        train_ds = full
        validation_ds = _encode(validation.texts, validation.labels, class_label, unseen_names)
    elif validation_split <= 0:
        train_ds, validation_ds = full, None
    test_ds = _encode(test.texts, test.labels, class_label, unseen_names) if test else None
    return Splits(train_ds, validation_ds, test_ds, label_names, train_only_count, unseen, unseen_names, effective_min_rows)


def category_name_text(path: str) -> str:
    """The text of a category's name example: its leaf name, then its parent's.

    Example:
        >>> category_name_text("Beauty & Hygiene > Hair Care > Hair Oil & Serum")
        'Hair Oil & Serum, Hair Care'
        >>> category_name_text("Toys")
        'Toys'
    """
    return ", ".join(reversed(split_path(path)[-2:]))


def add_category_name_examples(train: Dataset) -> Dataset:
    """``train`` plus one example per category whose text is the category's name (:func:`category_name_text`).

    Why: a category's name describes its products ("Hair Oil & Serum"), and a pretrained encoder
    reads it as language, so a rare category gains an example that no title can mislabel (measured in
    docs/experiments.md). The rows go to the training split only: validation and test scores stay about
    real titles.

    Example:
        >>> table = load_table("data/sample_products.csv", ["description"], "category")
        >>> splits = build_splits(table, None, None, 0.1, seed=42)
        >>> len(add_category_name_examples(splits.train)) - len(splits.train) == len(splits.label_names)
        True
    """
    names = train.features[LABEL].names
    rows = {TEXT: [category_name_text(name) for name in names], LABEL_PATH: list(names), LABEL: list(range(len(names)))}
    extra = Dataset.from_dict({column: rows[column] for column in train.column_names}, features=train.features)
    return concatenate_datasets([train, extra])


def tokenize(dataset: Dataset, tokenizer, max_seq_length: int) -> Dataset:
    """Tokenise the ``text`` column with ``map(batched=True)``; padding is left to the collator.

    A ``length`` column is kept for length-grouped batching.
    """

    def encode(batch: dict) -> dict:
        encoded = tokenizer(batch[TEXT], truncation=True, max_length=max_seq_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    return dataset.map(encode, batched=True, desc="Tokenizing", load_from_cache_file=False)


def label_counts(dataset: Dataset) -> np.ndarray:
    """Examples per class id in a training dataset."""
    names = dataset.features[LABEL].names
    return np.bincount(np.asarray(dataset[LABEL][:]), minlength=len(names))

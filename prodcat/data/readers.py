"""Reading product files: CSV / TSV, JSON Lines and Parquet, whole or in chunks, with one-line errors.

Every reader checks the file the same way (:func:`check_input_file`), names columns the same way
and turns whatever a parser raises into a ProdcatError naming the file, and the line or column
where known (bytes that are not UTF-8 get :func:`describe_decode_error`).

Example:
    >>> frame = read_frame("data/sample_products.csv")
    >>> source_row_numbers(frame)[:2]
    [2, 3]
    >>> reader = TableReader("data/sample_products.csv", chunk_size=100)
    >>> next(reader.chunks()).shape[0]
    100
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
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from prodcat.core.errors import ProdcatError, first_line
from prodcat.core.io import file_format
from prodcat.data.columns import SEPARATOR_NAMES

logger = logging.getLogger(__name__)


def check_input_file(path: str) -> str:
    """The format of an input file (``csv``, ``tsv``, ``jsonl``, ``parquet``) once it exists, is a file and is not empty.

    Example:
        >>> check_input_file("data/sample_products.csv")
        'csv'
    """
    if not os.path.exists(path):
        raise ProdcatError(f"{path}: file not found; check the path")
    if os.path.isdir(path):
        raise ProdcatError(f"{path}: is a directory, expected a .csv, .tsv, .jsonl or .parquet file")
    fmt = file_format(path)
    if os.path.getsize(path) == 0:
        raise ProdcatError(f"{path}: file is empty; it needs a header row and at least one product (JSON Lines: one object per line)")
    return fmt


@contextlib.contextmanager
def _read_errors(path: str) -> Iterator[None]:
    """Turn what a parser raises into a one-line ProdcatError naming ``path``."""
    try:
        yield
    except ProdcatError:
        raise
    except UnicodeDecodeError:
        raise ProdcatError(f"{path}: {describe_decode_error(path)}") from None
    except MemoryError:
        raise ProdcatError(f"{path}: the file does not fit in memory; split it into smaller files") from None
    except Exception as err:  # pyarrow and friends raise many types; all mean "unreadable"
        raise ProdcatError(f"{path}: cannot read the file ({type(err).__name__}: {first_line(err)})") from None


def read_frame(path: str) -> pd.DataFrame:
    """Read a whole table; every scalar cell becomes a string (no NaN guessing: ``"NA"`` stays a product name).

    CSV / TSV cells are read verbatim; JSON Lines and Parquet values are turned into text the way a
    person would write them (``3`` -> ``"3"``, ``2.0`` -> ``"2"``, ``null`` / NaN -> ``""``, UTF-8
    bytes decoded). Nested values (lists, objects) are kept as they are; ``tables.load_table`` decides
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
    fmt = check_input_file(path)
    with _read_errors(path):
        if fmt in ("csv", "tsv"):
            return _read_delimited(path)
        if fmt == "jsonl":
            return _read_jsonl(path)
        return _read_parquet(path)


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
def _large_csv_fields() -> Iterator[None]:
    # The csv module refuses cells over 128 KiB by default; a product export can have bigger ones
    # (they are clipped later, see tables.MAX_TEXT_CHARS).
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
                        name = SEPARATOR_NAMES.get(sep, repr(sep))
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


def _object_without_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
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


def is_nested(value: object) -> bool:
    """Whether a cell holds a list, tuple, set, array or object rather than one value.

    Example:
        >>> is_nested(["red", "blue"]), is_nested("red")
        (True, False)
    """
    return isinstance(value, (list, tuple, dict, set, np.ndarray))


def scalar_text(value: object) -> str:
    """A scalar cell as text: ``None``/NaN -> ``""``, ``3``/``3.0`` -> ``"3"``, bytes decoded as UTF-8.

    Example:
        >>> scalar_text(3.0), scalar_text(None), scalar_text(b"caf\xc3\xa9")
        ('3', '', 'café')
    """
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


def _text_values(values: list[object], path: str, column: str, rows: list[int], unit: str) -> list[object]:
    out = []
    for value, row in zip(values, rows):
        if is_nested(value):
            out.append(value)  # judged by tables.load_table, only if the column is used
            continue
        try:
            out.append(scalar_text(value))
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




class TableReader:
    """Reads a CSV / TSV / JSON Lines / Parquet file chunk by chunk (``columns``, ``rows_estimate``, ``chunks()``).

    For big files (prediction): memory stays bounded by ``chunk_size`` rows. Cells are left as the
    parser gives them (:func:`read_frame` turns them into text).

    Example:
        >>> reader = TableReader("products.parquet", chunk_size=8192)
        >>> reader.columns, reader.rows_estimate
        (['sku', 'title'], 120000)
    """

    def __init__(self, path: str, chunk_size: int) -> None:
        self.format = check_input_file(path)
        self.path = path
        self.chunk_size = chunk_size
        with _read_errors(path):
            self.columns, self.rows_estimate = self._inspect()

    def _inspect(self) -> tuple[list[str], int | None]:
        if self.format in ("csv", "tsv"):
            # Same checks and names as read_frame (duplicated / empty names, BOM, not UTF-8).
            return read_header(self.path), max(_count_lines(self.path) - 1, 0)
        if self.format == "jsonl":
            return self._jsonl_keys()
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(self.path)
        return parquet_columns(parquet.schema_arrow.names), parquet.metadata.num_rows

    def _jsonl_keys(self) -> tuple[list[str], int]:
        """One pass over a JSON Lines file: validate every line and collect the keys in first-seen order."""
        keys: dict[str, None] = {}
        rows = 0
        for _line_number, row in iter_jsonl_rows(self.path):
            rows += 1
            for key in row:
                keys.setdefault(key, None)
        if rows == 0:
            raise ProdcatError(f"{self.path}: no JSON lines found; each line must be one product as a JSON object")
        return list(keys), rows

    def chunks(self) -> Iterator[pd.DataFrame]:
        """DataFrames of at most ``chunk_size`` rows, in file order, with columns ``self.columns``."""
        with _read_errors(self.path):
            if self.format in ("csv", "tsv"):
                # The csv-module reader of read_frame: a stray separator or quote is an error naming the
                # line, never a silently shifted column.
                yield from iter_delimited_frames(self.path, self.chunk_size)
            elif self.format == "jsonl":
                yield from self._jsonl_chunks()
            else:
                import pyarrow.parquet as pq

                for record_batch in pq.ParquetFile(self.path).iter_batches(batch_size=self.chunk_size):
                    yield record_batch.to_pandas(ignore_metadata=True)[self.columns]

    def _jsonl_chunks(self) -> Iterator[pd.DataFrame]:
        batch: list[dict] = []
        for _line_number, row in iter_jsonl_rows(self.path):
            batch.append(row)
            if len(batch) == self.chunk_size:
                yield pd.DataFrame(batch, columns=self.columns)
                batch = []
        if batch:
            yield pd.DataFrame(batch, columns=self.columns)


def _count_lines(path: str) -> int:
    """Newlines in a file (a fast estimate of CSV rows for the progress bar)."""
    count = 0
    last = b"\n"
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")

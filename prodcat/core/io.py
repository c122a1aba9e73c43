"""Writing outputs safely: temporary file in the same folder, then an atomic rename.

A crash or Ctrl-C therefore never leaves a half-written output, and an existing file is only
replaced once the new one is complete.

Example:
    >>> with atomic_path("predictions.csv") as tmp:
    ...     frame.to_csv(tmp, index=False)
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import IO

import pandas as pd

from prodcat.core.errors import ProdcatError, first_line

#: File formats by extension: the one place that maps a path to its reader and writer.
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def file_format(path: str) -> str:
    """``csv``, ``tsv``, ``jsonl`` or ``parquet`` from the file extension, or a ProdcatError."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ProdcatError(
            f"{path}: unsupported file type '{ext or '(none)'}'; use .csv, .tsv, .jsonl or .parquet"
        )
    return FORMATS[ext]


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f"{suffix}.partial", dir=folder)
    os.close(handle)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the output the permissions a normal open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, payload) -> None:
    """Atomically write JSON (sorted keys, indented)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, ensure_ascii=False)
        handle.write("\n")


class TableWriter:
    """Appends DataFrames with the same columns to a CSV / TSV / JSON Lines / Parquet file: the one writer of tables.

    Example:
        >>> writer = TableWriter("out.csv", "csv")
        >>> writer.write(frame); writer.write(more_rows); writer.close()
        >>> writer.rows == len(frame) + len(more_rows)
        True
    """

    def __init__(self, path: str, fmt: str) -> None:
        if fmt not in FORMATS.values():
            raise ValueError(f"unknown table format {fmt!r}; expected one of {sorted(set(FORMATS.values()))}")
        self.path = path
        self.format = fmt
        self._handle: IO[str] | None = None
        self._parquet = None
        self._schema = None
        if fmt in ("csv", "tsv", "jsonl"):
            self._handle = open(path, "w", encoding="utf-8", newline="")
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        """Append ``frame``'s rows (CSV / TSV: with the header before the first rows)."""
        if self.format in ("csv", "tsv"):
            frame.to_csv(self._handle, header=self.rows == 0, index=False, sep="\t" if self.format == "tsv" else ",")
        elif self.format == "jsonl":
            if len(frame):
                text = frame.to_json(orient="records", lines=True, force_ascii=False)
                self._handle.write(text if text.endswith("\n") else text + "\n")
        else:
            self._write_parquet(frame)
        self.rows += len(frame)

    def _write_parquet(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._schema is None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            # A column that is empty in the first chunk has type null; later chunks need a real type.
            fields = [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in table.schema]
            self._schema = pa.schema(fields, metadata=table.schema.metadata)
            table = table.cast(self._schema)
            self._parquet = pq.ParquetWriter(self.path, self._schema)
        else:
            try:
                table = pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
                raise ProdcatError(
                    f"{self.path}: rows {self.rows + 1}-{self.rows + len(frame)} do not fit the column types of the first rows "
                    f"({first_line(err)}); write .csv or .jsonl instead"
                ) from None
        self._parquet.write_table(table)

    def close(self) -> None:
        """Finish the file (a Parquet file that got no frame is still a valid, empty Parquet file)."""
        if self._handle is not None:
            self._handle.close()
        if self._parquet is not None:
            self._parquet.close()
        elif self.format == "parquet" and self._schema is None:
            pd.DataFrame().to_parquet(self.path, index=False)


@contextlib.contextmanager
def atomic_table_writer(path: str) -> Iterator[TableWriter]:
    """A :class:`TableWriter` for ``path``'s format on a temporary file that replaces ``path`` only when the block succeeds.

    Example:
        >>> with atomic_table_writer("predictions.parquet") as writer:
        ...     for chunk in chunks:
        ...         writer.write(chunk)
    """
    fmt = file_format(path)
    with atomic_path(path) as tmp:
        writer = TableWriter(tmp, fmt)
        try:
            yield writer
        finally:
            writer.close()


def write_frame(frame: pd.DataFrame, path: str) -> None:
    """Atomically write a table as CSV, TSV, JSON Lines or Parquet (by extension).

    Example:
        >>> write_frame(pd.DataFrame({"sku": ["A1"]}), "out.jsonl")
    """
    with atomic_table_writer(path) as writer:
        writer.write(frame)

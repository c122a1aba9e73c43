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

import pandas as pd

from prodcat.core.errors import ProdcatError

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


def write_frame(frame: pd.DataFrame, path: str) -> None:
    """Atomically write a table as CSV, TSV, JSON Lines or Parquet (by extension)."""
    fmt = file_format(path)
    with atomic_path(path) as tmp:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        elif fmt == "tsv":
            frame.to_csv(tmp, index=False, sep="\t")
        elif fmt == "jsonl":
            frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            frame.to_parquet(tmp, index=False)

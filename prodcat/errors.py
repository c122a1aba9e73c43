"""User-facing errors: one line, naming the file/row/column and what to do; exit code 2."""

from __future__ import annotations


class ProdcatError(Exception):
    """A problem with the user's input or setup, reported as one line without a traceback.

    Example:
        >>> raise ProdcatError("data.csv: no column 'category' (columns: text, label); pass --label_column")
    """

    exit_code = 2

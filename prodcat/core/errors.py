"""User-facing errors: one line, naming the file/row/column and what to do; exit code 2."""

from __future__ import annotations


class ProdcatError(Exception):
    """A problem with the user's input or setup, reported as one line without a traceback.

    Example:
        >>> raise ProdcatError("data.csv: no column 'category' (columns: text, label); pass --label_column")
    """

    exit_code = 2


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line errors.

    Example:
        >>> first_line(ValueError("bad value")), first_line(ValueError())
        ('bad value', 'ValueError')
    """
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__

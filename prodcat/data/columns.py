"""Choosing columns: the ``--text_columns`` value every command parses, and the error for a missing column.

Example:
    >>> parse_text_columns(" title, brand,,description ", default=["description"])
    ['title', 'brand', 'description']
    >>> parse_text_columns(None, default=["text"])
    ['text']
"""

from __future__ import annotations

from collections.abc import Sequence

from prodcat.core.errors import ProdcatError

#: The one error for a ``--text_columns`` value that names no column, whichever command parses it.
EMPTY_TEXT_COLUMNS = "--text_columns is empty; name at least one column, e.g. --text_columns title,description"

#: Readable names of the separators a product export may use, for hints in error messages.
SEPARATOR_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


def parse_text_columns(value: str | None, default: Sequence[str]) -> list[str]:
    """The columns named in a comma-separated ``--text_columns`` value, or ``default`` when it is None.

    Names are stripped and empty ones dropped; a value that names nothing (``""``, ``" , "``) is a
    ProdcatError, never a silent fall-back, because the user asked for something explicitly.

    Example:
        >>> parse_text_columns("title,brand", default=["description"])
        ['title', 'brand']
    """
    columns = [c.strip() for c in value.split(",") if c.strip()] if value is not None else list(default)
    check_text_columns(columns)
    return columns


def check_text_columns(columns: Sequence[str]) -> None:
    """Raise the ``--text_columns`` ProdcatError when ``columns`` is empty.

    Example:
        >>> check_text_columns(["title"])
    """
    if not columns:
        raise ProdcatError(EMPTY_TEXT_COLUMNS)


def missing_columns_error(path: str, missing: Sequence[str], header: Sequence[str]) -> ProdcatError:
    """The error for columns a file lacks: the file's columns, and a hint for a wrong separator or case.

    Example:
        >>> str(missing_columns_error("p.csv", ["title"], ["Title", "category"]))
        "p.csv: no column 'title' (the file has: Title, category); did you mean 'Title'?; pass --text_columns / --label_column"
    """
    header = [str(c) for c in header]
    shown = ", ".join(header[:30]) + (f", ... ({len(header)} columns)" if len(header) > 30 else "")
    hints = []
    if len(header) == 1:
        for sep, name in SEPARATOR_NAMES.items():
            if sep in header[0]:
                fix = "rename it to .tsv" if sep == "\t" else "save it comma-separated"
                hints.append(f"the header looks {name}-separated: {fix}")
                break
    folded = {c.strip().casefold(): c for c in header}
    for name in missing:
        match = folded.get(name.strip().casefold())
        if match is not None and match != name:
            hints.append(f"did you mean {match!r}?")
    hint = f"; {'; '.join(hints)}" if hints else ""
    return ProdcatError(
        f"{path}: no column {', '.join(repr(c) for c in missing)} (the file has: {shown}){hint}; "
        "pass --text_columns / --label_column"
    )

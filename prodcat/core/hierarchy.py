"""Category paths: normalisation, levels and ancestor sets.

A category path is a string such as ``"Electronics > Audio > Headphones"``. prodcat keeps one
canonical spelling of each path (segments stripped, joined with ``" > "``) so that
``"Electronics>Audio"`` and ``" Electronics >  Audio "`` are the same class.

Example:
    >>> normalize_path("Electronics>Audio ", ">")
    'Electronics > Audio'
    >>> path_prefix("Electronics > Audio > Headphones", 2)
    'Electronics > Audio'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

#: Separator used inside prodcat for every canonical path, whatever the input used.
CANONICAL_SEPARATOR = " > "


def normalize_path(label: str, separator: str = CANONICAL_SEPARATOR) -> str:
    """Return the canonical spelling of a category path.

    The separator is matched with any surrounding whitespace (``" > "`` also matches ``">"``),
    inner whitespace runs collapse to one space, and empty segments (``"A >> B"``) are dropped.
    """
    sep = separator.strip() or separator
    parts = re.split(r"\s*" + re.escape(sep) + r"\s*", str(label).strip()) if sep else [str(label)]
    parts = [" ".join(p.split()) for p in parts]
    return CANONICAL_SEPARATOR.join(p for p in parts if p)


def split_path(path: str) -> list[str]:
    """Segments of a canonical path: ``"A > B"`` -> ``["A", "B"]``."""
    return path.split(CANONICAL_SEPARATOR) if path else []


def path_depth(path: str) -> int:
    """Number of levels in a canonical path."""
    return len(split_path(path))


def path_prefix(path: str, level: int) -> str:
    """The first ``level`` segments of ``path`` (the whole path when it is shallower)."""
    return CANONICAL_SEPARATOR.join(split_path(path)[:level])


def ancestors(path: str) -> list[str]:
    """The path and all its ancestors, shortest first: ``"A > B"`` -> ``["A", "A > B"]``."""
    parts = split_path(path)
    return [CANONICAL_SEPARATOR.join(parts[: i + 1]) for i in range(len(parts))]


def max_depth(paths: Iterable[str]) -> int:
    """Depth of the deepest path (0 for no paths)."""
    return max((path_depth(p) for p in paths), default=0)


def level_membership(labels: Sequence[str], level: int) -> tuple[list[str], np.ndarray]:
    """Map leaf labels to their level-``level`` ancestors.

    Returns ``(nodes, index)`` where ``nodes`` are the sorted distinct prefixes at that level and
    ``index[i]`` is the position in ``nodes`` of ``labels[i]``'s prefix. Summing leaf probabilities
    grouped by ``index`` gives the probability of each node (a parent's probability is the sum of
    its leaves).
    """
    prefixes = [path_prefix(label, level) for label in labels]
    nodes = sorted(set(prefixes))
    position = {node: i for i, node in enumerate(nodes)}
    return nodes, np.array([position[p] for p in prefixes], dtype=np.int64)

"""What the benchmark scripts share: where the data is, and how they rewrite their block of BENCHMARKS.md."""

from __future__ import annotations

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
#: The shared data folder beside the repository (see its SPLITS.md); benchmarks skip when it is absent.
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


def split_paths(dataset: str) -> tuple[str, str] | None:
    """``(train.csv, test.csv)`` of a shared dataset, or ``None`` (with a message) when either is absent."""
    train_path, test_path = (os.path.join(DATA, dataset, f"{split}.csv") for split in ("train", "test"))
    if not (os.path.exists(train_path) and os.path.exists(test_path)):
        print(f"skipping {dataset}: {train_path} / {test_path} not found (the shared/ data folder beside the repo)")
        return None
    return train_path, test_path


def write_benchmarks_block(name: str, body: str, path: str | None = None) -> str:
    """Replace the ``<!-- {name}:start -->`` ... ``<!-- {name}:end -->`` block of ``path`` with ``body``.

    ``path`` defaults to the repository's BENCHMARKS.md. The block is appended when the markers are
    missing; the file is replaced atomically. Returns its path.
    """
    from prodcat.io import atomic_path

    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    path = path or os.path.join(ROOT, "BENCHMARKS.md")
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Benchmarks\n"
    if start not in text:
        text = text.rstrip("\n") + f"\n\n{start}\n{end}\n"
    block = f"{start}\n{body.strip()}\n{end}"
    text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path

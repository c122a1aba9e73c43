"""What the benchmark scripts share: where the data is, and how they rewrite their block of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
#: The page whose marked blocks the scripts rewrite with ``--write``, and the folder for the charts it shows.
BENCHMARKS_PAGE = os.path.join(ROOT, "docs", "benchmarks.md")
IMAGES = os.path.join(ROOT, "docs", "images")
#: Environment variable naming the data folder when ``--data_dir`` is not given.
DATA_DIR_ENV = "PRODCAT_DATA_DIR"


def default_data_dir() -> str:
    """``$PRODCAT_DATA_DIR`` when set, else the ``shared/data`` folder beside the repository."""
    return os.environ.get(DATA_DIR_ENV) or os.path.join(os.path.dirname(ROOT), "shared", "data")


#: The data folder used when a script is given none: one sub-folder per catalogue holding ``train.csv`` and
#: ``test.csv`` (e.g. ``bigbasket-27k/train.csv``). Benchmarks skip with a message when a catalogue is absent.
DATA = default_data_dir()


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    """``--data_dir DIR`` (default: ``$PRODCAT_DATA_DIR``, else ``shared/data`` beside the repository)."""
    parser.add_argument(
        "--data_dir", default=default_data_dir(),
        help=f"Folder holding bigbasket-27k/{{train,test}}.csv and pricerunner-35k/{{train,test}}.csv "
        f"(default: ${DATA_DIR_ENV}, else shared/data beside the repository).",
    )


def split_paths(dataset: str, data_dir: str | None = None) -> tuple[str, str] | None:
    """``(train.csv, test.csv)`` of ``dataset`` in ``data_dir`` (default: ``default_data_dir()``), or ``None``
    (with a message) when either is absent."""
    folder = data_dir or default_data_dir()
    train_path, test_path = (os.path.join(folder, dataset, f"{split}.csv") for split in ("train", "test"))
    if not (os.path.exists(train_path) and os.path.exists(test_path)):
        print(f"skipping {dataset}: {train_path} / {test_path} not found (pass --data_dir DIR or set {DATA_DIR_ENV}: "
              f"a folder holding {dataset}/train.csv and {dataset}/test.csv)")
        return None
    return train_path, test_path


def page_link(path: str) -> str:
    """``path`` relative to the benchmarks page's folder, as a link in that page needs it.

    Example:
        >>> page_link(os.path.join(IMAGES, "accuracy.png"))
        'images/accuracy.png'
    """
    return os.path.relpath(path, os.path.dirname(BENCHMARKS_PAGE))


def write_benchmarks_block(name: str, body: str, path: str | None = None) -> str:
    """Replace the ``<!-- {name}:start -->`` ... ``<!-- {name}:end -->`` block of ``path`` with ``body``.

    ``path`` defaults to the repository's docs/benchmarks.md. The block is appended when the markers are
    missing; the file is replaced atomically. Returns its path.
    """
    from prodcat.core.io import atomic_path

    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    path = path or BENCHMARKS_PAGE
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Benchmarks\n"
    if start not in text:
        text = text.rstrip("\n") + f"\n\n{start}\n{end}\n"
    block = f"{start}\n{body.strip()}\n{end}"
    text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path

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

import logging
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset

from .errors import ProdcatError
from .hierarchy import CANONICAL_SEPARATOR, normalize_path

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

_READERS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def file_format(path: str) -> str:
    """``csv``, ``tsv``, ``jsonl`` or ``parquet`` from the file extension, or a ProdcatError."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in _READERS:
        raise ProdcatError(
            f"{path}: unsupported file type '{ext or '(none)'}'; use .csv, .tsv, .jsonl or .parquet"
        )
    return _READERS[ext]


def read_frame(path: str) -> pd.DataFrame:
    """Read a whole table as strings (no NaN guessing: ``"NA"`` stays a product name).

    Raises ProdcatError with the file name (and line where known) for anything unreadable.
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
            frame = pd.read_csv(
                path,
                sep="," if fmt == "csv" else "\t",
                dtype=str,
                keep_default_na=False,
                encoding="utf-8-sig",  # a BOM written by Excel is not part of the first column's name
            )
        elif fmt == "jsonl":
            frame = _read_jsonl(path)
        else:
            frame = pd.read_parquet(path)
    except ProdcatError:
        raise
    except UnicodeDecodeError as err:
        raise ProdcatError(f"{path}: {_decode_error_location(path, err)}; save the file as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise ProdcatError(f"{path}: file has no header row; the first line must name the columns") from None
    except pd.errors.ParserError as err:
        raise ProdcatError(f"{path}: cannot parse the table ({_first_line(err)}); check quoting and separators") from None
    except Exception as err:  # pyarrow and friends raise many types; all mean "unreadable"
        raise ProdcatError(f"{path}: cannot read the file ({type(err).__name__}: {_first_line(err)})") from None
    duplicated = [c for c in frame.columns if isinstance(c, str) and "." in c and c.rsplit(".", 1)[0] in frame.columns]
    if duplicated and fmt in ("csv", "tsv"):
        raise ProdcatError(
            f"{path}: duplicated column name(s) {', '.join(sorted({c.rsplit('.', 1)[0] for c in duplicated}))}; "
            "give every column a unique name"
        )
    return frame


def _read_jsonl(path: str) -> pd.DataFrame:
    import json

    rows = []
    with open(path, encoding="utf-8-sig") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ProdcatError(f"{path}: line {line_number} is not valid JSON ({err.msg}); fix or remove that line") from None
            if not isinstance(row, dict):
                raise ProdcatError(f"{path}: line {line_number} is not a JSON object; each line must be {{\"column\": value, ...}}")
            rows.append(row)
    if not rows:
        raise ProdcatError(f"{path}: no JSON lines found; each line must be one product as a JSON object")
    return pd.DataFrame(rows)


def _decode_error_location(path: str, err: UnicodeDecodeError) -> str:
    with open(path, "rb") as handle:
        data = handle.read()
    # The decoder's offset is relative to the chunk pandas handed it; find the first bad byte ourselves.
    try:
        data.decode("utf-8")
        return "not valid UTF-8"
    except UnicodeDecodeError as exact:
        line = data.count(b"\n", 0, exact.start) + 1
        return f"line {line} is not valid UTF-8 (byte 0x{data[exact.start]:02x})"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _missing_columns_error(path: str, missing: list[str], header: list[str]) -> ProdcatError:
    return ProdcatError(
        f"{path}: no column {', '.join(repr(c) for c in missing)} (the file has: {', '.join(map(str, header))}); "
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


def join_text_columns(frame: pd.DataFrame, text_columns: list[str]) -> list[str]:
    """Join the chosen columns with ``". "`` between non-empty values, collapsing whitespace."""
    columns = [frame[c].fillna("").astype(str).tolist() for c in text_columns]
    joined = []
    for values in zip(*columns):
        parts = [" ".join(v.split()) for v in values]
        joined.append(". ".join(p for p in parts if p))
    return joined


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
    listing the columns the file has.
    """
    frame = read_frame(path)
    wanted = list(text_columns) + ([label_column] if label_column else [])
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise _missing_columns_error(path, missing, [str(c) for c in frame.columns])
    texts = join_text_columns(frame, text_columns)
    if label_column:
        raw_labels = frame[label_column]
        if raw_labels.dtype != object:
            raw_labels = raw_labels.astype(str)
        labels = [normalize_path(v, label_separator) if isinstance(v, str) else "" for v in raw_labels.tolist()]
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
            "%s: dropped %d row(s) with empty text and %d with an empty label", path, empty_text, empty_label
        )
    if require_rows and not keep:
        raise ProdcatError(f"{path}: no usable rows (every row has an empty text or label in {', '.join(wanted)})")
    return ProductTable(
        path=path,
        texts=[texts[i] for i in keep],
        labels=[labels[i] for i in keep],
        source_rows=[i + 2 for i in keep],  # 1-based line number with the header on line 1 (CSV view)
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
    singleton_classes: int = 0
    unseen: dict[str, int] = field(default_factory=dict)
    unseen_names: list[str] = field(default_factory=list)

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
) -> Splits:
    """Encode labels as a sorted ``ClassLabel`` and make a stratified validation split if needed.

    Without a validation table, ``validation_split`` of the training rows are held out, stratified
    by category and seeded. Categories with a single example cannot be stratified: they stay in
    train, with a warning that counts them. A category needs at least 2 examples for the model to
    be trained at all; a single category is an error.
    """
    label_names = sorted(set(train.labels))
    if len(label_names) < 2:
        raise ProdcatError(
            f"{train.path}: only one category ({label_names[0]!r}) after cleaning; a classifier needs at least two"
        )
    class_label = ClassLabel(names=label_names)
    full = _encode(train.texts, train.labels, class_label).cast_column(LABEL, class_label)
    singleton_count = 0
    train_ds = validation_ds = None
    if validation is None and validation_split > 0:
        counts = Counter(train.labels)
        singleton_count = sum(1 for c in counts.values() if c == 1)
        splittable = [i for i, label in enumerate(train.labels) if counts[label] > 1]
        singletons = [i for i, label in enumerate(train.labels) if counts[label] == 1]
        if singleton_count:
            logger.warning(
                "%d categor%s with a single example stay in train only (not in the validation split)",
                singleton_count,
                "y" if singleton_count == 1 else "ies",
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
        if singletons:
            from datasets import concatenate_datasets

            train_ds = concatenate_datasets([train_ds, full.select(singletons)])
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
    return Splits(train_ds, validation_ds, test_ds, label_names, singleton_count, unseen, unseen_names)


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

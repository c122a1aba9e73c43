"""Train / validation / test ``datasets.Dataset`` objects ready for the Trainer.

From :class:`~prodcat.data.tables.ProductTable` objects: ``ClassLabel`` with a sorted, stable
order -> stratified validation split -> ``map(batched=True)`` tokenisation.

Example:
    >>> table = load_table("data/sample_products.csv", ["description"], "category")
    >>> splits = build_splits(table, validation=None, test=None, validation_split=0.1, seed=42)
    >>> splits.label_names[0]
    'Beauty & Personal Care > Hair Care > Shampoo & Conditioner'
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from datasets import ClassLabel, Dataset, concatenate_datasets

from prodcat.core.errors import ProdcatError
from prodcat.core.hierarchy import split_path
from prodcat.data.tables import ProductTable

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

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
    """The category path of a label id produced by :func:`build_splits` (known or unseen).

    Example:
        >>> decode_label_id(UNSEEN_BASE - 1, ["A", "B"], ["X", "Y"])
        'Y'
    """
    return label_names[label_id] if label_id >= 0 else unseen_names[UNSEEN_BASE - label_id]


@dataclass
class Splits:
    """Train / validation / test ``Dataset`` objects sharing one ``ClassLabel``."""

    train: Dataset
    validation: Dataset | None
    test: Dataset | None
    label_names: list[str]
    train_only_classes: int = 0
    unseen: dict[str, int] = field(default_factory=dict)
    unseen_names: list[str] = field(default_factory=list)

    @property
    def class_label(self) -> ClassLabel:
        return self.train.features[LABEL]


def _encode(
    table_texts: list[str], table_labels: list[str], class_label: ClassLabel, unseen_names: Sequence[str] = ()
) -> Dataset:
    index = {name: i for i, name in enumerate(class_label.names)}
    index.update({name: UNSEEN_BASE - k for k, name in enumerate(unseen_names)})
    ids = [index[label] for label in table_labels]
    return Dataset.from_dict({TEXT: table_texts, LABEL_PATH: table_labels, LABEL: ids})


def _count_unseen(table: ProductTable | None, known: set[str]) -> int:
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
    by category and seeded (see :func:`_hold_out_validation`). A single category is an error.
    Evaluation rows whose category never occurs in training are kept, with a negative label id
    (:data:`UNSEEN_BASE`), and counted in a warning.

    Example:
        >>> splits = build_splits(table, None, None, validation_split=0.1, seed=42)
        >>> len(splits.train) + len(splits.validation) == len(table)
        True
    """
    if not 0 <= validation_split < 1:
        raise ProdcatError(f"--validation_split must be at least 0 and below 1, got {validation_split}")
    label_names = sorted(set(train.labels))
    if len(label_names) < 2:
        raise ProdcatError(
            f"{train.path}: only one category ({label_names[0]!r}) after cleaning; a classifier needs at least two"
        )
    class_label = ClassLabel(names=label_names)
    train_ds = _encode(train.texts, train.labels, class_label).cast_column(LABEL, class_label)
    validation_ds, train_only = None, 0
    if validation is None and validation_split > 0:
        train_ds, validation_ds, train_only = _hold_out_validation(train_ds, train, validation_split, seed)
    known = set(label_names)
    unseen = {"validation": _count_unseen(validation, known), "test": _count_unseen(test, known)}
    unseen_names = sorted({label for table in (validation, test) if table for label in table.labels} - known)
    if validation is not None:
        validation_ds = _encode(validation.texts, validation.labels, class_label, unseen_names)
    test_ds = _encode(test.texts, test.labels, class_label, unseen_names) if test else None
    return Splits(train_ds, validation_ds, test_ds, label_names, train_only, unseen, unseen_names)


def _hold_out_validation(full: Dataset, train: ProductTable, validation_split: float, seed: int) -> tuple[Dataset, Dataset, int]:
    """``(train, validation, categories kept in train only)``: ``validation_split`` of the rows, stratified.

    Only categories with two or more rows give rows to validation: a category with a single
    example stays in train, where it is all the model can learn from (a warning counts them).
    Raises ProdcatError when every category has a single example, or when the split would leave
    validation or train empty.
    """
    counts = Counter(train.labels)
    splittable = [i for i, label in enumerate(train.labels) if counts[label] >= 2]
    singletons = [i for i, label in enumerate(train.labels) if counts[label] < 2]
    if singletons:
        logger.warning(
            "%d categor%s with a single example stay in train only (not in the validation split)",
            len(singletons),
            "y" if len(singletons) == 1 else "ies",
        )
    if not splittable:
        raise ProdcatError(
            f"{train.path}: every category has a single example ({len(counts)} categories), so none can be "
            "held out for validation; pass --validation_split 0 to train without validation (no best-model "
            "selection or calibration), give a --validation_file, or add more examples per category"
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
        logger.warning("validation split too small to stratify over %d categories; using a random split", len(counts))
        parts = pool.train_test_split(test_size=n_val, seed=seed)
    train_ds = concatenate_datasets([parts["train"], full.select(singletons)]) if singletons else parts["train"]
    return train_ds, parts["test"], len(singletons)


def category_name_text(path: str) -> str:
    """The text of a category's name example: its leaf name, then its parent's.

    Example:
        >>> category_name_text("Beauty & Hygiene > Hair Care > Hair Oil & Serum")
        'Hair Oil & Serum, Hair Care'
        >>> category_name_text("Toys")
        'Toys'
    """
    return ", ".join(reversed(split_path(path)[-2:]))


def add_category_name_examples(train: Dataset) -> Dataset:
    """``train`` plus one example per category whose text is the category's name (:func:`category_name_text`).

    Why: a category's name describes its products ("Hair Oil & Serum"), and a pretrained encoder
    reads it as language, so a rare category gains an example that no title can mislabel (measured in
    docs/experiments.md). The rows go to the training split only: validation and test scores stay about
    real titles.

    Example:
        >>> table = load_table("data/sample_products.csv", ["description"], "category")
        >>> splits = build_splits(table, None, None, 0.1, seed=42)
        >>> len(add_category_name_examples(splits.train)) - len(splits.train) == len(splits.label_names)
        True
    """
    names = train.features[LABEL].names
    rows = {TEXT: [category_name_text(name) for name in names], LABEL_PATH: list(names), LABEL: list(range(len(names)))}
    extra = Dataset.from_dict({column: rows[column] for column in train.column_names}, features=train.features)
    return concatenate_datasets([train, extra])


def tokenize(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, max_seq_length: int) -> Dataset:
    """Tokenise the ``text`` column with ``map(batched=True)``; padding is left to the collator.

    A ``length`` column is kept for length-grouped batching.

    Example:
        >>> tokenize(splits.train, tokenizer, max_seq_length=64).column_names[-1]
        'length'
    """

    def encode(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(batch[TEXT], truncation=True, max_length=max_seq_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    return dataset.map(encode, batched=True, desc="Tokenizing", load_from_cache_file=False)


def label_counts(dataset: Dataset) -> np.ndarray:
    """Examples per class id in a training dataset.

    Example:
        >>> label_counts(splits.train).sum() == len(splits.train)
        True
    """
    names = dataset.features[LABEL].names
    return np.bincount(np.asarray(dataset[LABEL][:]), minlength=len(names))

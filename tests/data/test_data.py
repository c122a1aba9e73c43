import logging

import pandas as pd
import pytest

from prodcat.core.errors import ProdcatError
from prodcat.core.io import write_frame
from prodcat.data.columns import EMPTY_TEXT_COLUMNS, parse_text_columns
from prodcat.data.readers import TableReader, iter_delimited_frames, read_frame
from prodcat.data.splits import (
    UNSEEN_BASE,
    add_category_name_examples,
    build_splits,
    category_name_text,
    decode_label_id,
    tokenize,
)
from prodcat.data.tables import load_table


def write_csv(path, rows, columns=("description", "category")):
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return str(path)


def balanced_rows(n_classes=4, per_class=10, prefix="Cat"):
    return [(f"item {c} number {i}", f"{prefix} > Sub{c % 2} > Leaf{c}") for c in range(n_classes) for i in range(per_class)]


def test_text_columns_are_joined_and_labels_normalised(tmp_path):
    path = write_csv(
        tmp_path / "p.csv",
        [("Lenovo", "ThinkPad 14", "Electronics>Computers>Laptops"), ("Sony", "", " Electronics > Audio ")],
        columns=("brand", "title", "category"),
    )
    table = load_table(path, ["brand", "title"], "category")
    assert table.texts == ["Lenovo. ThinkPad 14", "Sony"]
    assert table.labels == ["Electronics > Computers > Laptops", "Electronics > Audio"]


@pytest.mark.parametrize("ext", ["csv", "jsonl", "parquet"])
def test_all_formats_load_the_same(tmp_path, ext):
    frame = pd.DataFrame({"description": ["a red shirt", "NA"], "category": ["Clothing > Shirts", "Books > Misc"]})
    path = tmp_path / f"data.{ext}"
    if ext == "csv":
        frame.to_csv(path, index=False)
    elif ext == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    table = load_table(str(path), ["description"], "category")
    assert table.texts == ["a red shirt", "NA"]  # "NA" is a product name, not a missing value
    assert table.labels == ["Clothing > Shirts", "Books > Misc"]


def test_empty_rows_are_dropped_and_counted(tmp_path, caplog):
    path = write_csv(tmp_path / "p.csv", [("ok", "A > B"), ("", "A > B"), ("no label", ""), ("  ", "A > C")])
    with caplog.at_level(logging.WARNING):
        table = load_table(path, ["description"], "category")
    assert table.texts == ["ok"]
    assert (table.dropped_empty_text, table.dropped_empty_label) == (2, 1)
    assert "dropped 2 row(s) with empty text and 1 with an empty label" in caplog.text


def test_missing_column_lists_the_columns_the_file_has(tmp_path):
    path = write_csv(tmp_path / "p.csv", [("x", "A")], columns=("title", "label"))
    with pytest.raises(ProdcatError) as err:
        load_table(path, ["description"], "category")
    message = str(err.value)
    assert "p.csv" in message and "'description'" in message and "'category'" in message
    assert "title, label" in message and "\n" not in message


def test_missing_and_unknown_files_are_one_line_errors(tmp_path):
    with pytest.raises(ProdcatError, match="file not found"):
        read_frame(str(tmp_path / "nope.csv"))
    (tmp_path / "x.xlsx").write_text("a")
    with pytest.raises(ProdcatError, match="unsupported file type"):
        read_frame(str(tmp_path / "x.xlsx"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ProdcatError, match="empty"):
        read_frame(str(tmp_path / "empty.csv"))


@pytest.mark.parametrize(
    "value, default, expected",
    [
        (" title, brand,,description ", ["description"], ["title", "brand", "description"]),
        (None, ["text"], ["text"]),
        ("title", ["text"], ["title"]),
    ],
)
def test_text_columns_are_parsed_one_way(value, default, expected):
    assert parse_text_columns(value, default) == expected


@pytest.mark.parametrize("value", ["", " , ", ","])
def test_text_columns_naming_nothing_is_one_error(value):
    with pytest.raises(ProdcatError) as err:
        parse_text_columns(value, ["description"])
    assert str(err.value) == EMPTY_TEXT_COLUMNS


@pytest.mark.parametrize("name, content, message", [("nope.csv", None, "file not found"), ("empty.jsonl", "", "file is empty")])
def test_whole_and_streaming_readers_check_files_alike(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    errors = []
    for read in (read_frame, lambda p: TableReader(p, chunk_size=10)):
        with pytest.raises(ProdcatError, match=message) as err:
            read(str(path))
        errors.append(str(err.value))
    assert errors[0] == errors[1]
    with pytest.raises(ProdcatError, match="is a directory"):
        TableReader(str(tmp_path), chunk_size=10)


@pytest.mark.parametrize("extension", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_written_tables_read_back_the_same(tmp_path, extension):
    path = str(tmp_path / f"t{extension}")
    write_frame(pd.DataFrame({"sku": ["007", "12"], "title": ["Pens, blue", "Mug"]}), path)
    assert read_frame(path).to_dict("list") == {"sku": ["007", "12"], "title": ["Pens, blue", "Mug"]}
    chunks = list(TableReader(path, chunk_size=1).chunks())
    assert [c["title"].tolist() for c in chunks] == [["Pens, blue"], ["Mug"]]


def test_csv_reads_whole_with_source_lines_and_a_header_only_file_keeps_its_columns(tmp_path):
    # read_frame and the streaming reader share one parser: the same file reads the same both ways.
    path = tmp_path / "p.csv"
    path.write_text('title,category\n\n"Pens, blue",Office\nMug,Kitchen\n', encoding="utf-8")
    frame = read_frame(str(path))
    assert list(frame.columns) == ["title", "category"]
    assert frame["title"].tolist() == ["Pens, blue", "Mug"]
    assert frame.attrs["source_rows"] == [3, 4]  # the blank line 2 is skipped, not counted
    chunks = list(iter_delimited_frames(str(path), chunk_size=1))
    assert [c["title"].tolist() for c in chunks] == [["Pens, blue"], ["Mug"]]
    (tmp_path / "h.csv").write_text("title,category\n", encoding="utf-8")
    header_only = read_frame(str(tmp_path / "h.csv"))
    assert list(header_only.columns) == ["title", "category"] and len(header_only) == 0


def test_label_mapping_is_sorted_and_round_trips(tmp_path):
    rows = balanced_rows()
    table = load_table(write_csv(tmp_path / "p.csv", rows[::-1]), ["description"], "category")
    splits = build_splits(table, None, None, validation_split=0.2, seed=1)
    assert splits.label_names == sorted(splits.label_names)
    class_label = splits.class_label
    for name in splits.label_names:
        assert class_label.int2str(class_label.str2int(name)) == name
    decoded = [splits.label_names[i] for i in splits.train["label"][:]]
    assert decoded == splits.train["category_path"][:]


def test_stratified_split_is_deterministic_and_keeps_singletons_in_train(tmp_path, caplog):
    rows = balanced_rows(per_class=10) + [("one of a kind", "Rare > Only > One"), ("another rare", "Rare > Only > Two")]
    table = load_table(write_csv(tmp_path / "p.csv", rows), ["description"], "category")
    with caplog.at_level(logging.WARNING):
        first = build_splits(table, None, None, validation_split=0.2, seed=3)
    second = build_splits(table, None, None, validation_split=0.2, seed=3)
    assert first.validation["text"][:] == second.validation["text"][:]
    assert len(first.validation) == 8  # 20% of the 40 splittable rows
    val_labels = first.validation["category_path"][:]
    assert sorted(set(val_labels)) == sorted({r[1] for r in balanced_rows()})  # every class, stratified
    assert all(v.count(label) == 2 for v in [val_labels] for label in set(val_labels))
    assert "Rare > Only > One" in first.train["category_path"][:]
    assert first.train_only_classes == 2
    assert "2 categories with a single example stay in train" in caplog.text
    other_seed = build_splits(table, None, None, validation_split=0.2, seed=4)
    assert other_seed.validation["text"][:] != first.validation["text"][:]


def test_every_category_with_two_rows_gives_rows_to_validation(tmp_path):
    # 4 categories with 10 rows and 3 with 4 rows: the small ones are held out from too.
    rows = balanced_rows(per_class=10) + balanced_rows(n_classes=3, per_class=4, prefix="Small")
    table = load_table(write_csv(tmp_path / "p.csv", rows), ["description"], "category")
    splits = build_splits(table, None, None, validation_split=0.2, seed=3)
    small = {r[1] for r in balanced_rows(n_classes=3, per_class=4, prefix="Small")}
    assert small & set(splits.validation["category_path"][:])
    assert splits.train_only_classes == 0 and len(splits.train) + len(splits.validation) == len(table)
    without_split = build_splits(table, None, None, validation_split=0.0, seed=3)
    assert without_split.validation is None and len(without_split.train) == len(table)
    with pytest.raises(ProdcatError, match="--validation_split must be at least 0 and below 1"):
        build_splits(table, None, None, validation_split=1.0, seed=3)


def test_unseen_labels_warn_and_decode(tmp_path, caplog):
    train = load_table(write_csv(tmp_path / "t.csv", balanced_rows()), ["description"], "category")
    test = load_table(
        write_csv(tmp_path / "test.csv", [("item 0 number 1", "Cat > Sub0 > Leaf0"), ("brand new", "Cat > Sub0 > Leaf9")]),
        ["description"],
        "category",
    )
    with caplog.at_level(logging.WARNING):
        splits = build_splits(train, None, test, validation_split=0.1, seed=1)
    ids = splits.test["label"][:]
    assert ids[0] >= 0 and ids[1] == UNSEEN_BASE
    assert decode_label_id(ids[1], splits.label_names, splits.unseen_names) == "Cat > Sub0 > Leaf9"
    assert splits.unseen["test"] == 1
    assert "never seen in training" in caplog.text


def test_single_class_is_an_error(tmp_path):
    table = load_table(write_csv(tmp_path / "p.csv", [("a", "X"), ("b", "X")]), ["description"], "category")
    with pytest.raises(ProdcatError, match="only one category"):
        build_splits(table, None, None, 0.1, 1)


def test_tokenize_keeps_lengths_for_grouping(tmp_path):
    from prodcat.modeling.loading import default_model_path, load_tokenizer

    table = load_table(write_csv(tmp_path / "p.csv", balanced_rows(2, 3)), ["description"], "category")
    splits = build_splits(table, None, None, 0.0, 1)
    tokenizer = load_tokenizer(default_model_path())
    encoded = tokenize(splits.train, tokenizer, max_seq_length=4)
    assert max(encoded["length"][:]) == 4  # truncated to max_seq_length
    assert encoded["length"][:] == [len(ids) for ids in encoded["input_ids"][:]]


@pytest.mark.parametrize(
    "path, text",
    [
        ("Beauty & Hygiene > Hair Care > Hair Oil & Serum", "Hair Oil & Serum, Hair Care"),
        ("A > B > C > Leaf", "Leaf, C"),
        ("Electronics > Laptops", "Laptops, Electronics"),
        ("Toys", "Toys"),
    ],
)
def test_category_name_text_is_leaf_then_parent(path, text):
    assert category_name_text(path) == text


def test_category_name_examples_add_one_labelled_row_per_category(tmp_path):
    rows = balanced_rows(n_classes=3, per_class=5) + [("one of a kind", "Rare > Only > One")]
    table = load_table(write_csv(tmp_path / "p.csv", rows), ["description"], "category")
    splits = build_splits(table, None, None, validation_split=0.2, seed=1)
    augmented = add_category_name_examples(splits.train)
    added = augmented.select(range(len(splits.train), len(augmented)))
    assert augmented.select(range(len(splits.train)))["text"][:] == splits.train["text"][:]  # user rows untouched
    assert added["label"][:] == list(range(len(splits.label_names)))  # every category once, singleton included
    assert added["category_path"][:] == splits.label_names
    assert added["text"][:] == [category_name_text(name) for name in splits.label_names]
    assert "One, Only" in added["text"][:]
    assert augmented.features == splits.train.features

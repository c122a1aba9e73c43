"""Messy catalogue exports: every input path either repairs the data (and says so in the log) or
stops with one line naming the file, the row or column and the fix; exit code 2, no traceback, no
output.

Cases already covered elsewhere are not repeated: missing / empty / unsupported files, missing
columns, empty rows and a single class (data/test_data.py), unknown config keys (training/test_config.py), a model
without category labels and a bad JSON line in prediction input (cli/test_predict.py), pickled
weights (inference/test_categorizer.py, modeling/test_security.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from prodcat.cli.main import predict_main, run_guarded, train_main
from prodcat.core.errors import ProdcatError
from prodcat.data.readers import read_frame, source_row_numbers
from prodcat.data.splits import build_splits
from prodcat.data.tables import MAX_TEXT_CHARS, load_table
from prodcat.modeling.loading import default_model_path
from tests.conftest import ROOT, subprocess_env


@pytest.fixture(autouse=True)
def transformers_logs_through_pytest():
    """transformers' own stderr handler keeps the stream of the test that first logged (closed later
    by capsys, which then prints "--- Logging error ---" tracebacks); route its records through the
    root logger instead, like every other library."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    yield
    hf_logging.disable_propagation()
    hf_logging.enable_default_handler()


# Training flags that get a run past the data checks quickly (the error cases never train).
FAST = [
    "--max_seq_length", "16", "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
    "--prior_correction", "off", "--calibrate", "false", "--audit", "false", "--disable_tqdm", "true",
]  # fmt: skip


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def good_rows(n_classes: int = 4, per_class: int = 6) -> list[tuple[str, str]]:
    return [(f"product {c}-{i} with a name", f"Shop > Aisle{c % 2} > Shelf{c}") for c in range(n_classes) for i in range(per_class)]


def csv_text(rows, header=("description", "category")) -> str:
    return pd.DataFrame(rows, columns=list(header)).to_csv(index=False)


def write(path, content: str | bytes) -> str:
    mode = "wb" if isinstance(content, bytes) else "w"
    with open(path, mode, **({} if isinstance(content, bytes) else {"encoding": "utf-8", "newline": ""})) as handle:
        handle.write(content)
    return str(path)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("prodcat: error:")]


def assert_one_line_error(rc: int, stderr: str, *fragments: str) -> str:
    assert rc == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ---- training CLI: each bad file, in the train / validation / test position --------------------

LINE_4_CP1252 = (
    csv_text(good_rows()[:2]).encode()
    + "Caf\u00e9 cr\u00e8me,Shop > Aisle0 > Shelf0\n".encode("cp1252")
    + csv_text(good_rows()[2:]).split("\n", 1)[1].encode()
)

BAD_FILES = {
    # name: (file name, content, position, expected fragments)
    "header only": ("val.csv", "description,category\n", "validation", ["has a header but no product rows"]),
    "duplicated column": (
        "train.csv",
        "description,category,description\n" + "".join(f"{t},{c},x\n" for t, c in good_rows()),
        "train",
        ["columns 1 and 3", "both named 'description'"],
    ),
    "duplicated after trimming spaces": (
        "train.csv",
        "description, category ,category\n" + "".join(f"{t},{c},{c}\n" for t, c in good_rows()),
        "train",
        ["both named 'category'"],
    ),
    "non-UTF-8 byte": ("train.csv", LINE_4_CP1252, "train", ["line 4 is not valid UTF-8 (byte 0xe9)", "Windows-1252", "UTF-8"]),
    "UTF-16 export": ("train.csv", csv_text(good_rows()).encode("utf-16"), "train", ["UTF-16", "CSV UTF-8"]),
    "unquoted comma": (
        "test.csv",
        "description,category\nred pen,Shop > Aisle0 > Shelf0\nPens, blue,Shop > Aisle1 > Shelf1\n",
        "test",
        ["line 3 has 3 cells but the header has 2", "double quotes"],
    ),
    "every row one cell too many": (
        # pandas would silently make the first column the index and shift every column by one
        "train.csv",
        "description,category\n" + "".join(f"{t},{c},extra\n" for t, c in good_rows()),
        "train",
        ["line 2 has 3 cells but the header has 2"],
    ),
    "unbalanced quote": (
        "train.csv",
        csv_text(good_rows()[:1]) + '"8 inch tablet,Shop > Aisle0 > Shelf0\n' + csv_text(good_rows()[1:]).split("\n", 1)[1],
        "train",
        ["line 3: a quoted text starting on this line runs on to line", "unbalanced quote"],
    ),
    "semicolon separated": (
        "train.csv",
        "description;category\n" + "".join(f"{t};{c}\n" for t, c in good_rows()),
        "train",
        ["semicolon-separated"],
    ),
    "column name in another case": (
        "train.csv",
        csv_text(good_rows(), header=("Description", "category")),
        "train",
        ["no column 'description'", "did you mean 'Description'?"],
    ),
    "JSON array instead of JSON Lines": (
        "train.json",
        json.dumps([{"description": t, "category": c} for t, c in good_rows()]),
        "train",
        ["a JSON array, not JSON Lines"],
    ),
    "JSON Lines with one bad line": (
        "test.jsonl",
        '{"description": "kettle", "category": "Shop > Aisle0 > Shelf0"}\n\n{"description": "mug", "category": \n',
        "test",
        ["line 3 is not valid JSON"],
    ),
    "JSON Lines with a duplicated key": (
        "val.jsonl",
        '{"description": "kettle", "category": "A > B", "category": "A > C"}\n',
        "validation",
        ["line 1 has the key 'category' twice"],
    ),
    "not really Parquet": ("train.parquet", csv_text(good_rows()), "train", ["cannot read the file"]),
    "every label a placeholder": (
        "train.csv",
        csv_text([(t, ["nan", "NULL", "N/A", ""][i % 4]) for i, (t, _) in enumerate(good_rows())]),
        "train",
        ["no usable rows"],
    ),
    "every category a singleton": (
        "train.csv",
        csv_text([(f"item {i}", f"Shop > Shelf{i}") for i in range(12)]),
        "train",
        ["every category has a single example", "--validation_split 0"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_data_file_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    name, content, position, fragments = BAD_FILES[case]
    bad = write(tmp_path / name, content)
    good = write(tmp_path / "good.csv", csv_text(good_rows()))
    files = {"train": good, "validation": None, "test": None, position: bad}
    argv = ["--train_file", files["train"], "--output_dir", str(tmp_path / "out"), *FAST]
    for role in ("validation", "test"):
        if files[role]:
            argv += [f"--{role}_file", files[role]]
    rc = run_guarded(train_main, argv)
    line = assert_one_line_error(rc, capsys.readouterr().err, *fragments)
    assert name in line  # names the file
    assert not os.path.exists(tmp_path / "out")  # no partial output


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--text_columns", "description,category"], "--text_columns includes the label column 'category'"),
        (["--validation_split", "1.5"], "--validation_split must be at least 0 and below 1"),
    ],
)
def test_bad_data_arguments_are_one_line_errors(extra, fragment, tmp_path, capsys):
    good = write(tmp_path / "good.csv", csv_text(good_rows()))
    rc = run_guarded(train_main, ["--train_file", good, "--output_dir", str(tmp_path / "out"), *FAST, *extra])
    assert_one_line_error(rc, capsys.readouterr().err, fragment)
    assert not os.path.exists(tmp_path / "out")


def test_train_py_non_utf8_file_in_a_real_process(tmp_path):
    bad = write(tmp_path / "latin1.csv", LINE_4_CP1252)
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), "--train_file", bad, "--output_dir", str(tmp_path / "out")],
        cwd=str(tmp_path), capture_output=True, text=True, check=False, env=subprocess_env(), timeout=300,
    )  # fmt: skip
    assert_one_line_error(result.returncode, result.stderr, "latin1.csv: line 4 is not valid UTF-8")
    assert sorted(os.listdir(tmp_path)) == ["latin1.csv"]


# ---- config files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("wrong_type.json", '{"num_train_epochs": "many"}', "num_train_epochs must be a number, got 'many'"),
        ("fraction.yaml", "seed: 2.5\n", "seed must be an integer, got 2.5"),
        ("choice.yaml", "head_init: sideways\n", "head_init must be one of fit, random"),
        ("broken.json", '{"num_train_epochs": 2,', "cannot read the config file (JSONDecodeError"),
        ("list.yaml", "- num_train_epochs\n- 2\n", "must map option names to values"),
        ("unknown.yaml", "num_train_epochs: 2\nlearnin_rate: 0.1\n", "learnin_rate"),
    ],
)
def test_bad_config_file_is_one_line_exit_2(name, content, fragment, tmp_path, capsys):
    path = write(tmp_path / name, content)
    rc = run_guarded(train_main, [path])
    assert_one_line_error(rc, capsys.readouterr().err, name, fragment)


def test_config_values_written_as_strings_are_converted(tmp_path):
    """PyYAML reads ``1e-4`` as a string; a quoted number in JSON is common too: both are repaired."""
    from prodcat.training.config import parse_train_args

    path = write(tmp_path / "config.yaml", 'learning_rate: 1e-4\nnum_train_epochs: "3"\nseed: 3.0\ncalibrate: "false"\n')
    model_args, _, training_args = parse_train_args([path])
    assert training_args.learning_rate == pytest.approx(1e-4) and isinstance(training_args.learning_rate, float)
    assert training_args.num_train_epochs == 3.0 and training_args.seed == 3
    assert model_args.calibrate is False


def test_config_file_wrong_type_in_a_real_process_has_no_traceback(tmp_path):
    path = write(tmp_path / "config.json", json.dumps({"num_train_epochs": "many", "output_dir": str(tmp_path / "out")}))
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), path],
        cwd=str(tmp_path), capture_output=True, text=True, check=False, env=subprocess_env(), timeout=300,
    )  # fmt: skip
    assert_one_line_error(result.returncode, result.stderr, "config.json: num_train_epochs must be a number")
    assert not os.path.exists(tmp_path / "out")


# ---- model directories -------------------------------------------------------------------------


def model_folder(tmp_path, name: str, *, weights: bool = True, tokenizer: bool = True, labels: bool = True) -> str:
    """A model folder built from the embedded MiniLM (symlinked weights), with parts left out."""
    source = default_model_path()
    folder = tmp_path / name
    folder.mkdir()
    config = read_json(os.path.join(source, "config.json"))
    config["architectures"] = ["BertForSequenceClassification"]
    if labels:
        config["id2label"] = {"0": "Shop > Aisle0 > Shelf0", "1": "Shop > Aisle1 > Shelf1"}
        config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}
    (folder / "config.json").write_text(json.dumps(config))
    if weights:
        os.symlink(os.path.join(source, "model.safetensors"), folder / "model.safetensors")
    if tokenizer:
        for file in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            shutil.copy(os.path.join(source, file), folder / file)
    return str(folder)


@pytest.mark.parametrize(
    "parts, fragment",
    [
        ({"weights": False}, "no model weights (model.safetensors) in this folder"),
        ({"tokenizer": False}, "no usable tokenizer files"),
    ],
)
def test_training_from_a_broken_model_folder_is_one_line_exit_2(parts, fragment, tmp_path, capsys):
    folder = model_folder(tmp_path, "base", **parts)
    good = write(tmp_path / "good.csv", csv_text(good_rows()))
    argv = ["--train_file", good, "--model_name_or_path", folder, "--output_dir", str(tmp_path / "out"), *FAST]
    rc = run_guarded(train_main, argv)
    assert_one_line_error(rc, capsys.readouterr().err, folder, fragment)
    assert not os.path.exists(tmp_path / "out")


def test_training_from_a_missing_model_folder_is_one_line_exit_2(tmp_path, capsys):
    good = write(tmp_path / "good.csv", csv_text(good_rows()))
    missing = str(tmp_path / "no" / "such" / "model")
    rc = run_guarded(train_main, ["--train_file", good, "--model_name_or_path", missing, "--output_dir", str(tmp_path / "out"), *FAST])
    assert_one_line_error(rc, capsys.readouterr().err, missing)
    assert not os.path.exists(tmp_path / "out")


def test_training_with_default_audit_writes_nothing_when_the_model_fails(tmp_path, capsys):
    """The audit runs before the model loads; its audit.json must not be left behind alone."""
    folder = model_folder(tmp_path, "base", weights=False)
    good = write(tmp_path / "good.csv", csv_text(good_rows()))
    rc = run_guarded(train_main, ["--train_file", good, "--model_name_or_path", folder, "--output_dir", str(tmp_path / "out")])
    assert rc == 2
    assert not os.path.exists(tmp_path / "out")


def test_predict_py_with_a_model_folder_without_weights_in_a_real_process(tmp_path):
    folder = model_folder(tmp_path, "noweights", weights=False)
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "predict.py"), "--model", folder, "stainless steel kettle"],
        cwd=str(tmp_path), capture_output=True, text=True, check=False, env=subprocess_env(), timeout=300,
    )  # fmt: skip
    assert_one_line_error(result.returncode, result.stderr, "noweights")
    assert result.stdout == ""


# ---- prediction input files --------------------------------------------------------------------


@pytest.fixture(scope="module")
def predict_model(tmp_path_factory) -> str:
    return model_folder(tmp_path_factory.mktemp("predict"), "model")


BAD_PREDICTION_INPUTS = {
    "duplicated column": ("in.csv", "sku,description,description\n1,kettle,mug\n", ["both named 'description'"]),
    "non-UTF-8 byte": ("in.csv", b"sku,description\n1,kettle\n2,Caf\xe9 cr\xe8me\n", ["line 3 is not valid UTF-8"]),
    "unquoted comma": ("in.csv", "sku,description\n1,kettle\n2,Pens, blue\n", ["line 3 has 3 cells but the header has 2"]),
}


def prediction_argv(model: str, source: str, target) -> list[str]:
    """predict.py arguments for a file-to-file run on the description column."""
    return ["--model", model, "--input_file", source, "--output_file", str(target), "--text_columns", "description", "--no_progress"]


@pytest.mark.parametrize("case", list(BAD_PREDICTION_INPUTS))
def test_bad_prediction_input_is_one_line_exit_2_without_output(case, predict_model, tmp_path, capsys):
    name, content, fragments = BAD_PREDICTION_INPUTS[case]
    source = write(tmp_path / name, content)
    target = tmp_path / "out.csv"
    argv = prediction_argv(predict_model, source, target)
    rc = run_guarded(predict_main, argv)
    assert_one_line_error(rc, capsys.readouterr().err, name, *fragments)
    assert sorted(os.listdir(tmp_path)) == [name]  # no output, no temporary file


def test_prediction_input_with_a_header_only_gives_a_header_only_output(predict_model, tmp_path):
    source = write(tmp_path / "in.csv", "sku,description\n")
    target = tmp_path / "out.csv"
    argv = prediction_argv(predict_model, source, target)
    assert run_guarded(predict_main, argv) == 0
    out = pd.read_csv(target)
    assert len(out) == 0 and list(out.columns[:3]) == ["sku", "description", "predicted_category"]


def test_predict_py_duplicated_columns_in_a_real_process(predict_model, tmp_path):
    source = write(tmp_path / "in.csv", "sku,description,description\n1,kettle,mug\n")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "predict.py"), "--model", predict_model, "--input_file", source,
         "--output_file", str(tmp_path / "out.csv"), "--text_columns", "description", "--no_progress"],
        cwd=str(tmp_path), capture_output=True, text=True, check=False, env=subprocess_env(), timeout=300,
    )  # fmt: skip
    assert_one_line_error(result.returncode, result.stderr, "in.csv", "both named 'description'")
    assert sorted(os.listdir(tmp_path)) == ["in.csv"]


# ---- documented repairs (load_table / read_frame / build_splits) --------------------------------


def test_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path):
    path = write(tmp_path / "bom.csv", b"\xef\xbb\xbf" + csv_text(good_rows()).encode())
    assert load_table(path, ["description"], "category").texts[0] == "product 0-0 with a name"
    jsonl = write(tmp_path / "bom.jsonl", b'\xef\xbb\xbf{"description": "kettle", "category": "A > B"}\n')
    assert load_table(jsonl, ["description"], "category").labels == ["A > B"]


def test_quoted_newlines_commas_and_quotes_are_kept_and_rows_numbered_by_line(tmp_path):
    content = (
        "description,category\n"
        '"Pens, blue\nbox of 10","Office > Pens"\n'
        '"5"" screen protector","Electronics > ""Phone"" Accessories"\n'
        "\n"
        "plain mug,Home > Kitchen\n"
    )
    table = load_table(write(tmp_path / "p.csv", content), ["description"], "category")
    assert table.texts == ["Pens, blue box of 10", '5" screen protector', "plain mug"]  # whitespace collapsed
    assert table.labels == ["Office > Pens", 'Electronics > "Phone" Accessories', "Home > Kitchen"]
    assert table.source_rows == [2, 4, 6]  # the line each row starts on; the blank line is skipped


def test_header_names_are_trimmed_unnamed_columns_named_and_dotted_names_not_mistaken_for_duplicates(tmp_path):
    content = " description ,,category,category.1\nkettle,x,Home > Kitchen,y\n"
    frame = read_frame(write(tmp_path / "p.csv", content))
    assert list(frame.columns) == ["description", "Unnamed: 1", "category", "category.1"]
    assert load_table(str(tmp_path / "p.csv"), ["description"], "category").labels == ["Home > Kitchen"]


def test_trailing_separators_and_short_rows_are_repaired_and_counted(tmp_path, caplog):
    content = "description,category\nkettle,Home > Kitchen,\nmug,Home > Kitchen,,\nlonely text\n"
    with caplog.at_level(logging.WARNING):
        table = load_table(write(tmp_path / "p.csv", content), ["description"], "category")
    assert table.texts == ["kettle", "mug"] and table.dropped_empty_label == 1
    assert "2 row(s) end with empty cells beyond the last column" in caplog.text
    assert "1 row(s) have fewer cells than the header" in caplog.text


def test_labels_with_unicode_quotes_and_stray_separators_are_normalised(tmp_path):
    rows = [
        ("a", "Électronique > Téléphones"),  # composed é
        ("b", "E\u0301lectronique >  Te\u0301le\u0301phones "),  # e + combining accent, extra spaces
        ("c", '> Kids\' "Big" Toys >> Lego >'),
        ("d", "家居 > 厨房 🍳"),
    ]
    table = load_table(write(tmp_path / "p.csv", csv_text(rows)), ["description"], "category")
    assert table.labels[0] == table.labels[1] == "Électronique > Téléphones"
    assert table.labels[2] == 'Kids\' "Big" Toys > Lego'
    assert table.labels[3] == "家居 > 厨房 🍳"


def test_numeric_labels_are_category_names_and_placeholders_are_dropped_and_counted(tmp_path, caplog):
    rows = [("a", "3"), ("b", "03"), ("c", "nan"), ("d", "NULL"), ("e", " N/A "), ("f", ""), ("g", "None > Other")]
    with caplog.at_level(logging.WARNING):
        table = load_table(write(tmp_path / "p.csv", csv_text(rows)), ["description"], "category")
    assert table.labels == ["3", "03", "None > Other"]  # "03" stays distinct: CSV cells are read verbatim
    assert table.dropped_empty_label == 4
    assert "4 with an empty label (3 of the labels were placeholders such as 'nan' or 'null')" in caplog.text


def test_json_lines_values_become_text_without_losing_digits(tmp_path):
    lines = [
        {"sku": 1234567890123456789, "description": "kettle", "category": 3},
        {"description": ["steel", "1.7 l"], "category": 3.0},
        {"sku": 5, "description": "mug", "category": None},
        {"sku": 6, "description": "tea", "category": float("nan")},
    ]
    path = write(tmp_path / "p.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    frame = read_frame(path)
    assert frame["sku"].tolist() == ["1234567890123456789", "", "5", "6"]
    table = load_table(path, ["description"], "category")
    assert table.texts == ["kettle", "steel, 1.7 l"] and table.labels == ["3", "3"]
    assert table.dropped_empty_label == 2 and table.source_rows == [1, 2]


def test_parquet_with_non_string_columns(tmp_path, caplog):
    frame = pd.DataFrame({"description": ["kettle", "mug", "tea"], "category": [3, 4, None], "price": [9.5, 2.0, 1.0]})
    path = str(tmp_path / "p.parquet")
    frame.to_parquet(path)
    with caplog.at_level(logging.WARNING):
        table = load_table(path, ["description", "price"], "category")
    assert table.texts == ["kettle. 9.5", "mug. 2"] and table.labels == ["3", "4"]
    assert table.dropped_empty_label == 1 and table.source_rows == [2, 3]
    assert "column 'category' has type double; its 3 values are used as text" in caplog.text


def test_parquet_list_labels_and_undecodable_bytes_name_the_row(tmp_path):
    path = str(tmp_path / "lists.parquet")
    pd.DataFrame({"description": ["kettle", "mug"], "category": [["Home", "Kitchen"], ["Home", "Mugs"]]}).to_parquet(path)
    with pytest.raises(ProdcatError, match=r"lists.parquet: row 2, column 'category' holds a list, not a category path"):
        load_table(path, ["description"], "category")
    path = str(tmp_path / "bytes.parquet")
    pd.DataFrame({"description": [b"kettle", b"\xff\xfe"], "category": ["A > B", "A > C"]}).to_parquet(path)
    with pytest.raises(ProdcatError, match=r"bytes.parquet: row 3, column 'description': bytes that are not UTF-8"):
        read_frame(path)
    assert source_row_numbers(pd.DataFrame({"a": [1, 2]})) == [2, 3]


def test_enormous_texts_are_read_and_clipped_with_a_count(tmp_path, caplog):
    huge = "wireless headphones " * 20_000  # 400,000 characters, over the csv module's default cell limit
    rows = [(huge, "Electronics > Audio"), ("small", "Electronics > Audio")]
    with caplog.at_level(logging.WARNING):
        table = load_table(write(tmp_path / "p.csv", csv_text(rows)), ["description"], "category")
    assert len(table.texts[0]) == MAX_TEXT_CHARS and table.texts[1] == "small"
    assert f"1 text(s) longer than {MAX_TEXT_CHARS} characters clipped" in caplog.text


def test_every_category_a_singleton_needs_validation_split_0_and_then_trains(tmp_path):
    rows = [(f"item number {i}", f"Shop > Shelf{i}") for i in range(10)]
    table = load_table(write(tmp_path / "p.csv", csv_text(rows)), ["description"], "category")
    with pytest.raises(ProdcatError, match="every category has a single example.*--validation_split 0"):
        build_splits(table, None, None, validation_split=0.1, seed=1)
    splits = build_splits(table, None, None, validation_split=0.0, seed=1)
    assert len(splits.train) == 10 and splits.validation is None

    from prodcat.training.config import parse_train_args
    from prodcat.training.run import run_training

    out = str(tmp_path / "out")
    argv = ["--train_file", str(tmp_path / "p.csv"), "--validation_split", "0", "--output_dir", out, *FAST]
    results = run_training(*parse_train_args(argv))
    assert "eval" not in results and os.path.isfile(os.path.join(out, "model.safetensors"))
    config = read_json(os.path.join(out, "config.json"))
    assert sorted(config["id2label"].values()) == sorted(label for _, label in rows)

"""Data audit on small hand-made files (and on bigbasket-27k when the shared catalogues are present)."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import shared_data_path

from prodcat.cli.audit import main
from prodcat.core.errors import ProdcatError
from prodcat.data.audit import audit_for_training, audit_tables, label_variant_key, normalize_text


def write_csv(path, rows, header=("description", "category")) -> str:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


TRAIN_ROWS = [
    ("Blue Mug", "Home > Kitchen > Mugs"),  # line 2
    ("Blue Mug", "Home > Kitchen > Cups"),  # line 3: exact duplicate, conflicting
    ("Red Pen", "Office > Pens"),  # line 4
    ("Red Pen", "Office>Pens"),  # line 5: exact duplicate, same class once normalised
    ("chia  seeds", "Food > Seeds"),  # line 6
    ("Chia Seeds", "Food > Grains"),  # line 7: case/spacing duplicate, conflicting
    ("Green Tea", "Food > Tea"),  # line 8
    ("green tea", "Food > Tea"),  # line 9: case duplicate, same label
    ("", "Food > Tea"),  # line 10: empty text
    ("Towel", ""),  # line 11: empty label
    ("Bath Towel", "Home > Bath"),  # line 12
    ("Hand Towel", "home > bath"),  # line 13: label differs by case
    ("Face Towel", "Home / Bath"),  # line 14: label differs by separator
    ("Black Pen", "Office > Pens"),
    ("Blue Pen", "Office > Pens"),
]


def test_finds_each_kind_of_problem(tmp_path):
    train = write_csv(tmp_path / "train.csv", TRAIN_ROWS)
    report = audit_tables(train, ["description"], "category", min_count=3)
    audit = report.files[0]
    assert audit.rows == len(TRAIN_ROWS)
    assert audit.empty_text_rows == [10]
    assert audit.empty_label_rows == [11]
    exact = {g.text: g for g in audit.exact_duplicates}
    assert set(exact) == {"Blue Mug", "Red Pen"}
    assert exact["Blue Mug"].conflicting and exact["Blue Mug"].rows == [2, 3]
    assert not exact["Red Pen"].conflicting  # "Office>Pens" is the same class as "Office > Pens"
    normalized = {normalize_text(g.text): g for g in audit.normalized_duplicates}
    assert set(normalized) == {"chia seeds", "green tea"}
    assert normalized["chia seeds"].conflicting and normalized["chia seeds"].rows == [6, 7]
    assert normalized["chia seeds"].labels == ["Food > Grains", "Food > Seeds"]
    assert not normalized["green tea"].conflicting
    [variants] = report.label_variants
    assert set(variants.spellings) == {"Home > Bath", "home > bath", "Home / Bath"}
    assert variants.canonical == ["Home / Bath", "Home > Bath", "home > bath"]
    # categories below 3 rows; "Office > Pens" has 4 once its spellings are merged
    assert "Office > Pens" not in report.rare_categories
    assert report.rare_categories["Food > Tea"] == 2
    assert report.counts()["exact_conflicting_groups"] == 1
    assert report.counts()["normalized_conflicting_groups"] == 1
    assert report.has_blocking_issues()
    text = "\n".join(report.summary_lines())
    assert "Blue Mug" in text and "conflicting" in text and "Home / Bath" in text


def test_rows_are_the_lines_of_the_file_even_after_a_multi_line_text(tmp_path):
    # A quoted line break and a blank line push later rows down: the audit names the lines an
    # editor shows, not the data-row count.
    path = tmp_path / "train.csv"
    path.write_text(
        'description,category\n"Mug,\nlarge",Home\n\nRed Pen,Office\nRed Pen,Toys\n,Home\n', encoding="utf-8"
    )
    audit = audit_tables(str(path), ["description"], "category").files[0]
    [group] = audit.exact_duplicates
    assert group.text == "Red Pen" and group.rows == [5, 6]
    assert audit.empty_text_rows == [7]


def test_leakage_between_train_validation_and_test(tmp_path):
    train = write_csv(tmp_path / "train.csv", [("Blue Mug", "Home > Mugs"), ("Red Pen", "Office > Pens"), ("Tea", "Food > Tea")])
    validation = write_csv(tmp_path / "val.csv", [("Brown Rice", "Food > Rice")])
    test = write_csv(
        tmp_path / "test.csv",
        [("blue  MUG", "Home > Mugs"), ("Red Pen", "Office > Markers"), ("Coffee", "Food > Coffee"), ("brown rice", "Food > Rice")],
    )
    report = audit_tables(train, ["description"], "category", validation_path=validation, test_path=test)
    leaks = {(leak.role, leak.other): leak for leak in report.leakage}
    assert leaks[("test", "train")].rows == 2
    assert leaks[("test", "train")].different_label_rows == 1
    assert [e["row"] for e in leaks[("test", "train")].examples] == [2, 3]
    assert leaks[("validation", "train")].rows == 0
    assert leaks[("test", "validation")].rows == 1
    assert report.unseen_categories["test"] == {"Food > Coffee": 1, "Food > Rice": 1, "Office > Markers": 1}
    assert report.unseen_categories["validation"] == {"Food > Rice": 1}
    assert report.has_blocking_issues()
    assert any("test row(s) whose text is also in train" in r for r in report.blocking_reasons())


def test_clean_data_has_no_blocking_issues(tmp_path):
    train = write_csv(tmp_path / "train.csv", [("Blue Mug", "Home > Mugs"), ("Red Pen", "Office > Pens")])
    test = write_csv(tmp_path / "test.csv", [("Green Mug", "Home > Mugs")])
    report = audit_tables(train, ["description"], "category", test_path=test, min_count=1)
    assert not report.has_blocking_issues()
    assert report.summary_lines()[-1].endswith("none")
    assert audit_for_training(train, ["description"], "category", test_path=test, strict=True) is not None


def test_cli_strict_exit_code_and_json(tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", TRAIN_ROWS)
    out = tmp_path / "audit.json"
    assert main([train, "--json_output", str(out)]) == 0
    assert main([train, "--strict"]) == 1
    printed = capsys.readouterr().out
    assert "duplicates up to case/spacing" in printed and "blocking issues" in printed
    payload = json.loads(out.read_text())
    assert payload["counts"]["exact_conflicting_groups"] == 1
    assert payload["files"][0]["exact_duplicates"][0]["conflicting"] in (True, False)
    assert payload["blocking"]


def test_strict_training_audit_stops_and_lenient_continues(tmp_path):
    train = write_csv(tmp_path / "train.csv", TRAIN_ROWS)
    with pytest.raises(ProdcatError, match="conflicting categories"):
        audit_for_training(train, ["description"], "category", strict=True)
    report = audit_for_training(train, ["description"], "category", strict=False, json_path=str(tmp_path / "a.json"))
    assert report.has_blocking_issues() and (tmp_path / "a.json").exists()


def test_several_text_columns_and_missing_column(tmp_path):
    train = write_csv(
        tmp_path / "train.csv",
        [("Mug", "Blue", "Home > Mugs"), ("mug", "blue", "Home > Cups"), ("Mug", "Red", "Home > Mugs")],
        header=("title", "colour", "category"),
    )
    report = audit_tables(train, ["title", "colour"], "category")
    assert [g.rows for g in report.files[0].normalized_duplicates] == [[2, 3]]
    with pytest.raises(ProdcatError, match="'brand'"):
        audit_tables(train, ["title", "brand"], "category")


def test_label_variant_key():
    assert label_variant_key("Home > Bath Towels") == label_variant_key("home/bath towels")
    assert label_variant_key("Home > Bath Towels") == label_variant_key("HOME|BathTowels")
    assert label_variant_key("Home > Bath") != label_variant_key("Home > Bathe")
    assert label_variant_key("Home :: Bath", " :: ") == label_variant_key("home > bath")


def test_bigbasket_known_conflicts_and_leakage():
    train = shared_data_path("bigbasket-27k/train.csv")
    test = shared_data_path("bigbasket-27k/test.csv")
    report = audit_tables(train, ["text"], "category", test_path=test)
    train_audit, test_audit = report.files
    # SOURCE.md: de-duplicated on exact text, 30 further duplicates if lower-cased; they fall
    # 18 within train, 1 within test and 11 across the split.
    assert len(train_audit.exact_duplicates) == 0
    assert len(train_audit.normalized_duplicates) == 18
    assert len(train_audit.conflicting_normalized) == 4
    assert "Chia Seeds" in {g.text for g in train_audit.conflicting_normalized}
    assert len(test_audit.normalized_duplicates) == 1
    [leak] = report.leakage
    assert (leak.rows, leak.different_label_rows) == (11, 2)
    assert report.has_blocking_issues()

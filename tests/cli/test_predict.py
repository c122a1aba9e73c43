"""``predict.py`` / ``prodcat predict``: text, stdin and file modes, errors, atomic output, torchrun."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pandas as pd
import pytest

from prodcat.cli.main import predict_main, run_guarded
from prodcat.cli.predict import main, output_columns
from prodcat.core.errors import ProdcatError
from prodcat.inference.categorizer import Categorizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "data", "sample_products.csv")


def subprocess_env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture(scope="module")
def categorizer(trained_model_dir) -> Categorizer:
    return Categorizer.from_pretrained(trained_model_dir, device="cpu")


@pytest.fixture
def preloaded(categorizer, monkeypatch) -> Categorizer:
    """Skip re-loading the model in each file-mode run (loading is covered by the text-mode tests)."""
    monkeypatch.setattr("prodcat.cli.predict._load_categorizer", lambda args, processes=None: categorizer)
    return categorizer


@pytest.fixture(scope="module")
def products() -> pd.DataFrame:
    """Products with an id column that must stay a string, a brand column, and one empty text."""
    frame = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False).head(23)
    frame.insert(0, "sku", [f"{i:05d}" for i in range(len(frame))])
    frame["brand"] = ["NA", "Acme", ""] * 7 + ["NA", "Acme"]
    frame.loc[4, "description"] = "   "
    frame.loc[4, "brand"] = ""
    return frame


def write_table(frame: pd.DataFrame, path: str) -> str:
    if path.endswith(".csv"):
        frame.to_csv(path, index=False)
    elif path.endswith(".jsonl"):
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def read_table(path: str) -> pd.DataFrame:
    if path.endswith(".csv"):
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    if path.endswith(".jsonl"):
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_parquet(path)


# ---- text and stdin modes -----------------------------------------------------------------------


def test_text_mode_prints_one_readable_line_per_text(trained_model_dir, categorizer, capsys):
    texts = pd.read_csv(SAMPLE)["description"].head(3).tolist()
    assert main(["--model", trained_model_dir, *texts, "--top_k", "2", "--threshold", "0.5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for line, p in zip(lines, categorizer.predict(texts, top_k=2, threshold=0.5)):
        assert f"-> {p.category} ({p.score:.2f})" in line
        assert p.top_k[1].category in line
        assert ("needs review" in line) == p.needs_review


def test_stdin_mode_reads_one_text_per_line(trained_model_dir, categorizer, capsys, monkeypatch):
    texts = pd.read_csv(SAMPLE)["description"].iloc[5:9].tolist()
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join([texts[0], "", *texts[1:]]) + "\n"))
    assert main(["--model", trained_model_dir, "-", "--json", "--chunk_size", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["text"] for r in rows] == [texts[0], "", *texts[1:]]
    assert rows[1]["category"] == ""
    expected = [p.category for p in categorizer.predict(texts)]
    assert [rows[0]["category"], *[r["category"] for r in rows[2:]]] == expected


def test_prodcat_predict_command_runs_text_mode(trained_model_dir, capsys):
    from prodcat.cli.main import main as prodcat_main

    assert prodcat_main(["predict", "--model", trained_model_dir, "Stainless steel kettle 1.7 l"]) == 0
    assert "->" in capsys.readouterr().out


# ---- file mode ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["csv", "jsonl", "parquet"])
def test_file_mode_keeps_input_columns_in_order_and_adds_predictions(
    trained_model_dir, preloaded, products, tmp_path, ext, caplog
):
    categorizer = preloaded
    source = write_table(products, str(tmp_path / f"products.{ext}"))
    target = str(tmp_path / f"predictions.{ext}")
    argv = [
        "--model", trained_model_dir, "--input_file", source, "--output_file", target,
        "--text_columns", "description,brand", "--top_k", "2", "--levels", "--threshold", "0.9",
        "--chunk_size", "5", "--batch_size", "4", "--no_progress",
    ]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    out = read_table(target)
    depth = categorizer.taxonomy.depth
    assert list(out.columns) == list(products.columns) + output_columns(2, depth, 0.9)
    assert out["sku"].astype(str).tolist() == products["sku"].tolist()  # order kept, "00001" not a number
    assert out["brand"].fillna("").astype(str).tolist()[:3] == ["NA", "Acme", ""]  # "NA" stays a string

    from prodcat.data.tables import join_text_columns

    expected = categorizer.predict(join_text_columns(products, ["description", "brand"]), top_k=2, threshold=0.9)
    for i, p in enumerate(expected):
        row = out.iloc[i]
        if p.is_empty:
            # The empty-text row is kept with empty prediction cells.
            assert i == 4
            assert all(pd.isna(row[c]) or row[c] == "" for c in output_columns(2, depth, 0.9))
            continue
        assert row["predicted_category"] == p.category
        assert float(row["score"]) == pytest.approx(p.score, abs=1e-4)
        assert row["top_2_category"] == p.top_k[1].category
        assert row[f"level_{depth}_category"] == p.category
        assert row["level_1_category"] == p.levels[0].category
        assert str(row["needs_review"]) == str(p.needs_review)
        if p.needs_review:
            assert pd.isna(row["backoff_category"]) or row["backoff_category"] == ""
        else:
            assert row["backoff_category"] == p.backoff.category
    assert "1 row(s) with empty text" in caplog.text


def test_text_columns_default_to_the_training_run(trained_model_dir, categorizer, products, tmp_path):
    source = write_table(products.head(6), str(tmp_path / "in.csv"))
    target = str(tmp_path / "out.csv")
    assert main(["--model", trained_model_dir, "--input_file", source, "--output_file", target, "--no_progress"]) == 0
    out = read_table(target)
    expected = categorizer.predict(products["description"].head(6).tolist())
    assert out["predicted_category"].tolist() == [p.category for p in expected]
    assert list(out.columns) == list(products.columns) + ["predicted_category", "score"]


# ---- errors ---------------------------------------------------------------------------------------


def test_missing_text_column_is_one_line_exit_2_without_traceback(trained_model_dir, products, tmp_path):
    source = write_table(products.head(3), str(tmp_path / "in.csv"))
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "predict.py"), "--model", trained_model_dir, "--input_file", source,
         "--output_file", str(tmp_path / "out.csv"), "--text_columns", "title"],
        capture_output=True, text=True, env=subprocess_env(), cwd=str(tmp_path), timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("prodcat: error:")]
    assert len(errors) == 1 and "'title'" in errors[0] and "description" in errors[0] and "--text_columns" in errors[0]
    assert not os.path.exists(tmp_path / "out.csv")


def test_unreadable_input_is_a_prodcat_error_exit_2(trained_model_dir, tmp_path, capsys):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "kettle"}\n{"text": "tea", \n')
    argv = ["--model", trained_model_dir, "--input_file", str(broken), "--output_file", str(tmp_path / "o.jsonl")]
    assert run_guarded(predict_main, argv) == 2
    err = capsys.readouterr().err
    assert "line 2 is not valid JSON" in err and "Traceback" not in err
    assert run_guarded(predict_main, [*argv[:3], str(tmp_path / "nope.csv"), *argv[4:]]) == 2
    assert "file not found" in capsys.readouterr().err


def test_model_without_category_labels_exits_2(trained_model_dir, tmp_path, capsys):
    folder = tmp_path / "nolabels"
    folder.mkdir()
    for name in os.listdir(trained_model_dir):
        if name.endswith(".safetensors"):
            os.symlink(os.path.join(trained_model_dir, name), folder / name)
        elif name.endswith(".json"):
            (folder / name).write_bytes((open(os.path.join(trained_model_dir, name), "rb")).read())
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(len(config["id2label"]))}
    config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}
    (folder / "config.json").write_text(json.dumps(config))
    assert run_guarded(predict_main, ["--model", str(folder), "Stainless steel kettle"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "without category labels" in err[0]


def test_output_columns_clash_is_refused(trained_model_dir, preloaded, products, tmp_path):
    source = write_table(products.head(3).assign(score="x"), str(tmp_path / "in.csv"))
    with pytest.raises(ProdcatError, match="already has column"):
        main(["--model", trained_model_dir, "--input_file", source, "--output_file", str(tmp_path / "o.csv")])


# ---- atomic output --------------------------------------------------------------------------------


def test_failure_midway_leaves_no_partial_output(trained_model_dir, preloaded, products, tmp_path, monkeypatch):
    source = write_table(products, str(tmp_path / "in.csv"))
    target = tmp_path / "out.csv"
    target.write_text("previous results\n")
    calls = {"n": 0}
    original = Categorizer.predict

    def failing_predict(self, texts, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # like Ctrl-C after the first chunk was written
        return original(self, texts, **kwargs)

    monkeypatch.setattr(Categorizer, "predict", failing_predict)
    argv = ["--model", trained_model_dir, "--input_file", source, "--output_file", str(target), "--chunk_size", "5", "--no_progress"]
    assert run_guarded(predict_main, argv) == 130
    assert calls["n"] == 2
    assert target.read_text() == "previous results\n"  # untouched, not half-replaced
    assert sorted(os.listdir(tmp_path)) == ["in.csv", "out.csv"]  # no temporary file left behind


# ---- several processes ----------------------------------------------------------------------------


def test_torchrun_two_processes_merge_one_output_in_input_order(trained_model_dir, categorizer, products, tmp_path):
    source = write_table(products, str(tmp_path / "in.jsonl"))
    target = tmp_path / "merged.csv"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         os.path.join(ROOT, "predict.py"), "--model", trained_model_dir, "--input_file", source,
         "--output_file", str(target), "--chunk_size", "4", "--no_progress"],
        capture_output=True, text=True, env=subprocess_env(), cwd=str(tmp_path), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = read_table(str(target))
    assert out["sku"].tolist() == products["sku"].tolist()  # 6 chunks from 2 ranks, merged in order
    expected = categorizer.predict(products["description"].tolist())
    assert out["predicted_category"].tolist() == [p.category for p in expected]
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "merged.csv"]  # part files removed

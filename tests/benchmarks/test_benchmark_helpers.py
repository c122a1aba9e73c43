"""Helpers of the benchmark scripts (the scripts themselves print figures; they are not timed here)."""

from __future__ import annotations

import importlib
import json
import os
import sys

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks"))

from accuracy import METHOD_NAMES, format_table, mean_rows, model_dir, recorded_train_seconds, run_prodcat  # noqa: E402
from common import BENCHMARKS_PAGE, ROOT, write_benchmarks_block  # noqa: E402
from few_shot import sample_per_category  # noqa: E402
from recipe_cv import compare, fold_assignment  # noqa: E402
from recipe_cv import main as recipe_cv_main  # noqa: E402
from significance import paired_bootstrap  # noqa: E402
from training_speed import child_command, pop_flag  # noqa: E402


def test_sample_per_category_caps_keeps_small_categories_and_nests():
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(23)], "category": ["a"] * 20 + ["b"] * 2 + ["c"]})
    small, large = sample_per_category(frame, 4, seed=0), sample_per_category(frame, 8, seed=0)
    assert small.category.value_counts().to_dict() == {"a": 4, "b": 2, "c": 1}
    assert large.category.value_counts().to_dict() == {"a": 8, "b": 2, "c": 1}
    assert set(small.text) <= set(large.text)  # each smaller set is a subset of the larger ones
    assert set(sample_per_category(frame, 4, seed=1).text) != set(small.text)  # the seed decides which rows


def test_benchmarks_block_is_replaced_in_place_or_appended(tmp_path):
    assert BENCHMARKS_PAGE == os.path.join(ROOT, "docs", "benchmarks.md")  # where the scripts' --write goes
    path = str(tmp_path / "benchmarks.md")
    with open(path, "w") as handle:
        handle.write("# Benchmarks\n\nintro\n<!-- speed:start -->\nold table\n<!-- speed:end -->\n\nnotes stay\n")
    write_benchmarks_block("speed", "new table", path)
    write_benchmarks_block("curve", "curve table", path)
    text = open(path).read()
    assert "old table" not in text and "<!-- speed:start -->\nnew table\n<!-- speed:end -->\n\nnotes stay" in text
    assert text.rstrip().endswith("<!-- curve:start -->\ncurve table\n<!-- curve:end -->")


def test_paired_bootstrap_of_macro_f1_differences():
    references = ["a"] * 30 + ["b"] * 30 + ["c"] * 4
    baseline = ["a"] * 30 + ["b"] * 30 + ["b"] * 4  # never finds the rare category
    better = references[:]  # perfect
    worse = ["a"] * 64
    deltas = paired_bootstrap(references, {"base": baseline, "better": better, "same": baseline[:], "worse": worse}, "base", 200, seed=1)
    assert set(deltas) == {"better", "same", "worse"}
    assert (deltas["same"] == 0).all()
    assert (deltas["worse"] < 0).all()
    # "better" differs from the baseline only on the rare category's rows: the lead is never negative, is 0
    # on a resample that drew none of them, and varies with how many it drew.
    assert (deltas["better"] >= 0).all() and deltas["better"].mean() > 0 and deltas["better"].std() > 0


def test_fold_assignment_is_stratified_seeded_and_keeps_rare_categories_in_training():
    categories = ["a"] * 30 + ["b"] * 9 + ["c"] * 2 + ["d"]
    assignment = fold_assignment(categories, 3, seed=0)
    labels = np.array(categories)
    assert sorted(labels[assignment == -1]) == ["c", "c", "d"]  # fewer rows than folds: always trained on
    for fold in range(3):  # every fold holds a third of each category that can be split
        held_out = labels[assignment == fold]
        assert (held_out == "a").sum() == 10 and (held_out == "b").sum() == 3
    assert np.array_equal(assignment, fold_assignment(categories, 3, seed=0))
    assert not np.array_equal(assignment, fold_assignment(categories, 3, seed=1))


def test_compare_pairs_folds_and_refuses_different_folds():
    def result(macro_f1, seed=42):
        folds = [{"accuracy": 0.7, "macro_f1": m, "level_1_accuracy": 0.9, "nll": 1.0, "train_seconds": 10.0} for m in macro_f1]
        fold_key = {"train_file_sha256": "ab12", "folds": len(folds), "seed": seed, "label_column": "category"}
        return {"name": f"seed{seed}", "fold_key": fold_key, "per_fold": folds}

    difference = compare(result([0.60, 0.62, 0.64]), result([0.61, 0.64, 0.64]))["macro_f1"]
    assert difference["per_fold"] == pytest.approx([0.01, 0.02, 0.0])
    assert difference["mean"] == pytest.approx(0.01)
    assert difference["se"] == pytest.approx(0.01 / np.sqrt(3))  # sd of (0.01, 0.02, 0) is 0.01
    with pytest.raises(SystemExit, match="not cross-validated on the same folds"):
        compare(result([0.6, 0.6, 0.6]), result([0.6, 0.6, 0.6], seed=1))
    unrecorded = result([0.6, 0.6, 0.6])
    del unrecorded["fold_key"]  # a result written before the folds were recorded
    with pytest.raises(SystemExit, match="seed42: the result does not record its folds"):
        compare(result([0.6, 0.6, 0.6]), unrecorded)


def test_recipe_cv_trains_each_fold_and_writes_the_scores(tmp_path):
    from tests.conftest import SAMPLE

    flags = ["--max_seq_length", "32", "--max_steps", "3", "--save_strategy", "no", "--eval_strategy", "no",
             "--load_best_model_at_end", "false", "--disable_tqdm", "true", "--audit", "false"]
    argv = ["--name", "tiny", "--train_file", SAMPLE, "--text_columns", "description", "--folds", "2",
            "--output_dir", str(tmp_path), "--", *flags]
    # Fold 2 alone first (as on a second core): no summary yet, its scores are kept for the full run.
    assert recipe_cv_main(argv[:-len(flags) - 1] + ["--only_folds", "2", "--", *flags]) == 0
    assert not os.path.exists(tmp_path / "tiny.json")
    second_fold = tmp_path / "tiny" / "fold_1" / "scores.json"
    saved_at = os.path.getmtime(second_fold)
    assert recipe_cv_main(argv) == 0
    result = json.load(open(tmp_path / "tiny.json"))
    assert result["train_flags"] == flags and len(result["per_fold"]) == 2
    assert result["fold_key"]["folds"] == 2 and result["fold_key"]["seed"] == 42
    assert compare(result, result)["macro_f1"]["mean"] == 0  # the same folds: pairs with itself
    assert os.path.getmtime(second_fold) == saved_at  # reused, not trained again
    assert result["per_fold"][1] == json.load(open(second_fold))["scores"]
    for fold in result["per_fold"]:
        assert 0 <= fold["accuracy"] <= fold["level_1_accuracy"] <= 1  # a right leaf implies a right level 1
        assert 0 <= fold["macro_f1"] <= 1 and fold["nll"] > 0 and fold["train_seconds"] > 0
    assert not os.path.exists(tmp_path / "tiny" / "fold_0" / "model")  # fold models are deleted by default
    validation = [pd.read_csv(tmp_path / "tiny" / f"fold_{k}" / "validation.csv") for k in range(2)]
    assert not set(validation[0].description) & set(validation[1].description)
    # Other folds (another seed) are not the same fold: trained again, not reused.
    assert recipe_cv_main(argv[:-len(flags) - 1] + ["--seed", "1", "--only_folds", "2", "--", *flags]) == 0
    assert os.path.getmtime(second_fold) != saved_at


def test_recipe_cv_refuses_a_fold_number_out_of_range(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        recipe_cv_main(["--folds", "2", "--only_folds", "3", "--output_dir", str(tmp_path)])
    assert stopped.value.code == 2 and "--only_folds takes fold numbers from 1 to 2" in capsys.readouterr().err
    assert not os.listdir(tmp_path)  # refused before anything was written


def test_recorded_train_seconds_adds_the_held_out_first_run_of_a_refit():
    from prodcat.core.artifacts import TrainingSummary

    plain = {"results": {"train": {"train_wall_seconds": 100.0}}}
    refit = {**plain, "refit_on_all_rows": {"holdout_train_wall_seconds": 90.0}}
    assert recorded_train_seconds(TrainingSummary.from_dict(plain)) == 100.0
    assert recorded_train_seconds(TrainingSummary.from_dict(refit)) == 190.0


def _scored_row(method: str, seed: int, macro_f1: float, train_seconds: float) -> dict:
    return {"dataset": "d", "method": method, "seed": seed, "accuracy": 0.7, "macro_f1": macro_f1, "weighted_f1": 0.7,
            "level_1_accuracy": 0.9, "hierarchical_f1": 0.8, "train_seconds": train_seconds, "items_per_second": 100.0}


def test_accuracy_means_each_method_over_its_seeds_and_names_them_in_the_table():
    rows = [_scored_row("prodcat", 42, 0.60, 100.0), _scored_row("tfidf", 42, 0.59, 10.0),
            _scored_row("prodcat", 1, 0.62, 120.0), _scored_row("tfidf", 1, 0.59, 12.0)]
    means = mean_rows(rows)
    assert [(m["method"], m["mean_of"]) for m in means] == [("prodcat", [42, 1]), ("tfidf", [42, 1])]
    assert means[0]["macro_f1"] == pytest.approx(0.61) and means[0]["train_seconds"] == pytest.approx(110.0)
    assert "seed" not in means[0]
    table = format_table(rows + means).splitlines()
    name = METHOD_NAMES["prodcat"]
    assert f"{name}, seed 1 | 0.700 | 0.620 |" in table[4]
    assert f"{name}, mean of seeds 42, 1 (macro-F1 0.600-0.620) | 0.700 | 0.610 |" in table[6]
    single = {key: value for key, value in rows[0].items() if key != "seed"}
    assert f"| {name} | 0.700 |" in format_table([single])  # one seed: no seed in the name


def test_accuracy_trains_prodcat_with_the_seed_it_was_given(tmp_path, monkeypatch):
    import prodcat.training.run

    seen = {}

    class Stop(Exception):
        pass

    def fake_run_training(model_args, data_args, training_args):
        seen["seed"], seen["output_dir"] = training_args.seed, training_args.output_dir
        raise Stop

    monkeypatch.setattr(prodcat.training.run, "run_training", fake_run_training)
    output_dir = model_dir(str(tmp_path), "bigbasket-27k", 1)
    with pytest.raises(Stop):
        run_prodcat("train.csv", pd.DataFrame(), "test.csv", output_dir, "bigbasket-27k", seed=1)
    assert seen == {"seed": 1, "output_dir": str(tmp_path / "bigbasket-27k-seed1")}
    assert model_dir(str(tmp_path), "bigbasket-27k", 42) == str(tmp_path / "bigbasket-27k")  # the default keeps its folder


def test_accuracy_refuses_to_reuse_a_model_trained_with_another_seed(tmp_path):
    with open(tmp_path / "training_summary.json", "w") as handle:
        json.dump({"train_file": "train.csv", "hyperparameters": {"seed": 42}}, handle)
    with pytest.raises(SystemExit, match="trained with seed 42, not 1"):
        run_prodcat("data/train.csv", pd.DataFrame(), "test.csv", str(tmp_path), "bigbasket-27k", seed=1, reuse=True)


def test_few_shot_trains_every_method_with_its_seed(tmp_path, monkeypatch, capsys):
    import few_shot

    rows = pd.DataFrame({"text": [f"title {i}" for i in range(12)], "category": ["a > x", "a > y", "b > z"] * 4})
    (tmp_path / "bigbasket-27k").mkdir()
    rows.to_csv(tmp_path / "bigbasket-27k" / "train.csv", index=False)
    rows.to_csv(tmp_path / "bigbasket-27k" / "test.csv", index=False)
    calls = []

    def fake_run_method(method, train_path, train, test, test_path, output_dir, dataset, seed, reuse_models):
        calls.append((method, len(train), seed, reuse_models))
        return test.category.tolist(), 1.0, 100.0

    monkeypatch.setattr(few_shot, "run_method", fake_run_method)
    monkeypatch.setattr(sys, "argv", ["few_shot.py", "--shots", "2", "--methods", "prodcat", "tfidf", "--seed", "7",
                                      "--reuse_models", "--output_dir", str(tmp_path / "out"), "--data_dir", str(tmp_path)])
    assert few_shot.main() == 0
    assert calls == [("prodcat", 6, 7, True), ("tfidf", 6, 7, True)]  # 2 rows of each of 3 categories
    assert "(seed 7)" in capsys.readouterr().out


def test_training_speed_runs_the_processes_variant_under_torchrun_and_only_it():
    import argparse

    args = argparse.Namespace(seed=3, model=None)
    plain = child_command("prodcat", "1 thread", "titles.csv", args, "/tmp/work/result.json", "/tmp/work/model")
    launched = child_command("prodcat", "2 processes x 1 thread (torchrun)", "titles.csv", args, "/tmp/work/result.json", "/tmp/work/model")
    assert plain[0] == launched[0] == sys.executable and plain[1].endswith("training_speed.py")
    assert launched[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    assert launched[6:] == plain[1:6] + ["2 processes x 1 thread (torchrun)"] + plain[7:]
    assert plain[plain.index("--output_dir") + 1] == "/tmp/work/model"

    flags = ["--processes", "2", "--torch_threads", "1"]
    assert pop_flag(flags, "--processes") == "2" and flags == ["--torch_threads", "1"]
    assert pop_flag(flags, "--processes") is None and flags == ["--torch_threads", "1"]


def test_data_dir_chooses_the_catalogues_folder_over_the_environment(tmp_path, monkeypatch, capsys):
    import accuracy

    folder = tmp_path / "catalogues" / "pricerunner-35k"
    folder.mkdir(parents=True)
    rows = pd.DataFrame({"text": ["samsung 55 led tv", "apple iphone 8 64gb"], "category": ["TVs", "Mobile Phones"]})
    for split in ("train", "test"):
        rows.to_csv(folder / f"{split}.csv", index=False)
    seen = []

    def fake_run_method(method, train_path, train, test, test_path, *rest):
        seen.append((train_path, test_path, len(train)))
        return test.category.tolist(), 1.0, 10.0

    monkeypatch.setattr(accuracy, "run_method", fake_run_method)
    monkeypatch.setenv("PRODCAT_DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(sys, "argv", ["accuracy.py", "--datasets", "pricerunner-35k", "--methods", "tfidf",
                                      "--data_dir", str(tmp_path / "catalogues")])
    assert accuracy.main() == 0
    assert seen == [(str(folder / "train.csv"), str(folder / "test.csv"), 2)]  # the flag wins over the environment
    # Without the flag, $PRODCAT_DATA_DIR names the folder; a catalogue missing there is skipped with a message.
    monkeypatch.setattr(sys, "argv", ["accuracy.py", "--datasets", "pricerunner-35k", "--methods", "tfidf"])
    assert accuracy.main() == 0
    out = capsys.readouterr().out
    assert f"skipping pricerunner-35k: {tmp_path / 'elsewhere' / 'pricerunner-35k' / 'train.csv'}" in out
    assert "pass --data_dir DIR or set PRODCAT_DATA_DIR" in out and len(seen) == 1


@pytest.mark.parametrize("script", ["accuracy", "ensemble_cv", "few_shot", "inference", "recipe_cv", "significance", "training_speed"])
def test_every_script_that_reads_the_catalogues_takes_data_dir(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--help"])
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(script).main()
    assert stopped.value.code == 0 and "--data_dir" in capsys.readouterr().out

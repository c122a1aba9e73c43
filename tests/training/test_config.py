import json
import subprocess
import sys

import pytest

import prodcat.training.config as args_mod
from prodcat.core.errors import ProdcatError
from prodcat.training.config import check_processes_per_gpu, check_split_arguments, parse_train_args
from tests.conftest import ROOT


def test_defaults_are_tuned_for_the_task():
    model_args, data_args, training_args = parse_train_args([])
    assert training_args.output_dir == "outputs/model"
    assert training_args.metric_for_best_model == "macro_f1"
    assert training_args.load_best_model_at_end is False  # the last epoch (docs/experiments.md)
    assert training_args.average_tokens_across_devices is False  # DDP loss scale, see args.py
    assert data_args.text_column_list == ["description"]
    assert data_args.label_column == "category"
    assert data_args.max_seq_length == 64
    assert model_args.model_name_or_path is None  # the embedded MiniLM
    assert model_args.trust_remote_code is False


@pytest.mark.parametrize(
    "fast_bf16, accelerator, flags, expected",
    [
        (True, False, [], (True, True)),  # a CPU with AMX: bf16 autocast, and use_cpu so that Trainer accepts it
        (False, False, [], (False, False)),  # an older CPU: bf16 would be emulated, slower than fp32
        (True, True, [], (False, False)),  # a GPU machine: unchanged unless asked
        (True, False, ["--bf16", "false"], (False, False)),  # the user's choice wins
        (False, False, ["--bf16", "true"], (True, True)),  # asked for on a CPU: no need to add --use_cpu as well
    ],
)
def test_bf16_is_on_by_default_only_when_training_on_a_cpu_that_multiplies_bf16_in_hardware(
    monkeypatch, fast_bf16, accelerator, flags, expected
):
    monkeypatch.setattr(args_mod, "cpu_has_fast_bf16", lambda: fast_bf16)
    monkeypatch.setattr(args_mod, "_accelerator_available", lambda: accelerator)
    _, _, training_args = parse_train_args(flags)
    assert (training_args.bf16, training_args.use_cpu) == expected
    assert training_args.mixed_precision == ("bf16" if expected[0] else "no")


def test_every_trainer_flag_works_on_the_command_line():
    _, data_args, training_args = parse_train_args(
        ["--text_columns", "title, brand,description", "--gradient_accumulation_steps", "3", "--lr_scheduler_type", "cosine"]
    )
    assert data_args.text_column_list == ["title", "brand", "description"]
    assert training_args.gradient_accumulation_steps == 3
    assert training_args.lr_scheduler_type == "cosine"


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_file_as_only_argument(tmp_path, suffix):
    config = {"train_file": "x.csv", "num_train_epochs": 2, "head_init": "random", "output_dir": str(tmp_path / "out")}
    path = tmp_path / f"config{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(config))
    else:
        import yaml

        path.write_text(yaml.safe_dump(config))
    model_args, data_args, training_args = parse_train_args([str(path)])
    assert (data_args.train_file, training_args.num_train_epochs, model_args.head_init) == ("x.csv", 2, "random")


def test_config_file_with_unknown_key_is_a_clear_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"num_train_epochs": 2, "learning_rat": 0.1}))
    with pytest.raises(ProdcatError, match="config.json.*learning_rat"):
        parse_train_args([str(path)])


def test_cli_reports_bad_input_in_one_line_with_exit_code_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", "--train_file", str(tmp_path / "missing.csv")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("prodcat: error:")]
    assert len(error_lines) == 1 and "missing.csv: file not found" in error_lines[0]


@pytest.mark.parametrize(
    "processes, gpus, use_cpu, refused", [(2, 1, False, True), (2, 1, True, False), (2, 2, False, False), (1, 1, False, False)]
)
def test_more_training_processes_than_gpus_is_a_clear_error(monkeypatch, processes, gpus, use_cpu, refused):
    import torch

    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(processes))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    if refused:
        with pytest.raises(ProdcatError, match=r"2 training processes .* 1 GPU, .*--nproc_per_node 1.*--use_cpu true"):
            check_processes_per_gpu(use_cpu)
    else:
        check_processes_per_gpu(use_cpu)


REFIT = ["--refit_on_all_rows", "true"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (REFIT, None),
        ([*REFIT, "--resume_from_checkpoint", "latest"], None),
        ([*REFIT, "--validation_file", "val.csv"], r"--validation_file holds out none .* drop one of the two"),
        ([*REFIT, "--validation_split", "0"], r"pass --validation_split above 0"),
        ([*REFIT, "--load_best_model_at_end", "true"], r"keeps the last epoch .* drop --load_best_model_at_end"),
        ([*REFIT, "--early_stopping_patience", "2"], r"keeps the last epoch"),
        ([*REFIT, "--resume_from_checkpoint", "out/checkpoint-10"], r"out/checkpoint-10: with --refit_on_all_rows pass 'latest'"),
    ],
)
def test_split_arguments_refuse_what_they_cannot_honour(flags, message):
    model_args, data_args, training_args = parse_train_args(flags)
    if message is None:
        check_split_arguments(data_args, training_args, model_args.early_stopping_patience)
    else:
        with pytest.raises(ProdcatError, match=message):
            check_split_arguments(data_args, training_args, model_args.early_stopping_patience)


def test_validation_min_category_rows_is_gone():
    with pytest.raises((ProdcatError, SystemExit)):
        parse_train_args(["--validation_min_category_rows", "20"])


def test_every_command_refuses_empty_text_columns_with_one_message(tmp_path):
    from types import SimpleNamespace

    from prodcat.cli import audit, evaluate, predict
    from prodcat.data.columns import EMPTY_TEXT_COLUMNS
    from prodcat.data.readers import TableReader

    data = tmp_path / "p.csv"
    data.write_text("description,category\nMug,Home > Kitchen\n", encoding="utf-8")
    _, data_args, _ = parse_train_args(["--text_columns", " , "])
    evaluate_argv = ["--model", str(tmp_path), "--test_file", str(data), "--report_dir", str(tmp_path / "r"), "--text_columns", ""]
    no_summary = SimpleNamespace(training_summary={})
    commands = {
        "train": lambda: data_args.text_column_list,
        "audit": lambda: audit.main([str(data), "--text_columns", ","]),
        "evaluate": lambda: evaluate.main(evaluate_argv),
        "predict": lambda: predict._text_columns(SimpleNamespace(text_columns=" "), no_summary, TableReader(str(data), 10)),
    }
    for name, command in commands.items():
        with pytest.raises(ProdcatError) as err:
            command()
        assert str(err.value) == EMPTY_TEXT_COLUMNS, name


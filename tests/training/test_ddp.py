"""Training under ``torchrun`` with 2 CPU processes (gloo): really data-parallel, the same loss scale as
one process, and one complete output written by the main process only."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, SAMPLE, subprocess_env

# A random classifier head and the plain cross-entropy (no parent-level terms) make the first loss
# predictable: logits near 0, so loss ~ ln(K) for any batch, whatever rows each process gets.
# Defaults (audit, prior correction, calibration, card) stay on: they are the main-process-only
# outputs under test.
TINY = [
    "--train_file", SAMPLE, "--max_train_samples", "64", "--max_seq_length", "16", "--num_train_epochs", "1",
    "--per_device_train_batch_size", "8", "--head_init", "random", "--hierarchy_loss_weight", "0",
    "--logging_steps", "1", "--disable_tqdm", "true", "--seed", "7",
]  # fmt: skip

# Each process records the files it opens for writing, renames or removes (Python's audit hooks),
# then runs train.py as __main__ exactly as torchrun would.
WRAPPER = textwrap.dedent(
    """
    import os, runpy, sys
    log = open(os.path.join(os.environ["WRITE_LOG_DIR"], f"rank{os.environ.get('RANK', '0')}.tsv"), "a", buffering=1)
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def hook(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = (list(args[1:]) + [None, None])[:2]
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & WRITE):
                log.write(f"open\\t{os.path.abspath(os.fsdecode(args[0]))}\\n")
        elif event in ("os.rename", "os.replace"):
            log.write(f"{event}\\t{os.path.abspath(os.fsdecode(args[1]))}\\n")
        elif event in ("os.remove", "shutil.rmtree"):
            log.write(f"{event}\\t{os.path.abspath(os.fsdecode(args[0]))}\\n")

    sys.addaudithook(hook)
    sys.argv = [sys.argv[1], *sys.argv[2:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def env_for(log_dir: str) -> dict[str, str]:
    env = subprocess_env(cpu_only=True, WRITE_LOG_DIR=log_dir)  # CPU (gloo) processes, GPU or not
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU"):
        env.pop(name, None)
    return env


def logged_losses(output_dir: str) -> tuple[list[float], int]:
    """Training losses logged at every step, and the number of optimizer steps (from the checkpoint's state)."""
    checkpoints = [name for name in os.listdir(output_dir) if name.startswith("checkpoint-")]
    assert len(checkpoints) == 1, checkpoints
    state = read_json(os.path.join(output_dir, checkpoints[0], "trainer_state.json"))
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry], state["global_step"]


def written_paths(log_dir: str, rank: int) -> list[tuple[str, str]]:
    path = os.path.join(log_dir, f"rank{rank}.tsv")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [tuple(line.rstrip("\n").split("\t", 1)) for line in handle if line.strip()]


SINGLE = [sys.executable]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def launch(root, name: str, launcher: list[str], extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Run train.py on TINY (plus ``extra``) under ``launcher``, recording each process's writes."""
    wrapper = root / "record_writes.py"
    if not wrapper.exists():
        wrapper.write_text(WRAPPER)
    logs = root / f"{name}-writes"
    logs.mkdir()
    output_dir = str(root / name)
    result = subprocess.run(
        [*launcher, str(wrapper), os.path.join(ROOT, "train.py"), *TINY, *extra, "--output_dir", output_dir],
        cwd=str(root), capture_output=True, text=True, check=False, env=env_for(str(logs)), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, f"{name}: {result.stderr[-4000:]}"
    return {"output_dir": output_dir, "logs": str(logs), "stdout": result.stdout}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    return {"single": launch(root, "single", SINGLE), "ddp": launch(root, "ddp", TORCHRUN)}


def writes_under(run: dict[str, str], rank: int) -> list[tuple[str, str]]:
    """The (event, path) writes one process of ``run`` made in its output directory."""
    output_dir = run["output_dir"]
    return [(event, path) for event, path in written_paths(run["logs"], rank) if path == output_dir or path.startswith(output_dir + os.sep)]


def test_two_processes_share_the_data_and_log_the_same_loss_scale(runs):
    single_losses, single_steps = logged_losses(runs["single"]["output_dir"])
    ddp_losses, ddp_steps = logged_losses(runs["ddp"]["output_dir"])
    summary = read_json(os.path.join(runs["ddp"]["output_dir"], "training_summary.json"))
    n_classes = len(summary["label_counts"])
    # The rows the transformer trained on (the user's plus the category-name examples), as the run recorded them.
    n_train = read_json(os.path.join(runs["ddp"]["output_dir"], "train_results.json"))["train_samples"]
    # Really data-parallel: each step takes 8 rows on each of 2 processes (two independent copies
    # of a single-process run would each take 8 rows a step and log twice as many steps).
    assert single_steps == math.ceil(n_train / 8)
    assert ddp_steps == math.ceil(n_train / 16)
    assert len(ddp_losses) == ddp_steps
    # Same scale: the first loss (before any update) is ~ln(K) in both; a loss multiplied by the
    # number of processes (2 ln K) would fail both checks.
    expected = math.log(n_classes)
    assert 0.85 * expected < single_losses[0] < 1.15 * expected
    assert 0.85 * expected < ddp_losses[0] < 1.15 * expected
    assert 0.8 < ddp_losses[0] / single_losses[0] < 1.25
    assert not 0.8 < 2 * ddp_losses[0] / single_losses[0] < 1.25  # the criterion does catch a doubled loss


def test_only_the_main_process_writes_and_the_output_is_complete(runs):
    output_dir = runs["ddp"]["output_dir"]
    assert writes_under(runs["ddp"], 0), "the write log of rank 0 is empty: the audit hook did not run"
    assert writes_under(runs["ddp"], 1) == []  # rank 1 wrote, renamed and removed nothing in the output directory

    files = set(os.listdir(output_dir))
    expected = {
        "model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "train_results.json",
        "eval_results.json", "training_summary.json", "calibration.json", "audit.json", "README.md",
    }  # fmt: skip
    assert expected <= files, expected - files
    assert not [name for name in files if name.endswith(".partial") or name.startswith(".")]  # no temporary files
    # The same files as the single-process run (checkpoint numbers aside).
    single = {name for name in os.listdir(runs["single"]["output_dir"]) if not name.startswith("checkpoint-")}
    assert {name for name in files if not name.startswith("checkpoint-")} == single
    for name in ("training_summary.json", "eval_results.json", "calibration.json", "audit.json", "config.json"):
        read_json(os.path.join(output_dir, name))  # complete, valid JSON
    with open(os.path.join(output_dir, "README.md"), encoding="utf-8") as handle:
        card = handle.read()
    assert card.startswith("---") and "eval" in card.lower()
    assert runs["ddp"]["stdout"].count("eval metrics:") == 1  # printed once, by the main process

    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(output_dir, use_safetensors=True)
    single_config = read_json(os.path.join(runs["single"]["output_dir"], "config.json"))
    assert model.config.id2label == {int(k): v for k, v in single_config["id2label"].items()}


def test_refit_on_all_rows_under_two_processes_trains_both_runs_in_parallel_and_writes_from_the_main_process(tmp_path):
    run = launch(tmp_path, "refit", TORCHRUN, ("--refit_on_all_rows", "true"))
    output_dir = run["output_dir"]
    first = os.path.join(output_dir, "holdout")
    summary, first_summary = (read_json(os.path.join(folder, "training_summary.json")) for folder in (output_dir, first))
    held_out = first_summary["num_validation"]
    assert held_out > 0 and first_summary["num_train"] == 64 - held_out and summary["num_train"] == 64
    # Both runs are data-parallel: 8 rows on each of 2 processes per step.
    for folder in (first, output_dir):
        _, steps = logged_losses(folder)
        assert steps == math.ceil(read_json(os.path.join(folder, "train_results.json"))["train_samples"] / 16), folder
    # The second run waited for the first run's summary and took over what the held-out rows fitted.
    assert read_json(os.path.join(output_dir, "eval_results.json")) == read_json(os.path.join(first, "eval_results.json"))
    temperatures = [read_json(os.path.join(folder, "config.json"))["prodcat_temperature"] for folder in (output_dir, first)]
    assert temperatures[0] == temperatures[1]
    # Only the main process wrote, in both runs' folders.
    rank0 = [path for _, path in writes_under(run, 0)]
    assert any(path.startswith(first + os.sep) for path in rank0) and os.path.join(output_dir, "training_summary.json") in rank0
    assert writes_under(run, 1) == []

    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(output_dir, use_safetensors=True)
    assert len(model.config.id2label) == len(summary["label_counts"])

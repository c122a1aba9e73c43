"""Ctrl-C / SIGTERM during training: a checkpoint, a clean exit (130 / 143) saying how to resume, and
``--resume_from_checkpoint latest`` finishing with exactly the results of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from prodcat.core.errors import ProdcatError
from prodcat.training.interrupt import (
    GracefulInterrupt,
    TrainingInterrupted,
    check_checkpoint_matches,
    find_last_checkpoint,
    resolve_resume_checkpoint,
)
from tests.conftest import ROOT, SAMPLE, same_weights, subprocess_env

# Two epochs of 8 steps (64 rows less the validation split, in batches of 8; the category-name
# examples are off so the step numbers below stay those of the user's rows); prior correction and
# calibration stay on: the resumed run must match through the post-training steps too.
TINY = [
    "--train_file", SAMPLE, "--max_train_samples", "64", "--max_seq_length", "16", "--num_train_epochs", "2",
    "--per_device_train_batch_size", "8", "--audit", "false", "--disable_tqdm", "true", "--seed", "7",
    "--category_name_examples", "false",
    "--load_best_model_at_end", "true",  # the harder path: the best checkpoint is tracked across the resume
]  # fmt: skip

# Runs prodcat's real training entry point, and sends this process a signal at the end of a given
# optimizer step: a deterministic stand-in for Ctrl-C / kill.
DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    from transformers import TrainerCallback
    import prodcat.training.run as training
    from prodcat.cli.main import run_guarded, train_main

    STEP, SIGNAL = int(os.environ["SIGNAL_AT_STEP"]), getattr(signal, os.environ["SIGNAL_NAME"])

    class SignalAtStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == STEP:
                os.kill(os.getpid(), SIGNAL)

    original = training.ProdcatTrainer.__init__
    def patched(self, *args, **kwargs):
        original(self, *args, **kwargs)
        # First in line: as if the signal arrived while step STEP was computing.
        self.callback_handler.callbacks.insert(0, SignalAtStep())
    training.ProdcatTrainer.__init__ = patched
    sys.exit(run_guarded(train_main, sys.argv[1:]))
    """
)


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def run(args: list[str], cwd: str, signal_at: tuple[int, str] | None = None) -> subprocess.CompletedProcess:
    env = subprocess_env(cpu_only=True)  # bit-exact resuming is a CPU property (see subprocess_env)
    if signal_at is None:
        command = [sys.executable, os.path.join(ROOT, "train.py"), *args]
    else:
        driver = os.path.join(cwd, "signal_driver.py")
        with open(driver, "w", encoding="utf-8") as handle:
            handle.write(DRIVER)
        env["SIGNAL_AT_STEP"], env["SIGNAL_NAME"] = str(signal_at[0]), signal_at[1]
        command = [sys.executable, driver, *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False, env=env, timeout=600)


def final_numbers(output_dir: str) -> dict:
    """Everything a run decides, without timings: eval metrics, calibration, prior correction, weights."""
    eval_results = read_json(os.path.join(output_dir, "eval_results.json"))
    config = read_json(os.path.join(output_dir, "config.json"))
    return {
        "eval": {k: v for k, v in eval_results.items() if "runtime" not in k and "per_second" not in k},
        "calibration": read_json(os.path.join(output_dir, "calibration.json")),
        "temperature": config.get("prodcat_temperature"),
        "prior_correction": config.get("prodcat_prior_correction"),
    }


def stop_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("prodcat:")]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    return lines[0]


def test_interrupted_twice_and_resumed_matches_an_uninterrupted_run(tmp_path):
    baseline, resumed = str(tmp_path / "baseline"), str(tmp_path / "resumed")
    result = run([*TINY, "--output_dir", baseline], str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]

    # Ctrl-C in the middle of epoch 1: checkpoint at that step, exit 130, nothing else written.
    first = run([*TINY, "--output_dir", resumed], str(tmp_path), signal_at=(3, "SIGINT"))
    assert first.returncode == 130, first.stderr[-3000:]
    line = stop_line(first.stderr)
    assert "SIGINT" in line and "checkpoint-3" in line and "--resume_from_checkpoint latest" in line
    assert sorted(os.listdir(resumed)) == ["checkpoint-3"]  # no final model, results or card
    assert os.path.isfile(os.path.join(resumed, "checkpoint-3", "trainer_state.json"))

    # Resumed, then SIGTERM on the last step of epoch 1: the epoch's evaluation still runs (it picks
    # the best checkpoint here) before the checkpoint is saved; exit 143.
    second = run([*TINY, "--output_dir", resumed, "--resume_from_checkpoint", "latest"], str(tmp_path), signal_at=(8, "SIGTERM"))
    assert second.returncode == 143, second.stderr[-3000:]
    assert "SIGTERM" in stop_line(second.stderr)
    state = read_json(os.path.join(resumed, "checkpoint-8", "trainer_state.json"))
    assert state["global_step"] == 8 and any("eval_macro_f1" in entry for entry in state["log_history"])
    assert not os.path.exists(os.path.join(resumed, "model.safetensors"))

    third = run([*TINY, "--output_dir", resumed, "--resume_from_checkpoint", "latest"], str(tmp_path))
    assert third.returncode == 0, third.stderr[-3000:]
    assert final_numbers(resumed) == final_numbers(baseline)
    assert same_weights(resumed, baseline)


def test_refit_interrupted_in_each_run_and_resumed_matches_an_uninterrupted_refit(tmp_path):
    # The signal comes at step 3 of every Trainer the process builds: in the first (held-out) run, then,
    # once that run is resumed past step 3 and finished, in the second (all-rows) run.
    best = TINY.index("--load_best_model_at_end")
    refit = [*TINY[:best], *TINY[best + 2 :], "--refit_on_all_rows", "true"]  # refit keeps the last epoch
    refit[refit.index("--num_train_epochs") + 1] = "1"  # 8 steps per run are enough to stop at step 3
    baseline, resumed = str(tmp_path / "baseline"), str(tmp_path / "resumed")
    result = run([*refit, "--output_dir", baseline], str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]

    first = run([*refit, "--output_dir", resumed], str(tmp_path), signal_at=(3, "SIGINT"))
    assert first.returncode == 130, first.stderr[-3000:]
    assert "--resume_from_checkpoint latest" in stop_line(first.stderr)
    assert os.listdir(resumed) == ["holdout"] and os.listdir(os.path.join(resumed, "holdout")) == ["checkpoint-3"]

    resume = [*refit, "--output_dir", resumed, "--resume_from_checkpoint", "latest"]
    second = run(resume, str(tmp_path), signal_at=(3, "SIGINT"))
    assert second.returncode == 130, second.stderr[-3000:]
    assert sorted(os.listdir(resumed)) == ["checkpoint-3", "holdout"]  # the first run finished, the second stopped
    assert same_weights(os.path.join(resumed, "holdout"), os.path.join(baseline, "holdout"))

    third = run(resume, str(tmp_path))
    assert third.returncode == 0, third.stderr[-3000:]
    assert final_numbers(resumed) == final_numbers(baseline)
    assert same_weights(resumed, baseline)


# ---- resolving --resume_from_checkpoint ---------------------------------------------------------


def fake_checkpoint(folder, labels=("A > B", "A > C"), complete=True) -> str:
    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as handle:
        json.dump({"id2label": {str(i): label for i, label in enumerate(labels)}}, handle)
    open(os.path.join(folder, "model.safetensors"), "wb").close()
    if complete:
        open(os.path.join(folder, "trainer_state.json"), "w").close()
    return str(folder)


def test_latest_is_the_newest_complete_checkpoint(tmp_path, caplog):
    fake_checkpoint(tmp_path / "checkpoint-9")
    newest = fake_checkpoint(tmp_path / "checkpoint-12")
    fake_checkpoint(tmp_path / "checkpoint-20", complete=False)  # cut off while being written
    fake_checkpoint(tmp_path / "checkpoint-100-old")  # not a Trainer checkpoint name
    assert find_last_checkpoint(str(tmp_path)) == newest
    assert "checkpoint-20: incomplete checkpoint" in caplog.text
    for value in ("latest", "LAST", "true", True):
        assert resolve_resume_checkpoint(value, str(tmp_path)) == newest
    assert resolve_resume_checkpoint(str(tmp_path / "checkpoint-9"), "elsewhere") == str(tmp_path / "checkpoint-9")
    assert resolve_resume_checkpoint(None, str(tmp_path)) is None and resolve_resume_checkpoint("", str(tmp_path)) is None


def test_resume_errors_say_what_to_do(tmp_path):
    with pytest.raises(ProdcatError, match="no complete checkpoint-N folder to resume from"):
        resolve_resume_checkpoint("latest", str(tmp_path / "never-trained"))
    with pytest.raises(ProdcatError, match="checkpoint folder not found"):
        resolve_resume_checkpoint(str(tmp_path / "checkpoint-5"), str(tmp_path))
    incomplete = fake_checkpoint(tmp_path / "checkpoint-7", complete=False)
    with pytest.raises(ProdcatError, match="not a complete training checkpoint"):
        resolve_resume_checkpoint(incomplete, str(tmp_path))
    checkpoint = fake_checkpoint(tmp_path / "checkpoint-8")
    check_checkpoint_matches(checkpoint, ["A > B", "A > C"])
    with pytest.raises(ProdcatError, match="trained on 2 categories, the data now has 3"):
        check_checkpoint_matches(checkpoint, ["A > B", "A > C", "A > D"])
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ProdcatError, match="only pickled weights"):
        check_checkpoint_matches(str(pickled), ["A > B"])


def test_cli_resume_latest_without_checkpoint_fails_fast_with_exit_2(tmp_path, capsys):
    from prodcat.cli.main import run_guarded, train_main

    start = time.time()
    rc = run_guarded(train_main, [*TINY, "--output_dir", str(tmp_path / "out"), "--resume_from_checkpoint", "latest"])
    assert rc == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("prodcat: error:")]
    assert len(lines) == 1 and "no complete checkpoint-N folder" in lines[0] and "out" in lines[0]
    assert time.time() - start < 30  # before loading data or the model
    assert not os.path.exists(tmp_path / "out")


# ---- the callback itself -----------------------------------------------------------------------


class Control:
    should_save = should_training_stop = should_evaluate = False


class State:
    def __init__(self, step: int, epoch: float) -> None:
        self.global_step, self.epoch, self.max_steps = step, epoch, 16


class Args:
    world_size = 1
    device = "cpu"
    output_dir = "out"


def test_signal_stops_at_the_step_end_or_waits_for_the_epoch_end():
    interrupt = GracefulInterrupt()
    before = signal.getsignal(signal.SIGTERM)
    control = Control()
    interrupt.on_step_end(Args(), State(2, 0.25), control)
    assert not control.should_save  # no signal yet
    # The block ends after a signal that no step acted on.
    with pytest.raises(TrainingInterrupted), interrupt.handling_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
    assert interrupt.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored

    mid_epoch = Control()
    interrupt.on_step_end(Args(), State(3, 0.375), mid_epoch)
    assert mid_epoch.should_save and mid_epoch.should_training_stop
    with pytest.raises(TrainingInterrupted) as stopped:
        interrupt.on_save(Args(), State(3, 0.375), mid_epoch)
    assert stopped.value.exit_code == 143 and stopped.value.checkpoint == os.path.join("out", "checkpoint-3")

    at_epoch_end = GracefulInterrupt()
    at_epoch_end.received = signal.SIGINT
    control = Control()
    at_epoch_end.on_step_end(Args(), State(8, 1.0), control)
    assert not control.should_training_stop  # the epoch's evaluation comes first
    assert at_epoch_end.on_save(Args(), State(8, 1.0), control) is control  # a scheduled save is not the stop
    at_epoch_end.on_epoch_end(Args(), State(8, 1.0), control)
    assert control.should_save and control.should_training_stop
    with pytest.raises(TrainingInterrupted) as stopped:
        at_epoch_end.on_save(Args(), State(8, 1.0), control)
    assert stopped.value.exit_code == 130 and "--resume_from_checkpoint latest" in str(stopped.value)


def test_a_repeated_signal_is_ignored_at_first_then_stops_at_once():
    interrupt = GracefulInterrupt(repeat_grace_seconds=0.2)
    # Restored to what it was: Python's default_int_handler, or SIG_IGN in a process started in the
    # background by a non-interactive shell (as some CI runners do).
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), interrupt.handling_signals():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # forwarded by a launcher: ignored
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C from the user: stop now
        time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before

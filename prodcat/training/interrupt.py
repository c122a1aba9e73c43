"""Stopping training cleanly on Ctrl-C or SIGTERM, and resuming it with ``--resume_from_checkpoint``.

On the first SIGINT (Ctrl-C) or SIGTERM (``kill``, Slurm / Kubernetes pre-emption, ``torchrun``
forwarding either), :class:`GracefulInterrupt` lets the current optimizer step finish, asks the
Trainer to save a full checkpoint (weights, optimizer, scheduler, RNG states, trainer state:
``OUTPUT_DIR/checkpoint-N``), and then raises :class:`TrainingInterrupted`, whose message says how to
resume. Nothing else is written: no final model, results or card in the output directory.

The exit code is ``128 + signal``: 130 for Ctrl-C, 143 for SIGTERM, the shell convention, so that a
scheduler or a script sees that the run did not finish (exit 0 would mark a pre-empted job done).

When the stop request lands on the last step of an epoch, the stop waits for the epoch's end so
that its evaluation (which early stopping and ``--load_best_model_at_end`` read) runs before the
checkpoint is saved; a resumed run therefore makes exactly the choices an uninterrupted run makes.
Under ``torchrun`` / ``accelerate launch`` the processes agree (an all-reduce per step) on the step at
which they stop.

A second signal within ``repeat_grace_seconds`` is ignored (launchers forward the same Ctrl-C the
terminal already sent to every process); a later one stops at once, without a checkpoint.

Example:
    >>> interrupt = GracefulInterrupt()
    >>> trainer = Trainer(..., callbacks=[interrupt])
    >>> checkpoint = resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    >>> with interrupt.handling_signals(args.output_dir):
    ...     trainer.train(resume_from_checkpoint=checkpoint)   # Ctrl-C -> TrainingInterrupted (exit 130)

    $ python train.py --output_dir out ...              # Ctrl-C at step 120: out/checkpoint-120
    $ python train.py --output_dir out ... --resume_from_checkpoint latest
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterator, Sequence

from transformers import TrainerCallback

from prodcat.core.errors import ProdcatError
from prodcat.modeling.loading import check_weights_are_safe

logger = logging.getLogger(__name__)

#: Values of ``--resume_from_checkpoint`` meaning "the newest complete checkpoint in --output_dir".
LATEST = ("latest", "last", "true")
_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
_TRAINER_STATE = "trainer_state.json"


def signal_name(signum: int) -> str:
    """``"SIGTERM"`` for 15, ``"signal 99"`` for numbers without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class TrainingInterrupted(ProdcatError):
    """Training stopped on a signal; ``exit_code`` is ``128 + signum`` and the message says how to resume.

    A ProdcatError, so ``prodcat.cli.main.run_guarded`` prints it as one line and exits with its code.
    """

    def __init__(self, signum: int, step: int, max_steps: int, checkpoint: str | None) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        self.step = step
        self.checkpoint = checkpoint
        where = f"at step {step}/{max_steps}" if max_steps else f"at step {step}"
        if checkpoint:
            message = (
                f"training stopped by {signal_name(signum)} {where}; checkpoint saved in {checkpoint}; "
                "to continue, run the same command with --resume_from_checkpoint latest"
            )
        else:
            message = f"training stopped by {signal_name(signum)} {where} before any checkpoint was saved; run the command again"
        super().__init__(message)


class GracefulInterrupt(TrainerCallback):
    """Turns SIGINT / SIGTERM into "save a checkpoint at the next step end, then stop".

    Register it with the Trainer and run ``trainer.train`` inside :meth:`handling_signals`.
    ``received`` is the signal number once one arrived (agreed across processes under DDP).
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM), repeat_grace_seconds: float = 2.0) -> None:
        self.signals = tuple(signals)
        self.repeat_grace_seconds = repeat_grace_seconds
        self.received: int | None = None
        self._received_at = 0.0
        self._stopping = False
        self._stop_requested = False  # should_save + should_training_stop set by us: the next save is ours
        self._saved_checkpoint: str | None = None
        self._previous: dict[int, object] = {}
        self._step = 0
        self._max_steps = 0

    # ---- signal handling --------------------------------------------------------------------

    def _handle(self, signum: int, frame) -> None:
        now = time.monotonic()
        if self.received is None:
            self.received = signum
            self._received_at = now
            logger.warning(
                "Received %s: finishing the current step, then saving a checkpoint and stopping "
                "(send it again to stop at once without saving)",
                signal_name(signum),
            )
            return
        if now - self._received_at < self.repeat_grace_seconds:
            return  # the same Ctrl-C, forwarded by torchrun / accelerate to every process
        self._restore()
        raise KeyboardInterrupt

    def _install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not in the main thread: Ctrl-C / SIGTERM keep their default behaviour")
            return False
        for signum in self.signals:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        return True

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def handling_signals(self, output_dir: str | None = None) -> Iterator[GracefulInterrupt]:
        """Install the handlers for the block (usually ``trainer.train(...)``) and restore them after.

        A signal that arrived after the last step (during the final evaluation) still stops the
        run: :class:`TrainingInterrupted` is raised when the block ends, naming the newest
        checkpoint in ``output_dir`` if there is one.
        """
        installed = self._install()
        try:
            yield self
        finally:
            if installed:
                self._restore()
        if self.received is not None:
            checkpoint = self._saved_checkpoint or (find_last_checkpoint(output_dir) if output_dir else None)
            raise TrainingInterrupted(self.received, self._step, self._max_steps, checkpoint)

    # ---- Trainer callback ---------------------------------------------------------------------

    def _agreed_signal(self, args) -> int | None:
        """The signal any process received (the largest number), so every process stops at the same step."""
        local = int(self.received or 0)
        if getattr(args, "world_size", 1) > 1:
            import torch
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                flag = torch.tensor([local], dtype=torch.int64, device=args.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                local = int(flag.item())
        return local or None

    def on_step_end(self, args, state, control, **kwargs):
        self._step, self._max_steps = state.global_step, state.max_steps
        agreed = self._agreed_signal(args)
        if agreed is None:
            return control
        if self.received is None:
            self.received = agreed  # another process got the signal
            self._received_at = time.monotonic()
        self._stopping = True
        # On an epoch's last step wait for on_epoch_end: its evaluation (best-checkpoint choice)
        # must happen before the checkpoint, as it would have in an uninterrupted run.
        if not float(state.epoch or 0).is_integer():
            self._request_stop(control)
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if self._stopping:
            self._request_stop(control)
        return control

    def _request_stop(self, control) -> None:
        self._stop_requested = True
        control.should_save = True
        control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        if not self._stop_requested:
            return control  # a scheduled save (e.g. --save_steps) before the epoch-end stop
        self._saved_checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if getattr(args, "world_size", 1) > 1:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()  # every process has written its part of the checkpoint
        # Raised here, not after trainer.train returns: the Trainer's end of training would evaluate,
        # load the best model and (with save_total_limit=1) delete this checkpoint.
        raise TrainingInterrupted(int(self.received), state.global_step, state.max_steps, self._saved_checkpoint)


# ---- resuming -------------------------------------------------------------------------------


def find_last_checkpoint(output_dir: str) -> str | None:
    """The highest-numbered *complete* ``checkpoint-N`` folder in ``output_dir`` (one with trainer_state.json).

    A folder without the trainer state was cut off while being written (the state is written last)
    and is skipped with a warning. ``None`` when there is none.
    """
    if not output_dir or not os.path.isdir(output_dir):
        return None
    candidates = sorted(
        ((int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT_DIR.match(name))),
        reverse=True,
    )
    for _, name in candidates:
        path = os.path.join(output_dir, name)
        if os.path.isfile(os.path.join(path, _TRAINER_STATE)):
            return path
        logger.warning("%s: incomplete checkpoint (no %s), skipped", path, _TRAINER_STATE)
    return None


def resolve_resume_checkpoint(value: str | bool | None, output_dir: str) -> str | None:
    """Turn ``--resume_from_checkpoint`` into a checkpoint folder (or None to start fresh).

    ``latest`` (also ``last`` / ``true``) means the newest complete checkpoint in ``output_dir``;
    anything else must be a checkpoint folder. Raises ProdcatError with what to do otherwise.

    Example:
        >>> resolve_resume_checkpoint("latest", "outputs/model")
        'outputs/model/checkpoint-120'
    """
    if value is None or value is False or (isinstance(value, str) and not value.strip()):
        return None
    if value is True or str(value).strip().lower() in LATEST:
        checkpoint = find_last_checkpoint(output_dir)
        if checkpoint is None:
            raise ProdcatError(
                f"{output_dir}: no complete checkpoint-N folder to resume from; pass the --output_dir of the "
                "interrupted run, or train without --resume_from_checkpoint"
            )
        return checkpoint
    path = str(value)
    if not os.path.isdir(path):
        raise ProdcatError(f"{path}: checkpoint folder not found; pass a checkpoint-N folder or 'latest'")
    if not os.path.isfile(os.path.join(path, _TRAINER_STATE)):
        raise ProdcatError(
            f"{path}: not a complete training checkpoint (no {_TRAINER_STATE}); pass a checkpoint-N folder "
            "written by an earlier run, or 'latest'"
        )
    return path


def check_checkpoint_matches(checkpoint: str, label_names: Sequence[str], allow_pickled_weights: bool = False) -> None:
    """Refuse to resume from a checkpoint trained on other categories, or one with only pickled weights.

    Resuming needs the same data and arguments; a different label set would otherwise fail deep in
    ``load_state_dict`` with a shape mismatch.
    """
    check_weights_are_safe(checkpoint, allow_pickled_weights)
    config_path = os.path.join(checkpoint, "config.json")
    try:
        with open(config_path, encoding="utf-8") as handle:
            id2label = json.load(handle).get("id2label") or {}
    except (OSError, ValueError) as err:
        raise ProdcatError(f"{checkpoint}: cannot read config.json ({type(err).__name__}); pass another checkpoint") from None
    saved = [id2label[k] for k in sorted(id2label, key=int)]
    if saved != list(label_names):
        raise ProdcatError(
            f"{checkpoint}: trained on {len(saved)} categories, the data now has {len(label_names)} "
            f"({'different names' if len(saved) == len(label_names) else 'a different count'}); resume with the same "
            "data and arguments, or start a new run in another --output_dir"
        )


def warn_if_stale_checkpoints(output_dir: str, resuming: bool) -> None:
    """Warn when a fresh run starts in a folder holding checkpoints of an earlier run."""
    if resuming:
        return
    last = find_last_checkpoint(output_dir)
    if last:
        logger.warning(
            "%s already holds checkpoints of an earlier run (e.g. %s): add --resume_from_checkpoint latest to continue "
            "it, or use another --output_dir; this run starts from scratch and may overwrite them",
            output_dir,
            os.path.basename(last),
        )

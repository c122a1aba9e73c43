"""``prodcat`` command line: ``prodcat train ...``, ``prodcat predict ...``.

Errors in the user's input are printed as one line (``prodcat: error: ...``) with exit code 2 and
no traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from prodcat.core.errors import ProdcatError


def _setup_logging() -> None:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers' own info logs are verbose (load reports); keep warnings.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()


def run_guarded(main: Callable[[list[str]], int], argv: list[str]) -> int:
    """Run ``main(argv)``; a ProdcatError becomes one line on stderr and exit code 2."""
    try:
        return main(argv) or 0
    except ProdcatError as err:
        # A training stopped by Ctrl-C / SIGTERM (prodcat.training.interrupt.TrainingInterrupted) is not an error.
        kind = "stopped" if getattr(err, "signum", None) else "error"
        print(f"prodcat: {kind}: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("prodcat: interrupted", file=sys.stderr)
        return 130


def train_main(argv: list[str]) -> int:
    """Entry point of ``python train.py`` / ``prodcat train``."""
    _setup_logging()
    from prodcat.training.config import parse_train_args
    from prodcat.training.run import run_training

    results = run_training(*parse_train_args(argv))
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun / accelerate launch the main process reports
    for split in ("eval", "test"):
        if split in results:
            shown = {
                k: round(v, 4) for k, v in results[split].items() if isinstance(v, float) and "runtime" not in k and "per_second" not in k
            }
            print(f"{split} metrics: {shown}")
    print_prediction_paths(results)
    return 0


def print_prediction_paths(results: dict) -> None:
    """One line per prediction path with its validation and test accuracy / macro-F1 (the default path first)."""
    from prodcat.training.summary import predictor_scores

    paths = predictor_scores(results)
    names = {"ensemble": "transformer + n-gram model (prodcat's default)", "transformer": "transformer alone (pipeline())"}
    for key in sorted(paths, key=lambda name: name != "ensemble"):
        figures = paths[key]
        shown = [
            f"{split} accuracy {figures[f'{split}_accuracy']:.4f} macro-F1 {figures[f'{split}_macro_f1']:.4f}"
            for split in ("validation", "test") if f"{split}_accuracy" in figures and f"{split}_macro_f1" in figures
        ]
        if shown:
            print(f"{names[key]}: {', '.join(shown)}")


def _delegate(module: str, doc: str) -> Callable[[list[str]], int]:
    """A command whose implementation lives in ``prodcat.<module>.main(argv)`` (imported lazily)."""

    def command(argv: list[str]) -> int:
        _setup_logging()
        import importlib

        return importlib.import_module(f"prodcat.{module}").main(argv)

    command.__doc__ = doc
    return command


predict_main = _delegate("cli.predict", "Entry point of ``python predict.py`` / ``prodcat predict``.")

COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": train_main,
    "predict": predict_main,
    "evaluate": _delegate("cli.evaluate", "``prodcat evaluate``: score a model on a labelled file and write a report."),
    "audit": _delegate("cli.audit", "``prodcat audit``: check a product file for conflicts, duplicates and leakage."),
    "push": _delegate("cli.push", "``prodcat push``: publish a trained output directory to the Hugging Face Hub."),
}


def main(argv: list[str] | None = None) -> int:
    """``prodcat <command> [args]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        names = ", ".join(COMMANDS)
        print(f"usage: prodcat {{{names}}} [options]   (prodcat <command> --help for options)", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return run_guarded(COMMANDS[argv[0]], argv[1:])


if __name__ == "__main__":
    sys.exit(main())

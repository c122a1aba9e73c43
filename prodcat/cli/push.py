"""``prodcat push``: publish a trained output directory to the Hugging Face Hub (see prodcat.hub.push)."""

from __future__ import annotations

import argparse
import sys

from prodcat.core.errors import ProdcatError
from prodcat.hub.push import push_output_dir

# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that raises ProdcatError (one line) and never echoes a token back."""

    def error(self, message: str) -> None:  # type: ignore[override]
        words = [("***" if w.startswith("hf_") else w) for w in message.split()]
        raise ProdcatError(f"push: {' '.join(words)} (see prodcat push --help)")


def _boolean(text: str) -> bool:
    """``true``/``false`` (also yes/no, 1/0), spelled as for ``prodcat train``'s boolean options."""
    value = text.strip().lower()
    if value in {"true", "t", "yes", "y", "1"}:
        return True
    if value in {"false", "f", "no", "n", "0"}:
        return False
    raise argparse.ArgumentTypeError("expected true or false")  # the value is not echoed: it could be a mistyped token


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="prodcat push",
        description="Upload a trained output directory (model, tokenizer, card, results, onnx/, ngram/) to the Hugging Face Hub.",
    )
    parser.add_argument("output_dir", help="The --output_dir of a finished training run.")
    parser.add_argument("--hub_model_id", required=True, help="Hub repository, e.g. acme/prodcat-grocery (created if missing).")
    parser.add_argument("--private", action="store_true", default=None, help="Create the repository as private.")
    parser.add_argument(
        "--token",
        default=None,
        help="Hub token with write access (default: HF_TOKEN or the saved `hf auth login`; prefer those, a flag stays in shell history).",
    )
    parser.add_argument("--license", default=None, help="Hub license id (default: the card's current one, else 'unknown').")
    parser.add_argument("--dataset_id", default=None, help="Hub dataset id of the training data, if it came from the Hub.")
    parser.add_argument("--dataset_name", default=None, help="Name of the training data in the card's results (e.g. bigbasket-27k).")
    parser.add_argument("--commit_message", default=None, help="Commit message (default: 'Upload <name> (prodcat)').")
    parser.add_argument(
        "--include_checkpoints", action="store_true", help="Also upload checkpoint-* folders (optimizer/scheduler/RNG states)."
    )
    parser.add_argument(
        "--ngram_ensemble",
        type=_boolean,
        nargs="?",
        const=True,
        default=True,
        metavar="{true,false}",
        help="Upload ngram/, the n-gram model prodcat pools with the transformer (default true). Its vocabulary.json lists "
        "words and word pairs of the training texts; 'false' leaves it out, and the card then describes the transformer alone.",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``prodcat push DIR --hub_model_id org/name [--private] [--token T] [--license L] [--ngram_ensemble false]``."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    url = push_output_dir(
        args.output_dir,
        args.hub_model_id,
        token=args.token,
        private=args.private,
        commit_message=args.commit_message,
        include_checkpoints=args.include_checkpoints,
        license=args.license,
        dataset_id=args.dataset_id,
        dataset_name=args.dataset_name,
        include_ngram=args.ngram_ensemble,
    )
    print(f"Pushed {args.output_dir} to {url}")
    return 0

"""``predict.py`` / ``prodcat predict``: categorise texts from the command line, stdin or a file.

Examples::

    python predict.py --model outputs/model "Sony WH-1000XM4 wireless headphones" "Basmati rice 5 kg"
    cat titles.txt | python predict.py --model outputs/model -
    python predict.py --model outputs/model --input_file products.csv --output_file predictions.csv \\
        --text_columns title,description --top_k 3 --threshold 0.8 --levels --backend onnx --quantize
    torchrun --nproc_per_node 4 predict.py --model outputs/model --input_file big.parquet --output_file out.parquet

File mode streams the input in chunks (``prodcat.data.readers.TableReader``: CSV / TSV and JSON
Lines line by line, Parquet by ``pyarrow`` batches), so memory stays bounded, and writes the output
to a temporary file that is renamed into place only at the end: a crash or Ctrl-C never leaves a
half-written output. The output keeps every input column, in order, and adds
``predicted_category`` and ``score``; ``--top_k K`` adds ``top_2_category``/``top_2_score`` ...
``top_K_*``; ``--levels`` adds ``level_1_category``/``level_1_score`` ...; ``--threshold`` adds
``backoff_category``, ``backoff_score`` and ``needs_review``. Rows whose text is empty are kept
with empty prediction cells (and counted in a warning).

Under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE > 1``) every process predicts every
``WORLD_SIZE``-th chunk into a part file; rank 0 merges the parts, in input order, into one output
and removes them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from prodcat.core.errors import ProdcatError
from prodcat.core.io import atomic_path, atomic_table_writer, file_format
from prodcat.data.columns import parse_text_columns
from prodcat.data.readers import TableReader
from prodcat.data.tables import join_text_columns
from prodcat.inference.categorizer import Categorizer

logger = logging.getLogger(__name__)

DEFAULT_TEXT_COLUMNS = ["text"]
PREDICTED = "predicted_category"
SCORE = "score"


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


ENSEMBLE_CHOICES = {"auto": None, "true": True, "false": False}


def ensemble_choice(value: str) -> bool | None:
    """``--ensemble``'s value as ``Categorizer.from_pretrained`` takes it: auto -> None, true, false."""
    key = str(value).strip().lower()
    if key not in ENSEMBLE_CHOICES:
        raise argparse.ArgumentTypeError(f"{value!r}: use auto, true or false")
    return ENSEMBLE_CHOICES[key]


def add_predictor_options(parser: argparse.ArgumentParser) -> None:
    """The flags that choose a prediction path: backend, int8, and the n-gram ensemble (predict and evaluate)."""
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch", help="Inference backend (default torch).")
    parser.add_argument("--quantize", action="store_true", help="ONNX int8 dynamic quantization (with --backend onnx).")
    parser.add_argument(
        "--recheck_margin",
        type=float,
        help="With --quantize: recompute in fp32 the rows whose top-1/top-2 logit margin is below this "
        "(default: the margin measured on the category names when quantizing; 0 = pure int8).",
    )
    parser.add_argument(
        "--ensemble",
        type=ensemble_choice,
        default=None,
        metavar="{auto,true,false}",
        help="Pool the transformer with the model's n-gram model (ngram/, saved by training unless --ngram_ensemble false). "
        "auto (default): whenever the folder has one; true: require it; false: the transformer alone, as pipeline() gives.",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predict.py",
        description="Predict product categories with a trained prodcat model (or any text classifier whose labels are category paths).",
    )
    parser.add_argument("texts", nargs="*", help="Texts to categorise; '-' reads one text per line from stdin.")
    parser.add_argument("--model", "--model_name_or_path", dest="model", required=True, help="Model folder or Hub id.")
    parser.add_argument("--input_file", help="Products to categorise: .csv, .tsv, .jsonl or .parquet.")
    parser.add_argument("--output_file", help="Where to write predictions (.csv, .tsv, .jsonl or .parquet); needs --input_file.")
    parser.add_argument(
        "--text_columns",
        help="Comma-separated columns joined into the model input like in training (default: the training run's, else 'text').",
    )
    parser.add_argument("--top_k", type=int, default=1, help="Also output the K most probable categories (default 1).")
    parser.add_argument(
        "--threshold",
        type=float,
        help="Back-off: output the deepest category with probability >= THRESHOLD, and needs_review when none reaches it.",
    )
    parser.add_argument("--levels", action="store_true", help="Add per-level columns (level_N_category, level_N_score).")
    parser.add_argument("--batch_size", type=int, default=64, help="Texts per forward pass (default 64).")
    parser.add_argument("--chunk_size", type=int, default=8192, help="Rows read, predicted and written at a time (default 8192).")
    add_predictor_options(parser)
    parser.add_argument("--max_seq_length", type=int, help="Tokens per text (default: the training run's, else 128).")
    parser.add_argument("--num_threads", type=int, help="CPU threads (default: all cores, shared between processes).")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cuda when available).")
    parser.add_argument("--label_separator", help="Level separator in the model's labels (default: detected).")
    parser.add_argument("--trust_remote_code", action="store_true", help="Allow custom model code (off by default).")
    parser.add_argument("--json", action="store_true", help="Text mode: print one JSON object per text instead of a line.")
    parser.add_argument("--no_progress", action="store_true", help="Hide the progress bar.")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    args = build_parser().parse_args(list(argv))
    if args.input_file and args.texts:
        raise ProdcatError("give either texts on the command line or --input_file, not both")
    if not args.input_file and not args.texts:
        raise ProdcatError("nothing to predict: give texts, '-' to read stdin, or --input_file FILE --output_file FILE")
    if args.input_file and not args.output_file:
        raise ProdcatError("--input_file needs --output_file (e.g. --output_file predictions.csv)")
    if args.output_file and not args.input_file:
        raise ProdcatError("--output_file needs --input_file; texts given on the command line are printed")
    if args.top_k < 1:
        raise ProdcatError(f"--top_k must be at least 1, got {args.top_k}")
    if args.threshold is not None and not 0.0 < args.threshold <= 1.0:
        raise ProdcatError(f"--threshold must be in (0, 1], got {args.threshold}")
    for name in ("batch_size", "chunk_size"):
        if getattr(args, name) < 1:
            raise ProdcatError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.quantize and args.backend != "onnx":
        raise ProdcatError("--quantize needs --backend onnx")
    if args.output_file:
        file_format(args.output_file)  # unsupported extension: fail before loading the model
    return args


# --------------------------------------------------------------------------------------------
# Processes (torchrun / accelerate launch)
# --------------------------------------------------------------------------------------------


class Processes:
    """Rank and world size from the launcher's environment; gloo collectives when more than one."""

    def __init__(self) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world_size)))
        self._initialised_here = False
        if self.world_size > 1:
            import datetime

            import torch.distributed as dist

            if not dist.is_initialized():
                # gloo: the collectives here are a few barriers on the CPU, whatever device predicts.
                dist.init_process_group("gloo", timeout=datetime.timedelta(hours=12))
                self._initialised_here = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def total(self, value: int) -> int:
        """Sum of ``value`` over all processes."""
        if self.world_size == 1:
            return value
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(tensor)
        return int(tensor.item())

    def default_threads(self) -> int | None:
        """Cores shared between the processes on this machine (None: single process, library default)."""
        if self.local_world_size <= 1:
            return None
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // self.local_world_size)

    def close(self) -> None:
        if self._initialised_here:
            import torch.distributed as dist

            dist.destroy_process_group()


# --------------------------------------------------------------------------------------------
# Predictions -> columns
# --------------------------------------------------------------------------------------------


def output_columns(top_k: int, levels: int, threshold: float | None) -> list[str]:
    """Names of the columns prediction adds, in order."""
    names = [PREDICTED, SCORE]
    for rank in range(2, top_k + 1):
        names += [f"top_{rank}_category", f"top_{rank}_score"]
    for level in range(1, levels + 1):
        names += [f"level_{level}_category", f"level_{level}_score"]
    if threshold is not None:
        names += ["backoff_category", "backoff_score", "needs_review"]
    return names


def prediction_columns(predictions, top_k: int, levels: int, threshold: float | None) -> dict[str, object]:
    """Column name -> values for a list of Predictions; an empty prediction gives missing cells.

    Category columns are pandas ``string`` arrays, scores float64 (NaN when missing) and
    ``needs_review`` a nullable ``boolean`` array, so every output format keeps the types.
    """
    n = len(predictions)
    names = output_columns(top_k, levels, threshold)
    values: dict[str, list] = {name: [None] * n for name in names}
    for i, p in enumerate(predictions):
        if p.is_empty:
            continue
        values[PREDICTED][i] = p.category
        values[SCORE][i] = p.score
        for rank, alt in enumerate(p.top_k[1:top_k], start=2):
            values[f"top_{rank}_category"][i] = alt.category
            values[f"top_{rank}_score"][i] = alt.score
        for level, node in enumerate(p.levels[:levels], start=1):
            values[f"level_{level}_category"][i] = node.category
            values[f"level_{level}_score"][i] = node.score
        if threshold is not None and p.backoff is not None:
            values["backoff_category"][i] = p.backoff.category or None  # needs review: no category
            values["backoff_score"][i] = p.backoff.score
            values["needs_review"][i] = p.backoff.needs_review
    columns: dict[str, object] = {}
    for name in names:
        if name == "needs_review":
            columns[name] = pd.array(values[name], dtype="boolean")
        elif name == SCORE or name.endswith("_score"):
            # 6 decimals: float32 probabilities carry no more, and the file stays readable.
            columns[name] = np.round(np.array([np.nan if v is None else v for v in values[name]], dtype=np.float64), 6)
        else:
            columns[name] = pd.array(values[name], dtype="string")
    return columns


# --------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------


def _load_categorizer(args: argparse.Namespace, processes: Processes | None = None):

    num_threads = args.num_threads or (processes.default_threads() if processes else None)
    device = args.device
    if device is None and processes is not None and processes.world_size > 1:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{processes.local_rank % torch.cuda.device_count()}"
    return Categorizer.from_pretrained(
        args.model,
        backend=args.backend,
        quantize=args.quantize,
        device=device,
        max_seq_length=args.max_seq_length,
        num_threads=num_threads,
        label_separator=args.label_separator,
        trust_remote_code=args.trust_remote_code,
        recheck_margin=args.recheck_margin,
        ensemble=args.ensemble,
    )


def _one_line(text: str, width: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def format_prediction(prediction, top_k: int = 1) -> str:
    """One readable line: ``text -> category (score)``, alternatives and back-off appended.

    Example:
        >>> format_prediction(p, top_k=2)
        'Sony WH-1000XM4 -> Electronics > Audio > Headphones (0.93) | also: Electronics > Audio > Speakers (0.04)'
    """
    if prediction.is_empty:
        return "(empty text) -> no prediction"
    line = f"{_one_line(prediction.text)} -> {prediction.category} ({prediction.score:.2f})"
    if top_k > 1 and len(prediction.top_k) > 1:
        line += " | also: " + ", ".join(f"{alt.category} ({alt.score:.2f})" for alt in prediction.top_k[1:top_k])
    if prediction.backoff is not None:
        if prediction.backoff.needs_review:
            line += f" | needs review (best top level {prediction.backoff.score:.2f} < {prediction.backoff.threshold:g})"
        else:
            line += f" | back-off: {prediction.backoff.category} ({prediction.backoff.score:.2f})"
    return line


def _stdin_chunks(chunk_size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for line in sys.stdin:
        batch.append(line.rstrip("\r\n"))
        if len(batch) == chunk_size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_texts(args: argparse.Namespace) -> int:
    """Texts from the command line (or stdin with ``-``): one printed line per text, in order."""
    categorizer = _load_categorizer(args)
    chunks: Iterator[list[str]] = _stdin_chunks(args.chunk_size) if args.texts == ["-"] else iter([args.texts])
    for texts in chunks:
        for prediction in categorizer.predict(texts, top_k=args.top_k, threshold=args.threshold, batch_size=args.batch_size):
            if args.json:
                print(json.dumps(prediction.to_dict(), ensure_ascii=False))
            else:
                print(format_prediction(prediction, args.top_k))
        sys.stdout.flush()
    return 0


def _text_columns(args: argparse.Namespace, categorizer, reader: TableReader) -> list[str]:
    trained = categorizer.training_summary.text_columns if categorizer.training_summary else None
    columns = parse_text_columns(args.text_columns, trained or DEFAULT_TEXT_COLUMNS)
    if args.text_columns is not None:
        source = "--text_columns"
    else:
        source = "the model's training text columns" if trained else "the default"
    missing = [c for c in columns if c not in reader.columns]
    if missing:
        raise ProdcatError(
            f"{reader.path}: no column {', '.join(repr(c) for c in missing)} ({source}; the file has: "
            f"{', '.join(reader.columns)}); pass --text_columns"
        )
    return columns


def _with_predictions(chunk: pd.DataFrame, categorizer, text_columns: list[str], args, levels: int) -> tuple[pd.DataFrame, int]:
    texts = join_text_columns(chunk, text_columns)
    predictions = categorizer.predict(texts, top_k=args.top_k, threshold=args.threshold, batch_size=args.batch_size)
    added = prediction_columns(predictions, args.top_k, levels, args.threshold)
    out = chunk.reset_index(drop=True)
    out = pd.concat([out, pd.DataFrame(added)], axis=1)
    return out, sum(1 for p in predictions if p.is_empty)


def predict_file(args: argparse.Namespace) -> int:
    """``--input_file`` -> ``--output_file``, streamed in chunks; split across processes under torchrun."""
    reader = TableReader(args.input_file, args.chunk_size)
    processes = Processes()
    try:
        categorizer = _load_categorizer(args, processes)
        text_columns = _text_columns(args, categorizer, reader)
        levels = categorizer.taxonomy.depth if args.levels else 0
        added = output_columns(args.top_k, levels, args.threshold)
        clash = [c for c in added if c in reader.columns]
        if clash:
            raise ProdcatError(
                f"{args.input_file}: already has column(s) {', '.join(clash)} (an earlier prediction output?); "
                "rename or drop them first"
            )
        from tqdm.auto import tqdm

        total = reader.rows_estimate
        if total is not None and processes.world_size > 1:
            total = -(-total // processes.world_size)
        progress = tqdm(total=total, unit="rows", desc="Predicting", disable=args.no_progress or not processes.is_main)
        if processes.world_size == 1:
            empty = _predict_single(args, reader, categorizer, text_columns, levels, added, progress)
        else:
            empty = _predict_distributed(args, reader, categorizer, text_columns, levels, added, progress, processes)
        progress.close()
        if empty and processes.is_main:
            logger.warning(
                "%s: %d row(s) with empty text in %s kept with an empty prediction", args.input_file, empty, ", ".join(text_columns)
            )
        if processes.is_main:
            logger.info("Wrote %s", args.output_file)
    finally:
        processes.close()
    return 0


def _empty_output(reader: TableReader, added: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=[*reader.columns, *added])


def _predict_single(args, reader, categorizer, text_columns, levels, added, progress) -> int:
    empty = 0
    with atomic_table_writer(args.output_file) as writer:
        for chunk in reader.chunks():
            out, n_empty = _with_predictions(chunk, categorizer, text_columns, args, levels)
            writer.write(out)
            empty += n_empty
            progress.update(len(chunk))
        if writer.rows == 0:
            writer.write(_empty_output(reader, added))
    return empty


def _parts_dir(output_file: str) -> str:
    folder, name = os.path.split(os.path.abspath(output_file))
    return os.path.join(folder, f".{name}.prodcat-parts")


def _predict_distributed(args, reader, categorizer, text_columns, levels, added, progress, processes: Processes) -> int:
    """Chunk ``i`` goes to rank ``i % world_size``; each writes Parquet parts, rank 0 merges in chunk order."""
    parts = _parts_dir(args.output_file)
    if processes.is_main:
        shutil.rmtree(parts, ignore_errors=True)
        os.makedirs(parts)
    processes.barrier()
    empty = 0
    chunk_count = 0
    try:
        for index, chunk in enumerate(reader.chunks()):
            chunk_count = index + 1
            if index % processes.world_size != processes.rank:
                continue
            out, n_empty = _with_predictions(chunk, categorizer, text_columns, args, levels)
            empty += n_empty
            with atomic_path(os.path.join(parts, f"chunk-{index:09d}.parquet")) as tmp:
                out.to_parquet(tmp, index=False)
            progress.update(len(chunk))
        empty = processes.total(empty)
        processes.barrier()
        if processes.is_main:
            with atomic_table_writer(args.output_file) as writer:
                for index in range(chunk_count):
                    path = os.path.join(parts, f"chunk-{index:09d}.parquet")
                    if not os.path.isfile(path):
                        raise ProdcatError(f"{path}: a part file is missing; a process failed, run again")
                    writer.write(pd.read_parquet(path))
                if writer.rows == 0:
                    writer.write(_empty_output(reader, added))
    finally:
        if processes.is_main:
            shutil.rmtree(parts, ignore_errors=True)
    processes.barrier()
    return empty


def main(argv: Sequence[str]) -> int:
    """Entry point of ``python predict.py`` / ``prodcat predict``; returns the exit code."""
    args = parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars; prediction has its own
    if args.input_file:
        return predict_file(args)
    return predict_texts(args)

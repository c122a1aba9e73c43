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
import math
import os
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer, set_seed

from prodcat.core.hierarchy import level_membership, max_depth
from prodcat.core.io import write_json
from prodcat.data import tables as data_mod
from prodcat.data.audit import audit_for_training
from prodcat.evaluation.calibration import TEMPERATURE_KEY
from prodcat.evaluation.metrics.taxonomy_metrics import taxonomy_scores
from prodcat.hub.push import finish_training_push, take_push_request
from prodcat.inference.batching import predict_logits
from prodcat.modeling.loading import classifier_layer, fit_head, head_features, head_parameter_names, load_for_training, resolve_model_path
from prodcat.training.config import DataArguments, ModelArguments, ProdcatTrainingArguments, check_processes_per_gpu, check_split_arguments
from prodcat.training.interrupt import (
    GracefulInterrupt,
    check_checkpoint_matches,
    find_last_checkpoint,
    resolve_resume_checkpoint,
    warn_if_stale_checkpoints,
)
from prodcat.training.postfit import apply_prior_correction, calibrate_model_dir, ngram_step, tune_prior_correction, write_test_report
from prodcat.training.refit import HoldoutRun, holdout_dir, holdout_finished

logger = logging.getLogger(__name__)

# Set once here, not around each call in the training step: "index_reduce() is in beta" is printed once
# per process by torch and tells a prodcat user nothing they can act on.
warnings.filterwarnings("ignore", message=r"index_reduce\(\) is in beta", category=UserWarning)


def class_weight_vector(counts: np.ndarray, mode: str) -> torch.Tensor | None:
    """Per-class loss weights. ``balanced``: w_c = n / (k * n_c); ``sqrt``: w_c = sqrt(balanced_c), renormalised to mean 1."""
    if mode == "none":
        return None
    counts = np.maximum(counts.astype(np.float64), 1.0)
    weights = counts.sum() / (len(counts) * counts)
    if mode == "sqrt":
        weights = np.sqrt(weights)
    weights = weights / weights.mean()
    return torch.tensor(weights, dtype=torch.float32)


class TaxonomyLoss:
    """Cross-entropy on the leaf plus, optionally, on every parent level.

    loss = CE_w,eps(leaf) + lambda * sum_{k < depth} NLL(log sum_{leaf in node} p_leaf, node_k(y))

    where CE_w,eps is cross-entropy with class weights w and label smoothing eps. The parent terms
    reward putting probability mass under the right branch even when the leaf is wrong; the saved
    model is unchanged (a plain sequence classifier). Rows labelled -100 (unseen categories) are ignored.
    """

    def __init__(
        self,
        label_names: list[str],
        class_weights: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        hierarchy_weight: float = 0.0,
    ) -> None:
        self.class_weights = class_weights
        self.label_smoothing = label_smoothing
        self.hierarchy_weight = hierarchy_weight
        self.level_index: list[torch.Tensor] = []
        if hierarchy_weight > 0:
            for level in range(1, max_depth(label_names)):
                nodes, index = level_membership(label_names, level)
                if 1 < len(nodes) < len(label_names):
                    self.level_index.append(torch.as_tensor(index))

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        logits = logits.float()
        valid = labels >= 0  # negative ids: categories unseen in training (evaluation only)
        weight = self.class_weights.to(logits.device) if self.class_weights is not None else None
        per_item = F.cross_entropy(
            logits[valid], labels[valid], weight=weight, label_smoothing=self.label_smoothing, reduction="none"
        )
        # Sum and divide by the item count (not by summed class weights, as F.cross_entropy's weighted
        # mean would): the scale then stays exact under gradient accumulation.
        total = per_item.sum()
        if self.level_index and valid.any():
            log_probs = logits[valid].log_softmax(-1)
            leaf = labels[valid]
            for index in self.level_index:
                index = index.to(logits.device)
                n_nodes = int(index.max()) + 1
                node_log_probs = torch.full((log_probs.shape[0], n_nodes), -math.inf, device=logits.device)
                node_log_probs = node_log_probs.index_reduce(1, index, log_probs, "amax", include_self=True)
                # log-sum-exp per node, computed stably around the per-node max
                shifted = (log_probs - node_log_probs[:, index]).exp()
                sums = torch.zeros_like(node_log_probs).index_add(1, index, shifted)
                node_log_probs = node_log_probs + sums.log()
                total = total + self.hierarchy_weight * F.nll_loss(node_log_probs, index[leaf], reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else valid.sum().clamp(min=1)
        if isinstance(count, torch.Tensor):
            count = count.to(total.device)
        return total / count


#: Bounds and scale of the automatic epoch count (see auto_num_epochs).
AUTO_EPOCHS_MIN, AUTO_EPOCHS_MAX, AUTO_EPOCHS_SCALE = 3, 10, 60.0


def auto_num_epochs(train_rows: int, num_labels: int) -> int:
    """Epochs chosen from the data: E = clamp(round(60 / sqrt(n / k)), 3, 10).

    n / k is the mean number of training examples per category. A catalogue with hundreds of
    categories and a few dozen examples each (bigbasket-27k: 32 per category -> 10 epochs) needs many
    passes before the rare categories are learnt; one with thousands per category (pricerunner-35k:
    2,200 -> 3 epochs) converges in a few, and more only costs time.

    Example:
        >>> auto_num_epochs(16956, 534), auto_num_epochs(22400, 10)
        (10, 3)
    """
    per_class = max(train_rows / max(num_labels, 1), 1.0)
    return int(min(AUTO_EPOCHS_MAX, max(AUTO_EPOCHS_MIN, round(AUTO_EPOCHS_SCALE / math.sqrt(per_class)))))


class ProdcatTrainer(Trainer):
    """``Trainer`` with a separate (usually higher) learning rate for the classification head."""

    def __init__(self, *args, head_learning_rate: float | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.head_learning_rate = head_learning_rate

    def create_optimizer(self, model=None):
        if self.optimizer is not None or self.head_learning_rate is None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        head = head_parameter_names(opt_model)
        groups: dict[tuple[bool, bool], list] = {}
        for name, param in opt_model.named_parameters():
            if param.requires_grad:
                groups.setdefault((name in head, name in decay), []).append(param)
        param_groups = [
            {
                "params": params,
                "weight_decay": self.args.weight_decay if is_decay else 0.0,
                "lr": self.head_learning_rate if is_head else self.args.learning_rate,
            }
            for (is_head, is_decay), params in sorted(groups.items())
        ]
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, opt_model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(param_groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer


class MetricsForEval:
    """``compute_metrics`` that scores category paths with the taxonomy metrics.

    Label ids are decoded back to paths, unseen categories included (see ``data.UNSEEN_BASE``), so
    those rows count as errors at the leaf but can still be right at a parent level.
    """

    def __init__(self, label_names: list[str], unseen_names: list[str]) -> None:
        self.label_names = label_names
        self.unseen_names = unseen_names

    def __call__(self, eval_prediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        predicted = [self.label_names[i] for i in np.asarray(logits).argmax(-1)]
        references = [
            data_mod.decode_label_id(int(i), self.label_names, self.unseen_names) for i in np.asarray(eval_prediction.label_ids)
        ]
        return taxonomy_scores(predicted, references)


def _load_tables(data_args: DataArguments):
    columns = data_args.text_column_list
    load = lambda path: data_mod.load_table(path, columns, data_args.label_column, data_args.label_separator)  # noqa: E731
    train = load(data_args.train_file)
    if data_args.max_train_samples:
        n = data_args.max_train_samples
        train = data_mod.ProductTable(train.path, train.texts[:n], train.labels[:n], train.source_rows[:n])
    validation = load(data_args.validation_file) if data_args.validation_file else None
    test = load(data_args.test_file) if data_args.test_file else None
    return train, validation, test


def selection_metric(training_args: ProdcatTrainingArguments) -> str:
    """The validation metric that picks the best checkpoint and tunes the prior correction, without the
    ``eval_`` prefix Trainer adds (``"macro_f1"`` unless ``--metric_for_best_model`` says otherwise)."""
    return (training_args.metric_for_best_model or "macro_f1").removeprefix("eval_")


def warm_start_head(model, train_dataset, collator, class_weights, seed: int) -> float:
    """Fit the final classifier layer on frozen features and copy it into the model; returns seconds."""
    start = time.time()
    features = head_features(model, train_dataset, collator)
    labels = torch.as_tensor(np.asarray(train_dataset[data_mod.LABEL][:]))
    weight, bias = fit_head(features, labels, model.config.num_labels, class_weights=class_weights, seed=seed)
    layer = classifier_layer(model)
    with torch.no_grad():
        layer.weight.copy_(weight.to(layer.weight.dtype))
        layer.bias.copy_(bias.to(layer.bias.dtype))
    elapsed = time.time() - start
    logger.info("Warm-started the classifier head on frozen features in %.1fs", elapsed)
    return elapsed


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


def train_and_save(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: ProdcatTrainingArguments,
    holdout: HoldoutRun | None = None,
) -> dict[str, dict[str, float]]:
    """One training run: data, warm start, ``Trainer``, prior correction, calibration, report, card.

    ``holdout``: the finished first run of ``--refit_on_all_rows``, whose fitted settings and validation
    scores this (all-rows, unvalidated) run takes over.
    """
    set_seed(training_args.seed)
    check_processes_per_gpu(training_args.use_cpu)
    # Before anything slow: "latest" without a checkpoint fails at once.
    resume_checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    warn_if_stale_checkpoints(training_args.output_dir, resuming=resume_checkpoint is not None)
    # Before the Trainer exists: turns the Trainer's own push off (no checkpoint pushes), removes the
    # token from the arguments the Trainer pickles, and fails fast on a bad repo id or missing token.
    push_request = take_push_request(training_args)
    audit_report = None
    if data_args.audit:

        # Every rank audits (deterministic, cheap) so a strict failure stops all ranks alike.
        # audit.json is written with the other outputs at the end: a run that fails leaves no output.
        audit_report = audit_for_training(
            data_args.train_file, data_args.text_column_list, data_args.label_column, data_args.label_separator,
            validation_path=data_args.validation_file, test_path=data_args.test_file,
            strict=data_args.strict_audit,
        )
    train_table, validation_table, test_table = _load_tables(data_args)
    splits = data_mod.build_splits(
        train_table,
        validation_table,
        test_table,
        data_args.validation_split,
        training_args.seed,
        data_args.validation_min_category_rows,
    )
    logger.info(
        "Data: %d train / %d validation / %d test rows, %d categories, %d levels",
        len(splits.train),
        len(splits.validation) if splits.validation is not None else 0,
        len(splits.test) if splits.test is not None else 0,
        len(splits.label_names),
        max_depth(splits.label_names),
    )
    if resume_checkpoint:
        check_checkpoint_matches(resume_checkpoint, splits.label_names, model_args.allow_pickled_weights)
    model_path = resolve_model_path(model_args.model_name_or_path)
    model, tokenizer = load_for_training(
        model_path, splits.label_names, model_args.trust_remote_code, model_args.allow_pickled_weights
    )
    if model_args.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    with training_args.main_process_first(desc="tokenizing"):
        # The name examples reach the transformer only: splits.train stays the user's rows (the n-gram
        # ensemble, the summary's row count and the epoch rule read those).
        model_train = data_mod.add_category_name_examples(splits.train) if data_args.category_name_examples else splits.train
        train_ds = data_mod.tokenize(model_train, tokenizer, data_args.max_seq_length)
        eval_ds = data_mod.tokenize(splits.validation, tokenizer, data_args.max_seq_length) if splits.validation is not None else None
        test_ds = data_mod.tokenize(splits.test, tokenizer, data_args.max_seq_length) if splits.test is not None else None
    collator = DataCollatorWithPadding(tokenizer)
    label_counts = data_mod.label_counts(train_ds)
    class_weights = class_weight_vector(label_counts, model_args.class_weights)
    warm_start_seconds = 0.0
    if model_args.head_init == "fit" and resume_checkpoint is None:  # resuming loads the trained head
        warm_start_seconds = warm_start_head(model, train_ds, collator, class_weights, training_args.seed)

    if training_args.num_train_epochs <= 0:
        training_args.num_train_epochs = auto_num_epochs(len(splits.train), len(splits.label_names))
        logger.info(
            "Training for %d epochs (chosen from %d rows over %d categories)",
            training_args.num_train_epochs,
            len(splits.train),
            len(splits.label_names),
        )
    if eval_ds is None and training_args.eval_strategy != "no":
        if holdout is None:
            logger.warning(
                "No validation data (--validation_split 0 and no --validation_file): evaluation and best-model selection are off"
            )
        training_args.eval_strategy = training_args.eval_strategy.__class__("no")
        training_args.load_best_model_at_end = False
    metrics = MetricsForEval(splits.label_names, splits.unseen_names)
    loss = TaxonomyLoss(
        splits.label_names,
        class_weights=class_weights,
        label_smoothing=training_args.label_smoothing_factor,
        hierarchy_weight=model_args.hierarchy_loss_weight,
    )
    interrupt = GracefulInterrupt()  # Ctrl-C / SIGTERM: checkpoint at the next step end, exit 130 / 143
    callbacks = [interrupt]
    if model_args.early_stopping_patience and eval_ds is not None:
        if not training_args.load_best_model_at_end:
            # Stopping on a plateau is only half of early stopping: the epoch it stops after is past the best one.
            logger.info("--early_stopping_patience: keeping the best epoch by validation %s", selection_metric(training_args))
            training_args.load_best_model_at_end = True
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=model_args.early_stopping_patience))
    trainer = ProdcatTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds.remove_columns([data_mod.TEXT, data_mod.LABEL_PATH]),
        eval_dataset=eval_ds.remove_columns([data_mod.TEXT, data_mod.LABEL_PATH]) if eval_ds is not None else None,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=metrics,
        compute_loss_func=loss,
        callbacks=callbacks,
        head_learning_rate=model_args.head_learning_rate,
    )
    start = time.time()
    with interrupt.handling_signals(training_args.output_dir):
        train_output = trainer.train(resume_from_checkpoint=resume_checkpoint)
    train_metrics = dict(train_output.metrics)
    train_metrics["train_wall_seconds"] = time.time() - start + warm_start_seconds
    train_metrics["head_warm_start_seconds"] = warm_start_seconds
    train_metrics["train_samples"] = len(train_ds)
    results: dict[str, dict[str, float]] = {"train": train_metrics}
    if model_args.prior_correction == "auto" and eval_ds is not None:
        # Tuned on validation with the kept checkpoint loaded; every process computes the same value.
        prediction = trainer.predict(eval_ds.remove_columns([data_mod.TEXT, data_mod.LABEL_PATH]), metric_key_prefix="prior")
        references = [data_mod.decode_label_id(int(i), splits.label_names, splits.unseen_names) for i in prediction.label_ids]
        metric = selection_metric(training_args)
        tau, scores = tune_prior_correction(prediction.predictions, references, splits.label_names, label_counts, metric)
        logger.info("Prior correction: validation %s by tau %s; chose tau=%s", metric, {t: round(v, 4) for t, v in scores.items()}, tau)
        apply_prior_correction(trainer.model, label_counts, tau)
        train_metrics["prior_correction_tau"] = tau
    elif model_args.prior_correction == "auto" and holdout is not None:
        apply_prior_correction(trainer.model, label_counts, holdout.prior_tau)
        train_metrics["prior_correction_tau"] = holdout.prior_tau
    if model_args.calibrate and holdout is not None and holdout.calibration:

        # Into config.json with the model, like the prior correction (the report below uses it too).
        setattr(trainer.model.config, TEMPERATURE_KEY, holdout.temperature)
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        # save_model also pickles TrainingArguments; the final model folder holds no pickles (the run's
        # settings are in training_summary.json; checkpoints keep their own copy for resuming).
        args_pickle = os.path.join(training_args.output_dir, "training_args.bin")
        if os.path.exists(args_pickle):
            os.remove(args_pickle)
        trainer.save_metrics("train", train_metrics)
    if eval_ds is not None:
        results["eval"] = trainer.evaluate()
        trainer.save_metrics("eval", results["eval"])
    elif holdout is not None and holdout.validation_results:
        results["eval"] = dict(holdout.validation_results)
        trainer.save_metrics("eval", results["eval"])
    if test_ds is not None:
        results["test"] = trainer.evaluate(test_ds.remove_columns([data_mod.TEXT, data_mod.LABEL_PATH]), metric_key_prefix="test")
        trainer.save_metrics("test", results["test"])
    if trainer.is_world_process_zero():
        if audit_report is not None:
            write_json(os.path.join(training_args.output_dir, "audit.json"), audit_report.to_dict())

        # Each split's logits are computed once and shared by calibration, the n-gram ensemble and the
        # report (the temperature and the ensemble change neither the model nor its logits).
        def split_logits(texts) -> np.ndarray:
            return predict_logits(
                trainer.model,
                tokenizer,
                list(texts),
                batch_size=training_args.per_device_eval_batch_size,
                max_length=data_args.max_seq_length,
            )

        needs_validation = splits.validation is not None and (model_args.calibrate or model_args.ngram_ensemble)
        validation_logits = split_logits(splits.validation[data_mod.TEXT][:]) if needs_validation else None
        test_logits = split_logits(test_table.texts) if test_table is not None and len(test_table.texts) else None
        if model_args.calibrate and splits.validation is not None:

            # After save_model (it rewrites config.json) and before the report (which then uses T).
            results["calibration"] = calibrate_model_dir(
                training_args.output_dir,
                splits.validation[data_mod.TEXT][:],
                splits.validation[data_mod.LABEL_PATH][:],
                batch_size=training_args.per_device_eval_batch_size,
                max_length=data_args.max_seq_length,
                model=trainer.model,
                tokenizer=tokenizer,
                logits=validation_logits,
            )
        elif model_args.calibrate and holdout is not None and holdout.calibration:
            results["calibration"] = holdout.calibration
        if "calibration" in results:
            write_json(os.path.join(training_args.output_dir, "calibration.json"), results["calibration"])
        ngram = ngram_step(
            model_args.ngram_ensemble, training_args, trainer.model, tokenizer, splits, test_table, holdout,
            data_args.max_seq_length, validation_logits, test_logits,
        )
        if ngram is not None:
            results["ngram_ensemble"] = ngram
        if test_table is not None and test_logits is not None:
            report = write_test_report(
                training_args.output_dir, trainer.model, test_table, test_logits,
                data_args.report_dir or os.path.join(training_args.output_dir, "report"),
            )
            results["report"] = {k: v for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        summary = training_summary(model_args, data_args, training_args, model_path, splits, results)
        if holdout is not None:
            summary.update(holdout.summary_fields())
        write_json(os.path.join(training_args.output_dir, SUMMARY_FILE), summary)
        url = finish_training_push(
            training_args.output_dir, push_request, license=model_args.license,
            dataset_id=data_args.dataset_id, dataset_name=data_args.dataset_name, include_ngram=model_args.ngram_ensemble,
        )
        if url:
            logger.info("Pushed to %s", url)
    return results


def predictor_scores(results: dict) -> dict[str, dict[str, float]]:
    """Validation and test accuracy / macro-F1 of each prediction path (``transformer``, ``ensemble``).

    Example:
        >>> predictor_scores({"test": {"test_accuracy": 0.7, "test_macro_f1": 0.5}})
        {'transformer': {'test_accuracy': 0.7, 'test_macro_f1': 0.5}}
    """
    transformer = {
        f"{split}_{metric}": float(results[key][f"{prefix}_{metric}"])
        for split, key, prefix in (("validation", "eval", "eval"), ("test", "test", "test"))
        for metric in ("accuracy", "macro_f1")
        if f"{prefix}_{metric}" in (results.get(key) or {})
    }
    paths = {"transformer": transformer}
    ngram = results.get("ngram_ensemble") or {}
    if ngram:
        names = {"validation_accuracy": "validation_ensemble_accuracy", "validation_macro_f1": "validation_ensemble_macro_f1",
                 "test_accuracy": "test_accuracy", "test_macro_f1": "test_macro_f1"}
        paths["ensemble"] = {name: float(ngram[key]) for name, key in names.items() if key in ngram}
    return paths


#: File in the output directory describing the run (read by the model card and ``prodcat push``).
SUMMARY_FILE = "training_summary.json"


def training_summary(model_args, data_args, training_args, model_path, splits, results) -> dict:
    """What a model card needs to know about a run, without any token or absolute home paths."""
    counts = data_mod.label_counts(splits.train)  # the user's rows, without the category-name examples
    base_model = model_args.model_name_or_path or "sentence-transformers/all-MiniLM-L6-v2"
    validation_texts = splits.validation[data_mod.TEXT][:] if splits.validation is not None else []
    return {
        "base_model": base_model,
        "base_model_is_embedded_default": not model_args.model_name_or_path,
        "train_file": os.path.basename(data_args.train_file),
        "validation_file": os.path.basename(data_args.validation_file) if data_args.validation_file else None,
        "test_file": os.path.basename(data_args.test_file) if data_args.test_file else None,
        "text_columns": data_args.text_column_list,
        "label_column": data_args.label_column,
        "validation_split": data_args.validation_split if not data_args.validation_file else None,
        "num_train": len(splits.train),
        "num_validation": len(splits.validation) if splits.validation is not None else 0,
        "num_test": len(splits.test) if splits.test is not None else 0,
        "train_only_classes": splits.train_only_classes,
        "validation_min_category_rows": splits.validation_min_category_rows,
        "unseen_rows": splits.unseen,
        "label_counts": {name: int(c) for name, c in zip(splits.label_names, counts)},
        "widget_examples": list(validation_texts[:5]),
        "unseen_categories": splits.unseen_names,
        "dataset_name": data_args.dataset_name,
        "calibration": results.get("calibration"),
        # What Categorizer / predict.py use by default; pipeline() always gives the transformer alone.
        "default_predictor": "ensemble" if results.get("ngram_ensemble") else "transformer",
        "predictors": predictor_scores(results),
        "hyperparameters": {
            "learning_rate": training_args.learning_rate,
            "head_learning_rate": model_args.head_learning_rate,
            "head_init": model_args.head_init,
            "freeze_word_embeddings": model_args.freeze_word_embeddings,
            "num_train_epochs": training_args.num_train_epochs,
            "per_device_train_batch_size": training_args.per_device_train_batch_size,
            "max_seq_length": data_args.max_seq_length,
            "category_name_examples": data_args.category_name_examples,
            "warmup_steps": training_args.warmup_steps,
            "weight_decay": training_args.weight_decay,
            "label_smoothing_factor": training_args.label_smoothing_factor,
            "class_weights": model_args.class_weights,
            "hierarchy_loss_weight": model_args.hierarchy_loss_weight,
            "prior_correction": model_args.prior_correction,
            "epoch_kept": (
                f"best by validation {selection_metric(training_args)}"
                if training_args.load_best_model_at_end
                else "last"
            ),
            "seed": training_args.seed,
            "mixed_precision": training_args.mixed_precision,  # "bf16" by default on CPUs with AMX; weights stay fp32
        },
        "results": {split: {k: v for k, v in metrics.items() if isinstance(v, (int, float))} for split, metrics in results.items()},
    }

"""The Trainer prodcat trains with: optimizer groups, metrics at evaluation, the epoch rule and the head warm start."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from transformers import Trainer

from prodcat.data import splits as data_mod
from prodcat.evaluation.metrics.taxonomy_metrics import taxonomy_scores
from prodcat.modeling.head import classifier_layer, fit_head, head_features, head_parameter_names
from prodcat.training.config import ProdcatTrainingArguments

logger = logging.getLogger(__name__)

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

"""The training loss: cross-entropy over leaves plus a loss on each parent level, with optional class weights."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from prodcat.core.hierarchy import level_membership, max_depth


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

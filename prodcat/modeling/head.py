"""The classification head: its parameters, the frozen features it is fitted on, and its warm start."""

from __future__ import annotations

import numpy as np
import torch

from prodcat.core.errors import ProdcatError


def classifier_layer(model) -> torch.nn.Linear | None:
    """The final linear layer mapping features to label logits (``classifier`` or ``score``)."""
    for name in ("classifier", "score"):
        layer = getattr(model, name, None)
        if isinstance(layer, torch.nn.Linear):
            return layer
        # RoBERTa-style heads: classifier.out_proj
        if layer is not None and isinstance(getattr(layer, "out_proj", None), torch.nn.Linear):
            return layer.out_proj
    return None


def head_parameter_names(model) -> set[str]:
    """Names of the parameters of the classification head (final layer and pooler / pre-classifier)."""
    head_prefixes = ("classifier.", "score.", "pre_classifier.")
    names = {n for n, _ in model.named_parameters() if n.startswith(head_prefixes) or ".pooler." in f".{n}"}
    return names


@torch.no_grad()  # not inference_mode: the features feed an autograd fit afterwards
def head_features(model, dataset, collator, batch_size: int = 128) -> torch.Tensor:
    """Inputs of the final classifier layer for every row of a tokenised dataset (model frozen, eval mode).

    Captured with a forward hook so it works for any architecture whose head ends in a Linear.
    """
    layer = classifier_layer(model)
    if layer is None:
        raise ProdcatError("this architecture has no linear classification head to warm-start; pass --head_init random")
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach().float()))
    was_training = model.training
    model.eval()
    columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in dataset.column_names]
    order = np.argsort(dataset["length"][:]) if "length" in dataset.column_names else np.arange(len(dataset))
    try:
        from tqdm.auto import tqdm

        for start in tqdm(range(0, len(order), batch_size), desc="Head warm start: features", leave=False):
            rows = dataset.select(order[start : start + batch_size]).select_columns(columns)
            batch = collator([rows[i] for i in range(len(rows))])
            model(**{k: v.to(model.device) for k, v in batch.items()})
    finally:
        handle.remove()
        model.train(was_training)
    features = torch.cat(captured)
    restored = torch.empty_like(features)
    restored[torch.as_tensor(order)] = features
    return restored


def fit_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_labels: int,
    class_weights: torch.Tensor | None = None,
    epochs: int = 60,
    weight_decay: float = 1e-4,
    seed: int = 42,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on frozen features (full-batch L-BFGS); returns (weight, bias).

    Used to warm-start the classifier so fine-tuning starts from a head that already separates the
    categories instead of a random one, which on hundreds of classes badly underfits in a few epochs.
    """
    generator = torch.Generator().manual_seed(seed)
    weight = torch.zeros(num_labels, features.shape[1])
    bias = torch.zeros(num_labels)
    torch.nn.init.normal_(weight, std=0.01, generator=generator)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=epochs, history_size=20, line_search_fn="strong_wolfe")
    x = features.float()
    y = labels.long()

    def closure():
        optimizer.zero_grad()
        logits = x @ weight.T + bias
        loss = torch.nn.functional.cross_entropy(logits, y, weight=class_weights)
        loss = loss + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()

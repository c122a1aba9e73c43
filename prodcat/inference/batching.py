"""Batched logits for many texts: sort by length, batch, ``torch.inference_mode``.

The single place where prodcat turns texts into logits with a torch model; the predictor,
evaluation and calibration all call it. The tokenising and padding half (``padded_batches``) is
shared with the ONNX Runtime backend, so both backends see exactly the same inputs.

Texts are tokenised once, sorted by token count and cut into batches of similar length, so a
batch of short titles is not padded to the length of one long description; padding is done with
NumPy rather than ``tokenizer.pad`` (which is a Python loop per row and costs as much as the model
on short titles).

Example:
    >>> logits = predict_logits(model, tokenizer, ["Lenovo laptop 16GB", "Cotton T-shirt"], batch_size=64)
    >>> logits.shape
    (2, 534)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

#: Model inputs prodcat feeds, in this order, when the tokenizer produces them.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (longest first), so padding is minimal."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def padded_batches(
    tokenizer,
    texts: Sequence[str],
    batch_size: int,
    max_length: int,
    input_names: Sequence[str] = MODEL_INPUTS,
) -> tuple[list[np.ndarray], Iterator[dict[str, np.ndarray]]]:
    """Tokenise ``texts`` once and return ``(batches, features)``.

    ``batches`` are the row indices of each batch (length-sorted); ``features`` yields, batch by
    batch, int64 arrays ``[batch, longest]`` for each name in ``input_names`` that the tokenizer
    produces, padded on the tokenizer's ``padding_side``.
    """
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    keys = [k for k in input_names if k in encoded]
    columns = {k: encoded[k] for k in keys}
    lengths = np.fromiter((len(ids) for ids in columns["input_ids"]), dtype=np.int64, count=len(texts))
    batches = length_sorted_batches(lengths, batch_size)
    pad_values = {"input_ids": tokenizer.pad_token_id or 0, "attention_mask": 0, "token_type_ids": tokenizer.pad_token_type_id}
    left = getattr(tokenizer, "padding_side", "right") == "left"

    def features() -> Iterator[dict[str, np.ndarray]]:
        for batch in batches:
            longest = int(lengths[batch].max())
            out = {}
            for key in keys:
                array = np.full((len(batch), longest), pad_values.get(key, 0), dtype=np.int64)
                rows = columns[key]
                for r, i in enumerate(batch):
                    ids = rows[i]
                    if left:
                        array[r, longest - len(ids) :] = ids
                    else:
                        array[r, : len(ids)] = ids
                out[key] = array
            yield out

    return batches, features()


def run_batches(
    forward: Callable[[dict[str, np.ndarray]], np.ndarray],
    tokenizer,
    texts: Sequence[str],
    num_labels: int,
    batch_size: int = 64,
    max_length: int = 64,
    progress: bool = False,
    input_names: Sequence[str] = MODEL_INPUTS,
) -> np.ndarray:
    """Logits ``[len(texts), num_labels]`` (float32, input order) from any ``forward(features) -> logits``."""
    out = np.zeros((len(texts), num_labels), dtype=np.float32)
    if len(texts) == 0:
        return out
    batches, features = padded_batches(tokenizer, texts, batch_size, max_length, input_names)
    if progress:
        from tqdm.auto import tqdm

        features = tqdm(features, total=len(batches), desc="Predicting", unit="batch")
    for batch, feature in zip(batches, features):
        out[batch] = forward(feature)
    return out


def torch_forward(model) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """``features -> logits`` for a torch sequence classifier (eval mode, ``inference_mode``)."""
    model.eval()
    device = model.device

    def forward(features: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            inputs = {k: torch.from_numpy(v).to(device) for k, v in features.items()}
            return model(**inputs).logits.float().cpu().numpy()

    return forward


def predict_logits(
    model,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """Raw logits (float32, ``[len(texts), num_labels]``) in the order of ``texts``."""
    return run_batches(
        torch_forward(model), tokenizer, texts, model.config.num_labels, batch_size, max_length, progress
    )

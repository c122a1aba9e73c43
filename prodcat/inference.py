"""Batched logits for many texts: sort by length, batch, ``torch.inference_mode``.

The single place where prodcat turns texts into logits with a torch model; the predictor,
evaluation and calibration all call it.

Example:
    >>> logits = predict_logits(model, tokenizer, ["Lenovo laptop 16GB", "Cotton T-shirt"], batch_size=64)
    >>> logits.shape
    (2, 534)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (longest first), so padding is minimal."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def predict_logits(
    model,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """Raw logits (float32, ``[len(texts), num_labels]``) in the order of ``texts``."""
    if len(texts) == 0:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    batches = length_sorted_batches(lengths, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="Predicting", unit="batch")
    model.eval()
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    with torch.inference_mode():
        for batch in batches:
            features = tokenizer.pad({k: [encoded[k][i] for i in batch] for k in keys}, return_tensors="pt")
            logits = model(**{k: v.to(model.device) for k, v in features.items()}).logits
            out[batch] = logits.float().cpu().numpy()
    return out

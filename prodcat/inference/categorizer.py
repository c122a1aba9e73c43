"""Predicting categories: ``Categorizer.from_pretrained(...).predict(texts)`` with typed results.

Works with any sequence-classification model whose ``config.id2label`` holds category paths (a
prodcat model, or one trained elsewhere with ``/``, ``|`` or ``>`` between levels), on the torch
or the ONNX Runtime backend.

Example:
    >>> categorizer = Categorizer.from_pretrained("outputs/model")
    >>> [p] = categorizer.predict(["Sony WH-1000XM4 wireless headphones"], top_k=3, threshold=0.8)
    >>> p.category, round(p.score, 2)
    ('Electronics > Audio > Headphones', 0.55)
    >>> [(level.category, round(level.score, 2)) for level in p.levels]
    [('Electronics', 0.99), ('Electronics > Audio', 0.93), ('Electronics > Audio > Headphones', 0.55)]
    >>> p.backoff.category, p.needs_review
    ('Electronics > Audio', False)

Probabilities are ``softmax(logits / T)`` with ``T = config.prodcat_temperature`` (1.0 when the
model was not calibrated). The probability of a parent category is the sum of the probabilities of
the leaves below it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from prodcat.core.artifacts import TrainingSummary, read_summary
from prodcat.core.errors import ProdcatError
from prodcat.core.hierarchy import CANONICAL_SEPARATOR, level_membership, max_depth, path_depth, split_path
from prodcat.evaluation.calibration import model_temperature, probabilities
from prodcat.inference import onnx_backend
from prodcat.inference.batching import MODEL_INPUTS, run_batches, torch_forward
from prodcat.inference.ngram import NgramEnsemble, has_ensemble
from prodcat.modeling.loading import (
    category_labels,
    check_classifier,
    check_weights_are_safe,
    default_device,
    load_model_config,
    load_tokenizer,
    load_torch_classifier,
    resolve_model_dir,
)

logger = logging.getLogger(__name__)

#: Slack when comparing summed probabilities with a threshold (0.5 + 0.3 must reach 0.8).
_THRESHOLD_SLACK = 1e-9
#: Token budget when neither the caller nor training_summary.json says (product titles are short).
DEFAULT_MAX_SEQ_LENGTH = 128


# --------------------------------------------------------------------------------------------
# Typed results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CategoryScore:
    """A category path and its probability."""

    category: str
    score: float


@dataclass(frozen=True)
class Backoff:
    """Result of the hierarchy back-off at ``threshold`` (see :func:`hierarchical_backoff`).

    ``category`` is the deepest category whose probability reaches the threshold, ``score`` its
    probability. When not even a top-level category reaches it, ``category`` is ``""``,
    ``needs_review`` is True and ``score`` is the probability of the best top-level category (how
    far it fell short).
    """

    category: str
    score: float
    threshold: float
    needs_review: bool


@dataclass(frozen=True)
class Prediction:
    """Everything prodcat predicts for one text.

    - ``category`` / ``score``: the most probable leaf path and its probability.
    - ``top_k``: the ``top_k`` most probable leaves, best first (``top_k[0]`` is the prediction).
    - ``levels``: the ancestors of ``category``, level 1 first, each with its own probability
      (the sum of its leaves), so ``levels[-1]`` is the leaf itself.
    - ``backoff``: the hierarchy back-off when a threshold was given, else None.

    A text that is empty after stripping gets an empty prediction: ``category == ""``,
    ``score == 0.0``, no alternatives or levels, ``backoff`` None (see ``is_empty``).
    """

    text: str
    category: str
    score: float
    top_k: tuple[CategoryScore, ...]
    levels: tuple[CategoryScore, ...]
    backoff: Backoff | None = None

    @property
    def needs_review(self) -> bool:
        """True when a threshold was given and not even a top-level category reached it."""
        return self.backoff is not None and self.backoff.needs_review

    @property
    def is_empty(self) -> bool:
        """True for an empty text (no prediction was made)."""
        return not self.category

    def to_dict(self) -> dict:
        """Plain ``dict`` (JSON-serialisable) of this prediction."""
        return asdict(self)


# --------------------------------------------------------------------------------------------
# The hierarchy on arrays: per-level probabilities and back-off (pure functions)
# --------------------------------------------------------------------------------------------


class Taxonomy:
    """Leaf labels and, for each level, which node every leaf belongs to.

    Example:
        >>> tax = Taxonomy(["A > x", "A > y", "B > z"])
        >>> tax.level_probabilities(np.array([[0.5, 0.3, 0.2]]), 1)
        array([[0.8, 0.2]])
    """

    def __init__(self, labels: Sequence[str]):
        self.labels = list(labels)
        self.depth = max_depth(self.labels)
        self.leaf_depth = np.array([path_depth(label) for label in self.labels], dtype=np.int64)
        #: Per level (1-based, index 0 = level 1): node names, their depths and the leaf -> node index.
        self.nodes: list[list[str]] = []
        self.node_depth: list[np.ndarray] = []
        self.leaf_to_node: list[np.ndarray] = []
        self._membership: list[np.ndarray] = []
        for level in range(1, self.depth + 1):
            nodes, index = level_membership(self.labels, level)
            membership = np.zeros((len(self.labels), len(nodes)), dtype=np.float64)
            membership[np.arange(len(self.labels)), index] = 1.0
            self.nodes.append(nodes)
            self.node_depth.append(np.array([path_depth(n) for n in nodes], dtype=np.int64))
            self.leaf_to_node.append(index)
            self._membership.append(membership)

    def level_probabilities(self, probabilities: np.ndarray, level: int) -> np.ndarray:
        """``[n, nodes at level]``: each node's probability, the sum of its leaves' (float64).

        A leaf shallower than ``level`` stands for itself at deeper levels. Capped at 1.0 (float32
        leaf probabilities can sum to a hair above it).
        """
        return np.minimum(np.asarray(probabilities, dtype=np.float64) @ self._membership[level - 1], 1.0)


def hierarchical_backoff(
    probabilities: np.ndarray, labels: Sequence[str] | Taxonomy, threshold: float
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Deepest category whose probability reaches ``threshold``, for each row of ``probabilities``.

    Rule: the probability of a category is the sum of the probabilities of the leaves under it, so
    it can only grow towards the root. Among all categories (leaves and their ancestors) whose
    probability is at least ``threshold``, return the deepest; when several at the same depth
    qualify (only possible with ``threshold <= 0.5``), the most probable. When no top-level
    category reaches the threshold, the row needs review: category ``""`` and, as its score, the
    probability of the best top-level category.

    Worked example, ``threshold = 0.8``, leaves and probabilities::

        Electronics > Audio > Headphones   0.50
        Electronics > Audio > Speakers     0.35
        Electronics > Cameras > Lenses     0.10
        Home > Kitchen > Kettles           0.05

    No leaf reaches 0.8; ``Electronics > Audio`` has 0.50 + 0.35 = 0.85 >= 0.8, so the answer is
    ``("Electronics > Audio", 0.85, needs_review=False)`` (``Electronics`` with 0.95 also qualifies
    but is shallower). With ``threshold = 0.97`` nothing qualifies, not even ``Electronics``
    (0.95), so the result is ``("", 0.95, needs_review=True)``.

    Args:
        probabilities: ``[n, len(labels)]`` leaf probabilities (rows sum to 1), or one row ``[len(labels)]``.
        labels: canonical leaf paths (column order of ``probabilities``), or a prebuilt Taxonomy.
        threshold: in ``(0, 1]``.

    Returns:
        ``(categories, scores, needs_review)``: a list of ``n`` paths, float64 ``[n]``, bool ``[n]``.
    """
    if not 0.0 < threshold <= 1.0:
        raise ProdcatError(f"threshold must be in (0, 1], got {threshold}")
    taxonomy = labels if isinstance(labels, Taxonomy) else Taxonomy(labels)
    probs = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
    n = probs.shape[0]
    categories = [""] * n
    scores = np.zeros(n, dtype=np.float64)
    decided = np.zeros(n, dtype=bool)
    for level in range(taxonomy.depth, 0, -1):
        node_probs = taxonomy.level_probabilities(probs, level)
        # Only nodes that really sit at this depth compete here; shallower leaves repeated at
        # deeper levels compete at their own depth.
        node_probs[:, taxonomy.node_depth[level - 1] != level] = -np.inf
        best = node_probs.argmax(axis=1)
        best_prob = node_probs[np.arange(n), best]
        chosen = ~decided & (best_prob >= threshold - _THRESHOLD_SLACK)
        for row in np.flatnonzero(chosen):
            categories[row] = taxonomy.nodes[level - 1][best[row]]
        scores[chosen] = best_prob[chosen]
        decided |= chosen
    needs_review = ~decided
    if needs_review.any():
        scores[needs_review] = taxonomy.level_probabilities(probs[needs_review], 1).max(axis=1)
    return categories, scores, needs_review


# --------------------------------------------------------------------------------------------
# Loading models: labels, local folder or Hub id
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Categorizer
# --------------------------------------------------------------------------------------------


class Categorizer:
    """Predicts category paths for product texts.

    Build one with :meth:`from_pretrained`; call :meth:`predict` (typed results) or
    :meth:`predict_proba` (the leaf probability matrix).

    Example:
        >>> categorizer = Categorizer.from_pretrained("outputs/model", backend="onnx", quantize=True)
        >>> categorizer.predict(["Cotton T-shirt"])[0].category
        'Clothing > Men > T-Shirts'
    """

    def __init__(
        self,
        labels: Sequence[str],
        tokenizer,
        forward,
        *,
        temperature: float = 1.0,
        max_length: int = DEFAULT_MAX_SEQ_LENGTH,
        input_names: Sequence[str] | None = None,
        backend: str = "torch",
        model_dir: str = "",
        source: str = "",
        ensemble=None,
    ):
        """Low-level constructor: ``forward(features: dict[str, np.ndarray]) -> logits``; prefer from_pretrained."""
        self.labels = list(labels)
        self.taxonomy = Taxonomy(self.labels)
        self.tokenizer = tokenizer
        self.forward = forward
        self.temperature = float(temperature)
        self.max_length = int(max_length)
        self.input_names = tuple(input_names or MODEL_INPUTS)
        self.backend = backend
        self.model_dir = model_dir
        self.source = source or model_dir
        #: The n-gram ensemble (prodcat.inference.ngram.NgramEnsemble) that predictions pool with the transformer, or None.
        self.ensemble = ensemble
        #: The training summary of a prodcat model (text_columns, max_seq_length ...); None for other models.
        self.training_summary: TrainingSummary | None = read_summary(model_dir) if model_dir else None

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str,
        backend: str = "torch",
        quantize: bool = False,
        device: str | None = None,
        *,
        max_seq_length: int | None = None,
        num_threads: int | None = None,
        label_separator: str | None = None,
        trust_remote_code: bool = False,
        onnx_cache_dir: str | None = None,
        recheck_margin: float | None = None,
        ensemble: bool | None = None,
    ) -> Categorizer:
        """Load a categoriser from a model folder or a Hub id.

        Args:
            path_or_hub_id: a folder written by ``prodcat train`` (or any sequence classifier whose
                ``id2label`` are category paths), or a Hub id available in the HF cache / online.
            backend: ``"torch"`` or ``"onnx"`` (exported once and cached, see prodcat.inference.onnx_backend).
            quantize: ONNX only: int8 dynamic quantization (faster on CPU, near-identical top-1).
            device: torch device (``"cpu"``, ``"cuda"``); default CUDA when available. The ONNX
                backend uses CUDA only when onnxruntime-gpu is installed and device is ``"cuda"``.
            max_seq_length: token budget per text; default the one used in training (or 128).
            num_threads: CPU threads; default follows the machine.
            label_separator: level separator in the model's labels; default detected.
            trust_remote_code: allow model code from the model folder / repository (off by default).
            onnx_cache_dir: where to cache ONNX files (default: ``DIR/onnx`` or the user cache).
            recheck_margin: int8 only: rows whose top-1/top-2 logit margin is below this are
                recomputed with the fp32 graph; default: the margin measured on the category names
                at quantization time (``onnx_backend.measure_recheck_margin``); 0 = pure int8.
            ensemble: pool the transformer with the n-gram model that training saves in ``ngram/``
                (prodcat.inference.ngram; more accurate on long-tailed catalogues, not what ``pipeline()`` returns).
                None (default): whenever the folder has one; True: require it; False: the transformer alone.
        """
        if backend not in ("torch", "onnx"):
            raise ProdcatError(f"unknown backend {backend!r}; use 'torch' or 'onnx'")
        if quantize and backend != "onnx":
            raise ProdcatError("quantize needs the ONNX backend: pass backend='onnx' (--backend onnx)")
        model_dir = _safe_model_dir(path_or_hub_id, include_onnx=backend == "onnx")
        config = load_model_config(model_dir, path_or_hub_id, trust_remote_code)
        check_classifier(config, path_or_hub_id)
        labels = category_labels(config, path_or_hub_id, label_separator)
        tokenizer = load_tokenizer(model_dir, trust_remote_code)
        max_seq_length = _sequence_length(max_seq_length, read_summary(model_dir), tokenizer)
        device = device or default_device()
        input_names = [name for name in MODEL_INPUTS if name in tokenizer.model_input_names]
        if backend == "torch":
            import torch  # only the torch backend needs it; ONNX inference runs without

            if num_threads:
                torch.set_num_threads(num_threads)
            forward = torch_forward(load_torch_classifier(model_dir, path_or_hub_id, device, trust_remote_code))
        else:
            forward = _onnx_forward(model_dir, quantize, recheck_margin, num_threads, device, trust_remote_code, onnx_cache_dir)
            input_names = [name for name in input_names if name in forward.input_names]
        pooled = NgramEnsemble.load(model_dir, labels) if ensemble or (ensemble is None and has_ensemble(model_dir)) else None
        return cls(
            labels, tokenizer, forward, ensemble=pooled, temperature=model_temperature(config), max_length=max_seq_length,
            input_names=input_names, backend=backend + ("-int8" if quantize else ""), model_dir=model_dir, source=path_or_hub_id,
        )

    # ---- scoring -----------------------------------------------------------------------------

    def logits(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Raw logits ``[len(texts), len(labels)]`` (float32, input order)."""
        if batch_size < 1:
            raise ProdcatError(f"batch_size must be at least 1, got {batch_size}")
        return run_batches(
            self.forward, self.tokenizer, list(texts), len(self.labels), batch_size, self.max_length, progress, self.input_names
        )

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Leaf probabilities ``[len(texts), len(labels)]`` (columns = ``labels``).

        ``softmax(logits / T)``; with the n-gram ensemble, its pooled probabilities (prodcat.inference.ngram).
        """
        scores, temperature = self.log_scores(texts, batch_size, progress)
        return probabilities(scores, temperature, dtype=np.float32)

    def log_scores(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> tuple[np.ndarray, float]:
        """``(scores, T)`` with ``predict_proba = softmax(scores / T)``: the transformer's logits and the
        model's temperature, or the n-gram ensemble's pooled scores and its temperature.

        Example:
            >>> scores, temperature = categorizer.log_scores(["USB-C charger 65W"])
        """
        texts = list(texts)
        logits = self.logits(texts, batch_size, progress)
        if self.ensemble is not None:
            return self.ensemble.scores(texts, logits), self.ensemble.temperature
        return logits, self.temperature

    def predict(
        self,
        texts: str | Sequence[str],
        top_k: int = 1,
        threshold: float | None = None,
        batch_size: int = 64,
        progress: bool = False,
    ) -> list[Prediction]:
        """One :class:`Prediction` per text (a single string counts as one text), in input order.

        Args:
            top_k: how many leaf alternatives to return in ``Prediction.top_k`` (capped at the
                number of categories).
            threshold: back-off threshold in ``(0, 1]`` (see :func:`hierarchical_backoff`); None
                leaves ``Prediction.backoff`` unset.
            batch_size: texts per forward pass (texts are sorted by length first).
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = ["" if t is None else str(t) for t in texts]
        if top_k < 1:
            raise ProdcatError(f"top_k must be at least 1, got {top_k}")
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise ProdcatError(f"threshold must be in (0, 1], got {threshold}")
        present = [i for i, text in enumerate(texts) if text.strip()]
        probs = self.predict_proba([texts[i] for i in present], batch_size, progress)
        decoded = self._decode(probs, top_k, threshold)
        results = [Prediction(text, "", 0.0, (), ()) for text in texts]
        for row, i in enumerate(present):
            results[i] = decoded(row, texts[i])
        return results

    def _decode(self, probs: np.ndarray, top_k: int, threshold: float | None):
        """A function ``(row, text) -> Prediction`` over a probability matrix (vectorised work done once)."""
        k = min(top_k, len(self.labels))
        n = probs.shape[0]
        if k < len(self.labels):
            top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        else:
            top = np.tile(np.arange(len(self.labels)), (n, 1))
        order = np.argsort(-np.take_along_axis(probs, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        top_scores = np.take_along_axis(probs, top, axis=1)
        leaf = top[:, 0] if n else np.zeros(0, dtype=np.int64)
        tax = self.taxonomy
        # Probability of each ancestor of the predicted leaf, level by level.
        level_scores = []
        for level in range(1, tax.depth + 1):
            node_probs = tax.level_probabilities(probs, level)
            level_scores.append(node_probs[np.arange(n), tax.leaf_to_node[level - 1][leaf]] if n else np.zeros(0))
        if threshold is not None and n:
            backoff_categories, backoff_scores, review = hierarchical_backoff(probs, tax, threshold)

        def build(row: int, text: str) -> Prediction:
            leaf_index = int(leaf[row])
            label = self.labels[leaf_index]
            parts = split_path(label)
            levels = tuple(
                CategoryScore(CANONICAL_SEPARATOR.join(parts[:level]), float(level_scores[level - 1][row]))
                for level in range(1, len(parts) + 1)
            )
            alternatives = tuple(CategoryScore(self.labels[int(j)], float(s)) for j, s in zip(top[row], top_scores[row]))
            backoff = None
            if threshold is not None:
                backoff = Backoff(backoff_categories[row], float(backoff_scores[row]), float(threshold), bool(review[row]))
            return Prediction(text, label, float(top_scores[row, 0]), alternatives, levels, backoff)

        return build

    def __repr__(self) -> str:
        extra = ", ensemble=True" if self.ensemble is not None else ""
        return f"Categorizer({self.source!r}, backend={self.backend!r}{extra}, categories={len(self.labels)}, levels={self.taxonomy.depth})"


def _safe_model_dir(path_or_hub_id: str, include_onnx: bool) -> str:
    """The local model folder, refused when its weights are pickles (prediction never unpickles weights)."""
    model_dir, _from_hub = resolve_model_dir(path_or_hub_id, include_onnx=include_onnx)
    files = os.listdir(model_dir)
    if not any(f.endswith(".safetensors") for f in files) and any(f.endswith((".bin", ".pt", ".pth", ".ckpt")) for f in files):
        raise ProdcatError(
            f"{path_or_hub_id}: only pickled weights (.bin) found; prediction loads safetensors only "
            "(re-save the model with save_pretrained, which writes model.safetensors)"
        )
    check_weights_are_safe(model_dir, allow_pickle=False)
    return model_dir


def _sequence_length(requested: int | None, summary: TrainingSummary | None, tokenizer) -> int:
    """Tokens per text: as asked, else as in training (or the default), capped at the tokenizer's limit."""
    length = requested
    if length is None:
        length = (summary.max_seq_length if summary else None) or DEFAULT_MAX_SEQ_LENGTH
        model_max = getattr(tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and 0 < model_max < length:
            length = model_max
    if length < 2:
        raise ProdcatError(f"max_seq_length must be at least 2, got {length}")
    return length


def _onnx_forward(
    model_dir: str, quantize: bool, recheck_margin: float | None, num_threads: int | None, device: str,
    trust_remote_code: bool, cache_dir: str | None,
):
    """The ONNX runner (exported once and cached); int8 re-checks near-ties with the fp32 graph."""

    def export(quantized: bool) -> str:
        return onnx_backend.ensure_onnx_model(model_dir, quantize=quantized, trust_remote_code=trust_remote_code, cache_dir=cache_dir)

    path = export(quantize)
    margin = onnx_backend.calibrated_recheck_margin(path) if recheck_margin is None else float(recheck_margin)
    rechecked = quantize and margin > 0
    # Two onnxruntime sessions taking turns (int8, then fp32 for near-ties) must not spin-wait between
    # runs, or each one's idle threads slow the other's run.
    forward = onnx_backend.OnnxRunner(path, num_threads=num_threads, device=device, spin_between_runs=not rechecked)
    if rechecked:
        fp32 = onnx_backend.OnnxRunner(export(False), num_threads=num_threads, device=device, spin_between_runs=False)
        forward = onnx_backend.RecheckedRunner(forward, fp32, margin)
    return forward

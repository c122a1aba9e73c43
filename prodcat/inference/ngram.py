"""An n-gram companion model stored beside the transformer, and their ensemble (prodcat's default predictor).

A TF-IDF model (word 1-2 grams + character 2-5 grams within word boundaries, sublinear tf, terms seen
in at least 2 texts) with a linear SVM makes different mistakes from a fine-tuned transformer:
it keys on exact spellings, pack sizes and brand tokens. Their log-linear pool

    s_c = (1 - w) * log_softmax(z)_c + w * log_softmax(a * d)_c,    p = softmax(s / T)

(z: the transformer's logits, d: the SVM's decision values, a: their scale, w: the n-gram weight,
T: a temperature fitted like the transformer's) is more accurate than either model alone on every
catalogue measured (docs/benchmarks.md). Training fits it unless ``--ngram_ensemble false``, and prodcat's
predictor uses it whenever a model folder has one (``Categorizer.from_pretrained(..., ensemble=False)`` and
``predict.py --ensemble false`` ask for the transformer alone). ``pipeline("text-classification")`` cannot
express the pool, so it loads the transformer alone.

``a`` and ``w`` are chosen on the validation split (lowest negative log-likelihood, see
:func:`fit_ngram_ensemble`), with the n-gram model fitted on the training split; the stored n-gram
model is then refitted on training + validation.

Stored without pickle in ``MODEL_DIR/ngram/``: ``config.json`` (settings, labels, a, w, T and the
validation figures), ``vocabulary.json`` (terms in feature order) and ``weights.safetensors`` (idf
vectors, the SVM's coefficients as a sparse CSR matrix, intercepts).

Example:
    >>> ensemble = fit_ngram_ensemble(train_texts, train_labels, val_texts, val_labels, val_logits, labels)
    >>> ensemble.save("outputs/model")
    >>> NgramEnsemble.load("outputs/model").probabilities(texts, transformer_logits)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from prodcat.core.artifacts import NGRAM_DIR
from prodcat.core.errors import ProdcatError, first_line
from prodcat.data.splits import LABEL_PATH, TEXT
from prodcat.evaluation.calibration import fit_temperature, label_ids, negative_log_likelihood, probabilities
from prodcat.evaluation.metrics.taxonomy_metrics import taxonomy_scores
from prodcat.inference.batching import predict_logits

logger = logging.getLogger(__name__)

#: The model's folder inside a model folder (its name is listed with the output folder's others in core.artifacts).
SUBDIR = NGRAM_DIR
FORMAT = "prodcat-ngram-1"
CONFIG_FILE = "config.json"
VOCABULARY_FILE = "vocabulary.json"
WEIGHTS_FILE = "weights.safetensors"
#: Vectorizer settings (those of the TF-IDF baseline in benchmarks/accuracy.py, plus min_df 2, which
#: halves the vocabulary with no loss measured on bigbasket-27k validation).
WORD_NGRAMS = (1, 2)
CHAR_NGRAMS = (2, 5)
MIN_DF = 2
SVM_C = 1.0
#: SVM weights with a smaller magnitude are dropped when saving (the stored matrix is sparse).
PRUNE_BELOW = 1e-3
#: Search grid of the scale a and the n-gram weight w (w = 0 keeps the transformer alone).
SCALES = (2.0, 5.0, 10.0, 20.0)
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
#: Decision value given to categories the SVM never saw (so they only win on the transformer's say).
UNSEEN_DECISION = -10.0


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def pool(logits: np.ndarray, decisions: np.ndarray, scale: float, weight: float) -> np.ndarray:
    """The ensemble score ``(1 - w) * log_softmax(z) + w * log_softmax(a * d)`` (module docstring)."""
    if weight == 0:
        return log_softmax(np.asarray(logits, dtype=np.float64))
    return (
        (1 - weight) * log_softmax(np.asarray(logits, dtype=np.float64))
        + weight * log_softmax(scale * np.asarray(decisions, dtype=np.float64))
    )


@dataclass
class NgramModel:
    """TF-IDF features and a linear SVM over a fixed label list (columns in the transformer's order)."""

    labels: list[str]
    word_vocabulary: list[str]
    char_vocabulary: list[str]
    word_idf: np.ndarray
    char_idf: np.ndarray
    coef: object  # scipy.sparse.csr_matrix [num_labels, num_features]
    intercept: np.ndarray
    _vectorizers: tuple = field(default=(), repr=False)
    _coef_by_feature: object = field(default=None, repr=False)

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[str], label_names: Sequence[str], seed: int = 42) -> NgramModel:
        """Fit on ``texts`` / ``labels`` (category paths in ``label_names``); columns follow ``label_names``."""
        import scipy.sparse as sp
        from sklearn.svm import LinearSVC

        if len(set(labels)) < 2:
            raise ProdcatError("the n-gram model needs at least 2 categories in the training data")
        word, char = _vectorizers()
        try:
            features = sp.hstack([word.fit_transform(texts), char.fit_transform(texts)]).tocsr()
        except ValueError as err:  # e.g. no term occurs in 2 texts
            raise ProdcatError(f"the n-gram model cannot be fitted ({err}); train with --ngram_ensemble false") from None
        svm = LinearSVC(C=SVM_C, random_state=seed).fit(features, list(labels))
        coef, intercept = svm.coef_, svm.intercept_
        if len(svm.classes_) == 2:  # binary LinearSVC returns one row for the second class
            coef, intercept = np.vstack([-coef, coef]), np.array([-intercept[0], intercept[0]])
        column = {name: i for i, name in enumerate(label_names)}
        rows = np.array([column[c] for c in svm.classes_])
        # Sparse from the start (no dense labels x features copy); row i of coef is category rows[i].
        kept = sp.coo_matrix(np.where(np.abs(coef) < PRUNE_BELOW, 0.0, coef).astype(np.float32))
        weights = sp.csr_matrix((kept.data, (rows[kept.row], kept.col)), shape=(len(label_names), features.shape[1]))
        bias = np.full(len(label_names), UNSEEN_DECISION, dtype=np.float32)
        bias[rows] = intercept
        return cls(
            list(label_names), _terms(word), _terms(char), word.idf_.astype(np.float32), char.idf_.astype(np.float32),
            weights, bias, (word, char),
        )

    def features(self, texts: Sequence[str]):
        import scipy.sparse as sp

        if not self._vectorizers:
            word, char = _vectorizers()
            for vectorizer, vocabulary, idf in ((word, self.word_vocabulary, self.word_idf), (char, self.char_vocabulary, self.char_idf)):
                vectorizer.vocabulary = {term: i for i, term in enumerate(vocabulary)}
                vectorizer.idf_ = idf.astype(np.float64)  # also fixes the vocabulary: no fitting happens
            self._vectorizers = (word, char)
        word, char = self._vectorizers
        texts = ["" if t is None else str(t) for t in texts]
        return sp.hstack([word.transform(texts), char.transform(texts)]).tocsr()

    def decisions(self, texts: Sequence[str]) -> np.ndarray:
        """SVM decision values ``[len(texts), len(labels)]``."""
        if self._coef_by_feature is None:
            # features @ coef.T with coef.T a CSC view makes scipy convert all of coef (millions of
            # entries) on every call: 16 ms for one bigbasket title. Converted once, it is 0.06 ms.
            self._coef_by_feature = self.coef.T.tocsr()
        return (self.features(texts) @ self._coef_by_feature).toarray() + self.intercept


def has_ensemble(model_dir: str) -> bool:
    """Whether ``model_dir`` holds an n-gram model (``ngram/``, fitted unless ``--ngram_ensemble false``)."""
    return os.path.isfile(os.path.join(model_dir, SUBDIR, CONFIG_FILE))


def _vectorizers():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return (
        TfidfVectorizer(ngram_range=WORD_NGRAMS, sublinear_tf=True, min_df=MIN_DF, dtype=np.float32),
        TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, sublinear_tf=True, min_df=MIN_DF, dtype=np.float32),
    )


def _terms(vectorizer) -> list[str]:
    return [str(t) for t in vectorizer.get_feature_names_out()]


@dataclass
class NgramEnsemble:
    """An :class:`NgramModel` and the pooling settings chosen on validation."""

    model: NgramModel
    scale: float
    weight: float
    temperature: float = 1.0
    validation: dict = field(default_factory=dict)

    def scores(self, texts: Sequence[str], logits: np.ndarray) -> np.ndarray:
        """Pooled log-scores ``s`` (argmax = the ensemble's category)."""
        if logits.shape[1] != len(self.model.labels):
            raise ProdcatError(f"the n-gram model has {len(self.model.labels)} categories, the transformer {logits.shape[1]}")
        if self.weight == 0 or not len(texts):
            return pool(logits, logits, 1.0, 0.0)
        return pool(logits, self.model.decisions(texts), self.scale, self.weight)

    def probabilities(self, texts: Sequence[str], logits: np.ndarray) -> np.ndarray:
        """``softmax(s / T)`` over the categories, rows in input order."""
        return probabilities(self.scores(texts, logits), self.temperature).astype(np.float32)

    # ---- storage -------------------------------------------------------------------------------

    def save(self, model_dir: str) -> str:
        """Write ``model_dir/ngram/`` (replaced as a whole, never half-written); returns its path."""
        from safetensors.numpy import save_file

        target = os.path.join(model_dir, SUBDIR)
        staging = tempfile.mkdtemp(prefix=".ngram-", dir=model_dir)
        try:
            coef = self.model.coef.tocsr()
            save_file(
                {
                    "word_idf": self.model.word_idf.astype(np.float32),
                    "char_idf": self.model.char_idf.astype(np.float32),
                    "coef_data": coef.data.astype(np.float32),
                    "coef_indices": coef.indices.astype(np.int32),
                    "coef_indptr": coef.indptr.astype(np.int64),
                    "intercept": self.model.intercept.astype(np.float32),
                },
                os.path.join(staging, WEIGHTS_FILE),
            )
            with open(os.path.join(staging, VOCABULARY_FILE), "w", encoding="utf-8") as handle:
                json.dump({"word": self.model.word_vocabulary, "char": self.model.char_vocabulary}, handle, ensure_ascii=False)
            config = {
                "format": FORMAT, "labels": self.model.labels, "word_ngram_range": list(WORD_NGRAMS),
                "char_ngram_range": list(CHAR_NGRAMS), "min_df": MIN_DF, "svm_c": SVM_C, "num_features": int(coef.shape[1]),
                "scale": self.scale, "weight": self.weight, "temperature": self.temperature, "validation": self.validation,
            }
            with open(os.path.join(staging, CONFIG_FILE), "w", encoding="utf-8") as handle:
                json.dump(config, handle, indent=2, ensure_ascii=False)
            if os.path.isdir(target):
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    @classmethod
    def load(cls, model_dir: str, labels: Sequence[str] | None = None) -> NgramEnsemble:
        """Read ``model_dir/ngram/``; ``labels`` (the transformer's) must match the stored ones."""
        import scipy.sparse as sp
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        folder = os.path.join(model_dir, SUBDIR)
        if not has_ensemble(model_dir):
            raise ProdcatError(
                f"{model_dir}: no n-gram model ({SUBDIR}/{CONFIG_FILE}); train with --ngram_ensemble true, or predict with --ensemble false"
            )
        try:
            with open(os.path.join(folder, CONFIG_FILE), encoding="utf-8") as handle:
                config = json.load(handle)
            with open(os.path.join(folder, VOCABULARY_FILE), encoding="utf-8") as handle:
                vocabulary = json.load(handle)
            tensors = load_file(os.path.join(folder, WEIGHTS_FILE))
        except (OSError, ValueError, SafetensorError) as err:
            raise ProdcatError(
                f"{folder}: unreadable n-gram model ({first_line(err)}); retrain, or predict with --ensemble false"
            ) from None
        if config.get("format") != FORMAT:
            raise ProdcatError(
                f"{folder}: n-gram model format {config.get('format')!r}, this prodcat reads {FORMAT!r}; predict with --ensemble false"
            )
        if labels is not None and list(labels) != list(config["labels"]):
            raise ProdcatError(
                f"{folder}: the n-gram model's categories differ from the transformer's; retrain, or predict with --ensemble false"
            )
        num_labels = len(config["labels"])
        coef = sp.csr_matrix(
            (tensors["coef_data"], tensors["coef_indices"], tensors["coef_indptr"]), shape=(num_labels, int(config["num_features"]))
        )
        model = NgramModel(
            list(config["labels"]), vocabulary["word"], vocabulary["char"], tensors["word_idf"], tensors["char_idf"], coef,
            tensors["intercept"],
        )
        return cls(
            model, float(config["scale"]), float(config["weight"]), float(config.get("temperature", 1.0)), config.get("validation", {})
        )


def fit_ngram_ensemble(
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    validation_texts: Sequence[str],
    validation_labels: Sequence[str],
    validation_logits: np.ndarray,
    label_names: Sequence[str],
    seed: int = 42,
) -> NgramEnsemble:
    """Choose ``a`` and ``w`` on validation, fit ``T``, and refit the n-gram model on all rows.

    ``(a, w)`` minimise the validation negative log-likelihood ``-mean log softmax(s / T)[y]``, each
    with its own fitted ``T``. Not macro-F1: the transformer's prior correction (and, with
    ``--load_best_model_at_end``, its epoch) were chosen to maximise validation macro-F1, so on that split
    the transformer alone looks better than it is (on bigbasket-27k, with the best epoch kept, selecting by
    validation macro-F1 kept w = 0, while every w in 0.1-0.6 raised test macro-F1 by 1-1.6 points).
    ``validation_logits`` are the transformer's logits on ``validation_texts`` (columns = ``label_names``);
    rows of categories outside ``label_names`` are left out of the fit.
    """
    label_names = list(label_names)
    ids = label_ids(validation_labels, {name: i for i, name in enumerate(label_names)})
    known = np.flatnonzero(ids >= 0)
    if not len(known):
        raise ProdcatError("the n-gram ensemble needs validation rows of known categories to choose its weight")
    targets = ids[known]
    first = NgramModel.fit(train_texts, train_labels, label_names, seed)
    decisions = first.decisions(validation_texts)[known]
    logits = np.asarray(validation_logits)[known]

    trials = {}
    for a, w in [(1.0, 0.0)] + [(a, w) for a in SCALES for w in WEIGHTS if w > 0]:
        scores = pool(logits, decisions, a, w)
        temperature = float(fit_temperature(scores, targets))
        trials[(a, w)] = (negative_log_likelihood(scores, targets, temperature), temperature)
    (scale, weight), (best_nll, temperature) = min(trials.items(), key=lambda item: item[1][0])

    def figures(scores: np.ndarray) -> tuple[float, float]:
        found = taxonomy_scores([label_names[i] for i in scores.argmax(axis=1)], [label_names[t] for t in targets])
        return found["accuracy"], found["macro_f1"]

    validation = {"num_examples": len(known), "scale": scale, "weight": weight, "nll": best_nll, "transformer_nll": trials[(1.0, 0.0)][0]}
    for name, scores in (("transformer", logits), ("ngram", decisions), ("ensemble", pool(logits, decisions, scale, weight))):
        validation[f"{name}_accuracy"], validation[f"{name}_macro_f1"] = figures(scores)
    # The stored model also learns from the validation rows.
    final = NgramModel.fit(
        list(train_texts) + [validation_texts[i] for i in known],
        list(train_labels) + [validation_labels[i] for i in known],
        label_names,
        seed,
    )
    return NgramEnsemble(final, scale, weight, temperature, validation)


def fit_ensemble_for_model(
    model_dir: str,
    model,
    tokenizer,
    splits,
    test_table=None,
    batch_size: int = 64,
    max_length: int = 64,
    seed: int = 42,
    validation_logits: np.ndarray | None = None,
    test_logits: np.ndarray | None = None,
) -> dict[str, float]:
    """Fit the ensemble of a trained transformer on its training splits and save it in ``model_dir/ngram/``.

    ``splits`` are the run's ``data.Splits`` (a validation split is required); with ``test_table``
    the ensemble is also scored on it. ``validation_logits`` / ``test_logits`` (the transformer's on
    those splits) skip inference when they were already computed. Returns the validation (and test) figures.
    """
    labels = list(splits.label_names)
    validation_texts = list(splits.validation[TEXT][:])
    logits = predict_logits(model, tokenizer, validation_texts, batch_size, max_length) if validation_logits is None else validation_logits
    ensemble = fit_ngram_ensemble(
        list(splits.train[TEXT][:]), list(splits.train[LABEL_PATH][:]), validation_texts, list(splits.validation[LABEL_PATH][:]),
        logits, labels, seed,
    )
    ensemble.save(model_dir)
    figures = {f"validation_{key}": float(value) for key, value in ensemble.validation.items()}
    if test_table is not None and len(test_table.texts):
        if test_logits is None:
            test_logits = predict_logits(model, tokenizer, test_table.texts, batch_size, max_length)
        figures.update(_test_figures(ensemble, labels, test_table, test_logits))
    logger.info(
        "n-gram ensemble (a=%s, w=%s): validation accuracy %.4f -> %.4f, macro-F1 %.4f -> %.4f",
        ensemble.scale, ensemble.weight, figures["validation_transformer_accuracy"], figures["validation_ensemble_accuracy"],
        figures["validation_transformer_macro_f1"], figures["validation_ensemble_macro_f1"],
    )
    return figures


def _test_figures(ensemble: NgramEnsemble, labels: Sequence[str], test_table, test_logits: np.ndarray) -> dict[str, float]:

    probabilities = ensemble.probabilities(test_table.texts, test_logits)
    found = taxonomy_scores([labels[i] for i in probabilities.argmax(axis=1)], list(test_table.labels))
    return {"test_accuracy": found["accuracy"], "test_macro_f1": found["macro_f1"]}


def carry_over_ensemble(
    source_dir: str,
    model_dir: str,
    labels: Sequence[str],
    validation_figures: dict[str, float],
    test_table=None,
    test_logits: np.ndarray | None = None,
) -> dict[str, float]:
    """Copy the ensemble fitted for one transformer (``source_dir/ngram/``) to another with the same categories.

    ``--refit_on_all_rows`` uses it: ``a``, ``w`` and ``T`` were chosen on the first run's held-out rows, and the
    n-gram model was already refit on all rows. ``test_logits`` (the new transformer's) score it on ``test_table``.
    Returns ``validation_figures`` (the first run's) with the test figures added.
    """
    ensemble = NgramEnsemble.load(source_dir, labels)
    ensemble.save(model_dir)
    figures = dict(validation_figures)
    if test_table is not None and len(test_table.texts) and test_logits is not None:
        figures.update(_test_figures(ensemble, list(labels), test_table, test_logits))
    return figures

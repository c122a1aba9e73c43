"""The Python prediction API: typed results, top-k, per-level probabilities, back-off, loading rules."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from prodcat.core.errors import ProdcatError
from prodcat.core.hierarchy import ancestors
from prodcat.evaluation.calibration import probabilities
from prodcat.inference.categorizer import (
    Backoff,
    Categorizer,
    CategoryScore,
    Prediction,
    Taxonomy,
    hierarchical_backoff,
)
from tests.conftest import clone_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "data", "sample_products.csv")

# The worked example of hierarchical_backoff's docstring.
EXAMPLE_LABELS = [
    "Electronics > Audio > Headphones",
    "Electronics > Audio > Speakers",
    "Electronics > Cameras > Lenses",
    "Home > Kitchen > Kettles",
]
EXAMPLE_PROBS = np.array([0.50, 0.35, 0.10, 0.05])


def sample_texts(n: int = 40) -> list[str]:
    return pd.read_csv(SAMPLE)["description"].head(n).tolist()




@pytest.fixture(scope="module")
def categorizer(trained_model_dir) -> Categorizer:
    return Categorizer.from_pretrained(trained_model_dir, device="cpu")


# ---- back-off as a pure function -------------------------------------------------------------


def test_backoff_worked_example_returns_deepest_category_reaching_threshold():
    categories, scores, review = hierarchical_backoff(EXAMPLE_PROBS, EXAMPLE_LABELS, 0.8)
    # No leaf reaches 0.8, "Electronics > Audio" has 0.50 + 0.35; "Electronics" (0.95) is shallower.
    assert categories == ["Electronics > Audio"]
    assert scores[0] == pytest.approx(0.85)
    assert not review[0]


def test_backoff_needs_review_when_no_top_level_reaches_threshold():
    categories, scores, review = hierarchical_backoff(EXAMPLE_PROBS, EXAMPLE_LABELS, 0.97)
    assert categories == [""]
    assert review[0]
    assert scores[0] == pytest.approx(0.95)  # the best top level, to show how far it fell short


def test_backoff_threshold_is_inclusive_and_low_thresholds_keep_the_leaf():
    categories, scores, _ = hierarchical_backoff(EXAMPLE_PROBS, EXAMPLE_LABELS, 0.5)
    assert categories == ["Electronics > Audio > Headphones"] and scores[0] == pytest.approx(0.5)
    # Two leaves reach 0.3: the more probable one wins.
    categories, _, _ = hierarchical_backoff(np.array([0.32, 0.34, 0.30, 0.04]), EXAMPLE_LABELS, 0.3)
    assert categories == ["Electronics > Audio > Speakers"]


def test_backoff_prefers_depth_over_probability_with_mixed_depth_labels():
    labels = ["Books", "Electronics > Audio > Headphones", "Electronics > Audio > Speakers"]
    probs = np.array([[0.45, 0.30, 0.25]])
    # "Books" (0.45, depth 1) qualifies at 0.4 but "Electronics > Audio" (0.55, depth 2) is deeper.
    assert hierarchical_backoff(probs, labels, 0.4)[0] == ["Electronics > Audio"]
    # At 0.2 a depth-3 leaf qualifies.
    assert hierarchical_backoff(probs, labels, 0.2)[0] == ["Electronics > Audio > Headphones"]
    # A shallow leaf is returned at its own depth when it is the only qualifying category.
    assert hierarchical_backoff(np.array([[0.9, 0.05, 0.05]]), labels, 0.8)[0] == ["Books"]


def test_backoff_on_many_rows_matches_row_by_row():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(len(EXAMPLE_LABELS), 0.5), size=50)
    together = hierarchical_backoff(probs, EXAMPLE_LABELS, 0.6)
    for i in range(len(probs)):
        single = hierarchical_backoff(probs[i], EXAMPLE_LABELS, 0.6)
        assert single[0][0] == together[0][i]
        assert single[1][0] == pytest.approx(together[1][i])
        assert single[2][0] == together[2][i]


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_backoff_rejects_thresholds_outside_unit_interval(threshold):
    with pytest.raises(ProdcatError, match="threshold"):
        hierarchical_backoff(EXAMPLE_PROBS, EXAMPLE_LABELS, threshold)


def test_level_probabilities_are_sums_of_leaves():
    taxonomy = Taxonomy(EXAMPLE_LABELS)
    probs = np.random.default_rng(1).dirichlet(np.ones(len(EXAMPLE_LABELS)), size=7)
    for level in (1, 2, 3):
        node_probs = taxonomy.level_probabilities(probs, level)
        np.testing.assert_allclose(node_probs.sum(axis=1), 1.0, atol=1e-12)
        for j, node in enumerate(taxonomy.nodes[level - 1]):
            members = [i for i, label in enumerate(EXAMPLE_LABELS) if node in ancestors(label)]
            np.testing.assert_allclose(node_probs[:, j], probs[:, members].sum(axis=1))


# ---- the Categorizer on a trained model -------------------------------------------------------


def test_predict_returns_typed_results_with_consistent_top_k_and_levels(categorizer):
    texts = sample_texts(20)
    predictions = categorizer.predict(texts, top_k=3)
    probs = categorizer.predict_proba(texts)
    assert len(predictions) == len(texts)
    for row, (text, p) in enumerate(zip(texts, predictions)):
        assert isinstance(p, Prediction) and p.text == text
        assert p.category in categorizer.labels
        assert p.score == pytest.approx(float(probs[row].max()), abs=1e-6)
        assert all(isinstance(alt, CategoryScore) for alt in p.top_k)
        assert [alt.category for alt in p.top_k] == [categorizer.labels[j] for j in np.argsort(-probs[row])[:3]]
        assert p.top_k[0] == CategoryScore(p.category, p.score)
        assert [s.score for s in p.top_k] == sorted((s.score for s in p.top_k), reverse=True)
        # Levels are the ancestors of the leaf; each probability is the sum of its leaves.
        assert [level.category for level in p.levels] == ancestors(p.category)
        for level in p.levels:
            members = [j for j, label in enumerate(categorizer.labels) if level.category in ancestors(label)]
            assert level.score == pytest.approx(float(probs[row, members].sum()), abs=1e-5)
        assert p.levels[-1].score == pytest.approx(p.score, abs=1e-6)
        assert all(a.score >= b.score - 1e-9 for a, b in zip(p.levels, p.levels[1:]))
        assert p.backoff is None and not p.needs_review
    assert predictions[0].to_dict()["top_k"][0]["category"] == predictions[0].category


def test_predict_proba_rows_are_distributions_over_labels(categorizer):
    probs = categorizer.predict_proba(sample_texts(10))
    assert probs.shape == (10, len(categorizer.labels)) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_predict_with_threshold_matches_the_pure_backoff(categorizer):
    texts = sample_texts(30)
    probs = categorizer.predict_proba(texts)
    for threshold in (0.3, 0.9, 1.0):
        predictions = categorizer.predict(texts, threshold=threshold)
        categories, scores, review = hierarchical_backoff(probs, categorizer.labels, threshold)
        for i, p in enumerate(predictions):
            assert isinstance(p.backoff, Backoff)
            assert (p.backoff.category, p.needs_review) == (categories[i], bool(review[i]))
            assert p.backoff.score == pytest.approx(scores[i], abs=1e-5)
            if not p.needs_review:
                assert p.backoff.score >= threshold - 1e-6
                assert any(p.backoff.category in ancestors(label) for label in categorizer.labels)
            else:
                assert p.backoff.category == "" and p.backoff.score < threshold


def test_needs_review_exactly_when_no_top_level_reaches_threshold(categorizer):
    texts = sample_texts(20)
    top_level = Taxonomy(categorizer.labels).level_probabilities(categorizer.predict_proba(texts), 1).max(axis=1)
    # Threshold in the widest gap between the rows' best top-level probabilities: some rows reach it.
    values = np.sort(top_level)
    gap = int(np.argmax(np.diff(values)))
    threshold = float((values[gap] + values[gap + 1]) / 2)
    predictions = categorizer.predict(texts, threshold=threshold)
    expected = [bool(v < threshold) for v in top_level]
    assert [p.needs_review for p in predictions] == expected
    assert any(expected) and not all(expected)


def test_single_string_empty_texts_and_large_top_k(categorizer):
    [single] = categorizer.predict(sample_texts(1)[0])
    assert single.category in categorizer.labels
    results = categorizer.predict(["", "   ", sample_texts(1)[0]], top_k=10_000, threshold=0.5)
    assert results[0].is_empty and results[1].is_empty and results[0].top_k == () and results[0].backoff is None
    assert results[2].category == single.category
    assert len(results[2].top_k) == len(categorizer.labels)
    with pytest.raises(ProdcatError, match="top_k"):
        categorizer.predict(["x"], top_k=0)


def test_batched_logits_match_unsorted_padded_reference(categorizer):
    import torch

    from prodcat.inference.categorizer import load_torch_classifier

    texts = sample_texts(12)
    model = load_torch_classifier(categorizer.model_dir, "model", "cpu")
    encoded = categorizer.tokenizer(texts, padding=True, truncation=True, max_length=categorizer.max_length, return_tensors="pt")
    with torch.inference_mode():
        reference = model(**encoded).logits.numpy()
    np.testing.assert_allclose(categorizer.logits(texts, batch_size=5), reference, atol=1e-4)


# ---- loading rules ------------------------------------------------------------------------------


def test_temperature_from_config_is_applied(trained_model_dir, categorizer, tmp_path):
    def set_temperature(config):
        config["prodcat_temperature"] = 2.5

    warm = Categorizer.from_pretrained(clone_model(trained_model_dir, str(tmp_path / "t"), set_temperature), device="cpu")
    texts = sample_texts(5)
    assert warm.temperature == 2.5
    np.testing.assert_allclose(warm.predict_proba(texts), probabilities(categorizer.logits(texts), 2.5), atol=1e-5)


def test_model_without_category_labels_is_a_prodcat_error(trained_model_dir, tmp_path):
    def default_labels(config):
        n = len(config["id2label"])
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(n)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(n)}

    folder = clone_model(trained_model_dir, str(tmp_path / "nolabels"), default_labels)
    with pytest.raises(ProdcatError, match="without category labels"):
        Categorizer.from_pretrained(folder)


def test_labels_with_other_separators_are_normalised(trained_model_dir, categorizer, tmp_path):
    def slash_labels(config):
        config["id2label"] = {k: v.replace(" > ", "/") for k, v in config["id2label"].items()}
        config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}

    foreign = Categorizer.from_pretrained(clone_model(trained_model_dir, str(tmp_path / "slash"), slash_labels), device="cpu")
    assert foreign.labels == categorizer.labels
    assert foreign.taxonomy.depth == categorizer.taxonomy.depth


def test_pickled_only_or_missing_models_are_refused(tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ProdcatError, match="safetensors"):
        Categorizer.from_pretrained(str(pickled))
    with pytest.raises(ProdcatError, match="not found"):
        Categorizer.from_pretrained(str(tmp_path / "missing" / "model"))


def test_hub_id_loads_from_the_offline_cache(trained_model_dir, categorizer, tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--prodcat-test--tiny-categorizer"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    clone_model(trained_model_dir, str(repo / "snapshots" / commit))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    from_hub = Categorizer.from_pretrained("prodcat-test/tiny-categorizer", device="cpu")
    texts = sample_texts(3)
    assert [p.category for p in from_hub.predict(texts)] == [p.category for p in categorizer.predict(texts)]
    with pytest.raises(ProdcatError, match="HF_HUB_OFFLINE"):
        Categorizer.from_pretrained("prodcat-test/not-cached")

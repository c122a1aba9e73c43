"""The n-gram companion model and its ensemble with the transformer (prodcat.ngram, --ngram_ensemble, --ensemble)."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLE, TINY_TRAIN_FLAGS

from prodcat.cli import predict_main, run_guarded
from prodcat.errors import ProdcatError
from prodcat.hierarchy import normalize_path
from prodcat.ngram import SUBDIR, NgramEnsemble, NgramModel, has_ensemble, log_softmax, pool
from prodcat.predictor import Categorizer


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    frame = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    frame["category"] = [normalize_path(c) for c in frame.category]
    return frame


@pytest.fixture(scope="module")
def ensemble_model_dir(tmp_path_factory) -> str:
    """A tiny model trained with --ngram_ensemble true (held-out rows scored as the test split)."""
    from prodcat.args import parse_train_args
    from prodcat.training import run_training

    out = str(tmp_path_factory.mktemp("ensemble-model"))
    results = run_training(*parse_train_args(TINY_TRAIN_FLAGS + ["--output_dir", out, "--ngram_ensemble", "true", "--test_file", SAMPLE]))
    assert {"validation_ensemble_accuracy", "validation_transformer_accuracy", "test_macro_f1"} <= set(results["ngram_ensemble"])
    return out


def test_pool_is_the_weighted_sum_of_log_softmaxes():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    decisions = np.array([[-1.0, 0.5, 0.0], [0.2, -0.3, 0.9]])
    np.testing.assert_allclose(pool(logits, decisions, 5.0, 0.0), log_softmax(logits))
    expected = 0.7 * log_softmax(logits) + 0.3 * log_softmax(5.0 * decisions)
    np.testing.assert_allclose(pool(logits, decisions, 5.0, 0.3), expected)
    assert pool(logits, decisions, 5.0, 0.1)[0].argmax() == 0 and pool(logits, decisions, 5.0, 0.9)[0].argmax() == 1


def test_ngram_model_learns_the_sample_and_keeps_the_label_order(sample):
    labels = sorted(set(sample.category))[::-1]  # any column order: the transformer's
    model = NgramModel.fit(sample.description.tolist(), sample.category.tolist(), labels)
    decisions = model.decisions(sample.description.tolist())
    assert decisions.shape == (len(sample), len(labels))
    predicted = [labels[i] for i in decisions.argmax(axis=1)]
    assert np.mean(np.array(predicted) == sample.category.to_numpy()) > 0.9
    # The cached feature-major weights give the plain linear model, for one text as for many.
    dense = model.features(sample.description.tolist()).toarray() @ model.coef.toarray().T + model.intercept
    np.testing.assert_allclose(decisions, dense, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.decisions(sample.description.tolist()[:1]), dense[:1], rtol=1e-5, atol=1e-5)


def test_two_categories_and_unseen_columns():
    texts = ["red apple fresh", "green apple crisp", "steel hammer tool", "claw hammer heavy"] * 3
    labels = ["Food > Fruit", "Food > Fruit", "Tools > Hammers", "Tools > Hammers"] * 3
    names = ["Food > Fruit", "Tools > Hammers", "Toys > Balls"]  # the last never appears in training
    model = NgramModel.fit(texts, labels, names)
    decisions = model.decisions(["apple pie", "rubber hammer"])
    assert [names[i] for i in decisions.argmax(axis=1)] == ["Food > Fruit", "Tools > Hammers"]
    assert (decisions[:, 2] < decisions[:, :2].min(axis=1)).all()


def test_training_saves_an_ensemble_without_pickles(ensemble_model_dir):
    folder = os.path.join(ensemble_model_dir, SUBDIR)
    assert sorted(os.listdir(folder)) == ["config.json", "vocabulary.json", "weights.safetensors"]
    config = json.load(open(os.path.join(folder, "config.json")))
    id2label = json.load(open(os.path.join(ensemble_model_dir, "config.json")))["id2label"]
    assert config["labels"] == [id2label[str(i)] for i in range(len(id2label))]
    assert 0.0 <= config["weight"] < 1.0 and config["temperature"] > 0
    summary = json.load(open(os.path.join(ensemble_model_dir, "training_summary.json")))
    figures = summary["results"]["ngram_ensemble"]
    card = open(os.path.join(ensemble_model_dir, "README.md"), encoding="utf-8").read()
    assert "--ensemble" in card and f"macro-F1 {figures['validation_transformer_macro_f1']:.3f}" in card


def test_categorizer_ensemble_pools_the_stored_models(ensemble_model_dir, sample):
    texts = sample.description.head(40).tolist()
    plain = Categorizer.from_pretrained(ensemble_model_dir, device="cpu")
    pooled = Categorizer.from_pretrained(ensemble_model_dir, device="cpu", ensemble=True)
    assert plain.ensemble is None and pooled.ensemble is not None
    stored = NgramEnsemble.load(ensemble_model_dir)
    # Recompute the pool by hand from the stored pieces: transformer logits and SVM decision values.
    scores = pool(plain.logits(texts), stored.model.decisions(texts), stored.scale, stored.weight) / stored.temperature
    expected = np.exp(log_softmax(scores))
    probabilities = pooled.predict_proba(texts)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    predictions = pooled.predict(texts, threshold=0.5)
    assert [p.category for p in predictions] == [pooled.labels[i] for i in expected.argmax(axis=1)]


def test_save_and_load_round_trip(ensemble_model_dir, tmp_path, sample):
    stored = NgramEnsemble.load(ensemble_model_dir)
    copy = str(tmp_path / "copy")
    os.makedirs(copy)
    stored.save(copy)
    stored.save(copy)  # replacing an existing ngram/ folder works and leaves no staging folder behind
    assert os.listdir(copy) == [SUBDIR]
    texts = sample.description.head(10).tolist()
    logits = np.random.default_rng(0).normal(size=(len(texts), len(stored.model.labels)))
    np.testing.assert_allclose(NgramEnsemble.load(copy).probabilities(texts, logits), stored.probabilities(texts, logits), atol=1e-6)


def test_label_mismatch_and_missing_ensemble_are_clear_errors(ensemble_model_dir, trained_model_dir, capsys):
    assert has_ensemble(ensemble_model_dir) and not has_ensemble(trained_model_dir)
    with pytest.raises(ProdcatError, match="categories differ"):
        NgramEnsemble.load(ensemble_model_dir, labels=["A > B", "C > D"])
    code = run_guarded(predict_main, ["--model", trained_model_dir, "--ensemble", "USB-C charger 65W"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no n-gram model" in err and "--ngram_ensemble true" in err and "Traceback" not in err


def test_predict_cli_ensemble(ensemble_model_dir, capsys):
    code = run_guarded(predict_main, ["--model", ensemble_model_dir, "--ensemble", "--json", "Wireless over-ear headphones"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = Categorizer.from_pretrained(ensemble_model_dir, device="cpu", ensemble=True).predict("Wireless over-ear headphones")[0]
    assert result["category"] == expected.category


def test_texts_without_shared_terms_are_a_clear_error():
    with pytest.raises(ProdcatError, match="cannot be fitted.*without --ngram_ensemble"):
        NgramModel.fit(["qx", "zv"], ["A > B", "C > D"], ["A > B", "C > D"])


def test_damaged_or_foreign_ngram_folders_are_clear_errors(ensemble_model_dir, tmp_path, capsys):
    from conftest import linked_copy

    damaged = linked_copy(ensemble_model_dir, str(tmp_path / "damaged"))
    weights = os.path.join(damaged, SUBDIR, "weights.safetensors")
    os.remove(weights)  # a hard link: the fixture's file is untouched
    with open(weights, "wb") as handle:
        handle.write(b"not safetensors")
    code = run_guarded(predict_main, ["--model", damaged, "--ensemble", "USB-C charger 65W"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unreadable n-gram model" in err and "Traceback" not in err

    foreign = linked_copy(ensemble_model_dir, str(tmp_path / "foreign"))
    config_path = os.path.join(foreign, SUBDIR, "config.json")
    config = json.load(open(config_path))
    os.remove(config_path)
    config["format"] = "prodcat-ngram-99"
    with open(config_path, "w") as handle:
        json.dump(config, handle)
    with pytest.raises(ProdcatError, match="format 'prodcat-ngram-99'"):
        NgramEnsemble.load(foreign)


def test_ngram_ensemble_without_validation_warns_and_fits_nothing(tmp_path, caplog):
    from prodcat.args import parse_train_args
    from prodcat.training import run_training

    out = str(tmp_path / "model")
    flags = TINY_TRAIN_FLAGS + ["--output_dir", out, "--ngram_ensemble", "true", "--validation_split", "0", "--num_train_epochs", "1"]
    with caplog.at_level("WARNING", logger="prodcat.training"):
        results = run_training(*parse_train_args(flags))
    assert "ngram_ensemble" not in results and not os.path.exists(os.path.join(out, SUBDIR))
    assert any("--ngram_ensemble needs validation data" in record.getMessage() for record in caplog.records)



def test_training_predicts_each_split_once(tmp_path, monkeypatch):
    """Calibration, the ensemble and the report share one pass over validation and one over test."""
    import prodcat.inference
    from prodcat.args import parse_train_args
    from prodcat.training import run_training

    calls: list[int] = []
    original = prodcat.inference.predict_logits

    def counting(model, tokenizer, texts, *args, **kwargs):
        calls.append(len(texts))
        return original(model, tokenizer, texts, *args, **kwargs)

    monkeypatch.setattr(prodcat.inference, "predict_logits", counting)
    out = str(tmp_path / "model")
    results = run_training(*parse_train_args(TINY_TRAIN_FLAGS + ["--output_dir", out, "--ngram_ensemble", "true", "--test_file", SAMPLE]))
    assert {"calibration", "ngram_ensemble", "report"} <= set(results)
    assert calls == [results["calibration"]["num_examples"], len(pd.read_csv(SAMPLE))]

"""The n-gram companion model and its ensemble with the transformer: prodcat's default prediction path
(prodcat.inference.ngram, --ngram_ensemble, --ensemble)."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLE, TINY_TRAIN_FLAGS, clone_model

from prodcat.cli.main import predict_main, run_guarded
from prodcat.core.errors import ProdcatError
from prodcat.core.hierarchy import normalize_path
from prodcat.inference.categorizer import Categorizer
from prodcat.inference.ngram import SUBDIR, NgramEnsemble, NgramModel, has_ensemble, log_softmax, pool


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    frame = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    frame["category"] = [normalize_path(c) for c in frame.category]
    return frame


@pytest.fixture(scope="module")
def ensemble_model_dir(trained_model_dir) -> str:
    """The shared tiny model: trained with the defaults (so with its n-gram model), the sample as its test file."""
    figures = json.load(open(os.path.join(trained_model_dir, "training_summary.json")))["results"]["ngram_ensemble"]
    assert {"validation_ensemble_accuracy", "validation_transformer_accuracy", "test_macro_f1", "fit_seconds"} <= set(figures)
    return trained_model_dir


def tiny_run(out: str, *flags: str) -> dict:
    """A two-step training run into ``out`` (enough to exercise what happens after training)."""
    from prodcat.training.config import parse_train_args
    from prodcat.training.run import run_training

    return run_training(*parse_train_args(TINY_TRAIN_FLAGS + ["--output_dir", out, "--max_steps", "2", *flags]))


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
    # Both prediction paths are reported, each with its own scores; the default is the pool.
    assert summary["default_predictor"] == "ensemble"
    paths = summary["predictors"]
    assert paths["transformer"]["test_accuracy"] == summary["results"]["test"]["test_accuracy"]
    assert paths["transformer"]["validation_macro_f1"] == summary["results"]["eval"]["eval_macro_f1"]
    assert paths["ensemble"]["test_macro_f1"] == figures["test_macro_f1"]
    assert paths["ensemble"]["validation_accuracy"] == figures["validation_ensemble_accuracy"]
    # The test report scores the default path, the same figures as the summary's.
    report = json.load(open(os.path.join(ensemble_model_dir, "report", "metrics.json")))
    assert report["predictor"] == "ensemble" and report["accuracy"] == pytest.approx(paths["ensemble"]["test_accuracy"])


def test_categorizer_pools_the_stored_models_by_default(ensemble_model_dir, sample):
    texts = sample.description.head(40).tolist()
    plain = Categorizer.from_pretrained(ensemble_model_dir, device="cpu", ensemble=False)
    default = Categorizer.from_pretrained(ensemble_model_dir, device="cpu")
    required = Categorizer.from_pretrained(ensemble_model_dir, device="cpu", ensemble=True)
    assert plain.ensemble is None and default.ensemble is not None and required.ensemble is not None
    stored = NgramEnsemble.load(ensemble_model_dir)
    # Recompute the pool by hand from the stored pieces: transformer logits and SVM decision values.
    scores = pool(plain.logits(texts), stored.model.decisions(texts), stored.scale, stored.weight) / stored.temperature
    expected = np.exp(log_softmax(scores))
    probabilities = default.predict_proba(texts)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(required.predict_proba(texts), expected, atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    predictions = default.predict(texts, threshold=0.5)
    assert [p.category for p in predictions] == [default.labels[i] for i in expected.argmax(axis=1)]
    # pipeline() on the same folder is the transformer alone.
    from transformers import pipeline

    classifier = pipeline("text-classification", model=ensemble_model_dir, device=-1)
    assert [out["label"] for out in classifier(texts)] == [p.category for p in plain.predict(texts)]


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


def test_a_folder_without_ngram_predicts_with_the_transformer_silently(ensemble_model_dir, tmp_path, capsys, caplog):
    """Model folders saved before the n-gram model was the default keep working, with no warning."""
    old = clone_model(ensemble_model_dir, str(tmp_path / "old"))  # files only: no ngram/
    assert has_ensemble(ensemble_model_dir) and not has_ensemble(old)
    with caplog.at_level("WARNING"):
        code = run_guarded(predict_main, ["--model", old, "--json", "USB-C charger 65W"])
    captured = capsys.readouterr()
    assert code == 0 and not [r for r in caplog.records if r.levelname == "WARNING"] and "warn" not in captured.err.lower()
    plain = Categorizer.from_pretrained(ensemble_model_dir, device="cpu", ensemble=False).predict("USB-C charger 65W")[0]
    assert json.loads(captured.out.strip().splitlines()[-1])["category"] == plain.category
    # Asking for the pool where there is none is an error that says what to do.
    code = run_guarded(predict_main, ["--model", old, "--ensemble", "true", "USB-C charger 65W"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no n-gram model" in err and "--ensemble false" in err and "Traceback" not in err
    with pytest.raises(ProdcatError, match="categories differ"):
        NgramEnsemble.load(ensemble_model_dir, labels=["A > B", "C > D"])


def test_predict_cli_uses_the_pool_unless_told_otherwise(ensemble_model_dir, capsys):
    text = "Wireless over-ear headphones"
    found = {}
    for flags in ((), ("--ensemble", "false"), ("--ensemble", "auto")):
        code = run_guarded(predict_main, ["--model", ensemble_model_dir, *flags, "--json", "--top_k", "3", text])
        assert code == 0
        found[flags] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    pooled = Categorizer.from_pretrained(ensemble_model_dir, device="cpu").predict(text, top_k=3)[0]
    plain = Categorizer.from_pretrained(ensemble_model_dir, device="cpu", ensemble=False).predict(text, top_k=3)[0]
    assert found[()]["score"] == pytest.approx(pooled.score, abs=1e-4) and found[()] == found[("--ensemble", "auto")]
    assert found[("--ensemble", "false")]["score"] == pytest.approx(plain.score, abs=1e-4)
    assert pooled.score != pytest.approx(plain.score, abs=1e-4)  # the two paths really differ
    with pytest.raises(SystemExit) as stopped:
        run_guarded(predict_main, ["--model", ensemble_model_dir, "--ensemble", "maybe", text])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "argument --ensemble: 'maybe': use auto, true or false" in err


def test_texts_without_shared_terms_are_a_clear_error():
    with pytest.raises(ProdcatError, match="cannot be fitted.*--ngram_ensemble false"):
        NgramModel.fit(["qx", "zv"], ["A > B", "C > D"], ["A > B", "C > D"])


def test_damaged_or_foreign_ngram_folders_are_clear_errors(ensemble_model_dir, tmp_path, capsys):
    from conftest import linked_copy

    damaged = linked_copy(ensemble_model_dir, str(tmp_path / "damaged"))
    weights = os.path.join(damaged, SUBDIR, "weights.safetensors")
    os.remove(weights)  # a hard link: the fixture's file is untouched
    with open(weights, "wb") as handle:
        handle.write(b"not safetensors")
    code = run_guarded(predict_main, ["--model", damaged, "USB-C charger 65W"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unreadable n-gram model" in err and "--ensemble false" in err and "Traceback" not in err
    assert run_guarded(predict_main, ["--model", damaged, "--ensemble", "false", "USB-C charger 65W"]) == 0

    foreign = linked_copy(ensemble_model_dir, str(tmp_path / "foreign"))
    config_path = os.path.join(foreign, SUBDIR, "config.json")
    config = json.load(open(config_path))
    os.remove(config_path)
    config["format"] = "prodcat-ngram-99"
    with open(config_path, "w") as handle:
        json.dump(config, handle)
    with pytest.raises(ProdcatError, match="format 'prodcat-ngram-99'"):
        NgramEnsemble.load(foreign)


def test_no_validation_rows_fit_no_ngram_model_without_a_warning(tmp_path, caplog):
    out = str(tmp_path / "model")
    with caplog.at_level("INFO", logger="prodcat.training.postfit"):
        results = tiny_run(out, "--validation_split", "0")
    assert "ngram_ensemble" not in results and not os.path.exists(os.path.join(out, SUBDIR))
    messages = [r for r in caplog.records if "n-gram" in r.getMessage()]
    assert messages and all(r.levelname == "INFO" for r in messages) and "transformer alone" in messages[0].getMessage()
    summary = json.load(open(os.path.join(out, "training_summary.json")))
    assert summary["default_predictor"] == "transformer" and set(summary["predictors"]) == {"transformer"}


def test_ngram_ensemble_false_fits_none_and_removes_a_stale_one(ensemble_model_dir, tmp_path):
    import shutil

    # A real copy: training rewrites files in place, which would write through hard links to the shared model.
    out = shutil.copytree(ensemble_model_dir, str(tmp_path / "model"))  # an earlier run's ngram/ is there
    results = tiny_run(out, "--ngram_ensemble", "false")
    assert "ngram_ensemble" not in results and not has_ensemble(out) and has_ensemble(ensemble_model_dir)
    assert Categorizer.from_pretrained(out, device="cpu").ensemble is None
    assert json.load(open(os.path.join(out, "training_summary.json")))["default_predictor"] == "transformer"


def test_an_ngram_model_that_cannot_be_fitted_leaves_the_transformer(tmp_path, monkeypatch, caplog):
    import prodcat.inference.ngram

    def refuse(*args, **kwargs):
        raise ProdcatError("the n-gram model cannot be fitted (no term occurs in 2 texts); train with --ngram_ensemble false")

    monkeypatch.setattr(prodcat.inference.ngram.NgramModel, "fit", refuse)
    out = str(tmp_path / "model")
    with caplog.at_level("WARNING", logger="prodcat.training.postfit"):
        results = tiny_run(out)
    assert "ngram_ensemble" not in results and not has_ensemble(out) and os.path.exists(os.path.join(out, "model.safetensors"))
    assert any("no term occurs" in r.getMessage() and "transformer alone" in r.getMessage() for r in caplog.records)


def test_training_predicts_each_split_once(tmp_path, monkeypatch):
    """Calibration, the ensemble and the report share one pass over validation and one over test."""
    import prodcat.inference.batching
    from prodcat.training.config import parse_train_args
    from prodcat.training.run import run_training

    calls: list[int] = []
    original = prodcat.inference.batching.predict_logits

    def counting(model, tokenizer, texts, *args, **kwargs):
        calls.append(len(texts))
        return original(model, tokenizer, texts, *args, **kwargs)

    monkeypatch.setattr(prodcat.inference.batching, "predict_logits", counting)
    out = str(tmp_path / "model")
    results = run_training(*parse_train_args(TINY_TRAIN_FLAGS + ["--output_dir", out, "--test_file", SAMPLE, "--max_steps", "2"]))
    assert {"calibration", "ngram_ensemble", "report"} <= set(results)
    assert calls == [results["calibration"]["num_examples"], len(pd.read_csv(SAMPLE))]

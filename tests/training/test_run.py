import copy
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from prodcat.modeling.head import fit_head
from prodcat.modeling.loss import TaxonomyLoss, class_weight_vector
from tests.conftest import SAMPLE, linked_copy, same_weights


def test_end_to_end_model_loads_with_pipeline_and_returns_category_paths(trained_model_dir):
    from transformers import pipeline

    files = set(os.listdir(trained_model_dir))
    assert {"model.safetensors", "config.json", "tokenizer.json", "train_results.json", "eval_results.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]  # no pickles anywhere
    categories = set(pd.read_csv(SAMPLE, dtype=str)["category"])
    config = json.load(open(os.path.join(trained_model_dir, "config.json")))
    assert set(config["id2label"].values()) == categories
    classifier = pipeline("text-classification", model=trained_model_dir)
    outputs = classifier(["Wireless over-ear headphones with noise cancelling", "Hardcover mystery novel"])
    assert all(o["label"] in categories and 0 < o["score"] <= 1 for o in outputs)
    eval_results = json.load(open(os.path.join(trained_model_dir, "eval_results.json")))
    assert 0 <= eval_results["eval_accuracy"] <= 1 and "eval_level_1_accuracy" in eval_results
    summary = json.load(open(os.path.join(trained_model_dir, "training_summary.json")))
    assert set(summary["label_counts"]) == categories and summary["num_train"] > summary["num_validation"] > 0
    # Category-name examples are on by default: the model trained on one more row per category, while
    # the summary counts the user's rows only and validation scores real rows only.
    assert summary["hyperparameters"]["category_name_examples"] is True
    assert eval_results["eval_num_examples"] == summary["num_validation"]
    assert sum(summary["label_counts"].values()) == summary["num_train"]
    train_results = json.load(open(os.path.join(trained_model_dir, "train_results.json")))
    assert train_results["train_samples"] == summary["num_train"] + len(categories)
    # Trained in bf16 autocast where the CPU has AMX (the default there), the saved weights are still fp32.
    from safetensors import safe_open

    from prodcat.training.config import _accelerator_available, cpu_has_fast_bf16

    expected_precision = "bf16" if cpu_has_fast_bf16() and not _accelerator_available() else "no"
    assert summary["hyperparameters"]["mixed_precision"] == expected_precision

    with safe_open(os.path.join(trained_model_dir, "model.safetensors"), "pt") as weights:
        assert {weights.get_slice(name).get_dtype() for name in weights.keys()} == {"F32"}


def test_taxonomy_loss_without_extras_is_cross_entropy():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    labels = torch.tensor([0, 2])
    loss = TaxonomyLoss(["A > x", "A > y", "B > z"])({"logits": logits}, labels)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)


def test_taxonomy_loss_adds_parent_level_nll_and_ignores_unseen():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [5.0, 0.0, 0.0]])
    labels = torch.tensor([1, 2, -1000])  # the last row is a category unseen in training
    loss = TaxonomyLoss(["A > x", "A > y", "B > z"], hierarchy_weight=0.5)({"logits": logits}, labels)
    probs = logits[:2].softmax(-1)
    leaf = -torch.log(probs[torch.arange(2), labels[:2]])
    parent = -torch.log(torch.stack([probs[0, 0] + probs[0, 1], probs[1, 2]]))
    expected = (leaf.sum() + 0.5 * parent.sum()) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_class_weights():
    counts = np.array([100, 10, 1])
    assert class_weight_vector(counts, "none") is None
    balanced = class_weight_vector(counts, "balanced").numpy()
    sqrt = class_weight_vector(counts, "sqrt").numpy()
    assert balanced.mean() == pytest.approx(1) and sqrt.mean() == pytest.approx(1)
    assert balanced[2] / balanced[0] == pytest.approx(100)
    assert sqrt[2] / sqrt[0] == pytest.approx(10)


def test_fit_head_separates_linearly_separable_features():
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 16, generator=generator) * 3
    labels = torch.arange(5).repeat_interleave(40)
    features = centers[labels] + torch.randn(200, 16, generator=generator) * 0.5
    weight, bias = fit_head(features, labels, 5)
    accuracy = ((features @ weight.T + bias).argmax(-1) == labels).float().mean().item()
    assert accuracy > 0.97


def test_prior_correction_recovers_rare_class_and_folds_into_bias():
    from prodcat.training.postfit import apply_prior_correction, tune_prior_correction

    labels = ["A > common", "B > rare"]
    counts = np.array([90, 10])
    # A model biased towards the frequent class: rare items score slightly below the common logit.
    logits = np.array([[1.0, 0.5]] * 5 + [[2.0, 0.0]] * 5)
    references = ["B > rare"] * 5 + ["A > common"] * 5
    tau, scores = tune_prior_correction(logits, references, labels, counts, "macro_f1", taus=(0.0, 0.5, 1.0))
    assert scores[0.0] < scores[tau] == 1.0
    assert tau == 0.5  # the smallest strength that fixes it wins ties

    model = torch.nn.Module()
    model.classifier = torch.nn.Linear(2, 2)
    model.config = type("Config", (), {})()
    with torch.no_grad():
        model.classifier.bias.zero_()
    apply_prior_correction(model, counts, tau)
    expected = -tau * np.log(counts / counts.sum())
    assert model.classifier.bias.detach().numpy() == pytest.approx(expected, rel=1e-5)
    assert model.config.prodcat_prior_correction == 0.5


def test_prior_correction_keeps_tau_zero_when_nothing_improves():
    from prodcat.training.postfit import tune_prior_correction

    logits = np.array([[3.0, 0.0], [0.0, 3.0]])
    tau, _ = tune_prior_correction(logits, ["A", "B"], ["A", "B"], np.array([50, 50]))
    assert tau == 0.0


# With --greater_is_better false the "best" epoch is the one with the lowest macro-F1, an early one, so
# keeping it instead of the last is visible in the weights.
@pytest.mark.parametrize(
    "extra, kept",
    [([], "last"), (["--early_stopping_patience", "5", "--greater_is_better", "false"], "best by validation macro_f1")],
)
def test_saved_model_is_the_last_epoch_unless_early_stopping_keeps_the_best(tmp_path, extra, kept):
    from prodcat.training.config import parse_train_args
    from prodcat.training.run import run_training

    out = str(tmp_path / "model")
    flags = ["--train_file", SAMPLE, "--max_train_samples", "64", "--max_seq_length", "16", "--num_train_epochs", "3",
             "--per_device_train_batch_size", "16", "--save_total_limit", "5", "--prior_correction", "off",
             "--disable_tqdm", "true", "--audit", "false", "--seed", "7", "--output_dir", out, *extra]  # fmt: skip
    run_training(*parse_train_args(flags))
    summary = json.load(open(os.path.join(out, "training_summary.json")))
    assert summary["hyperparameters"]["epoch_kept"] == kept
    checkpoints = sorted((f for f in os.listdir(out) if f.startswith("checkpoint-")), key=lambda f: int(f.split("-")[1]))
    assert len(checkpoints) == 3  # one per epoch
    state = json.load(open(os.path.join(out, checkpoints[-1], "trainer_state.json")))
    expected = checkpoints[-1] if kept == "last" else os.path.basename(state["best_model_checkpoint"])
    assert same_weights(out, os.path.join(out, expected))
    if kept != "last":
        assert expected != checkpoints[-1] and not same_weights(out, os.path.join(out, checkpoints[-1]))
        scores = [entry["eval_macro_f1"] for entry in state["log_history"] if "eval_macro_f1" in entry]
        assert state["best_metric"] == min(scores)


def test_refit_on_all_rows_trains_again_on_every_row_with_the_held_out_runs_settings(tmp_path):
    from prodcat.training.config import parse_train_args
    from prodcat.training.run import run_training

    out, test_file = str(tmp_path / "model"), str(tmp_path / "test.csv")
    pd.read_csv(SAMPLE).tail(60).to_csv(test_file, index=False)
    flags = ["--train_file", SAMPLE, "--max_train_samples", "120", "--max_seq_length", "16", "--num_train_epochs", "2",
             "--per_device_train_batch_size", "16", "--disable_tqdm", "true", "--seed", "7", "--ngram_ensemble", "true",
             "--test_file", test_file, "--refit_on_all_rows", "true", "--output_dir", out]  # fmt: skip
    run_training(*parse_train_args(flags))
    first = os.path.join(out, "holdout")
    load = lambda folder, name: json.load(open(os.path.join(folder, name)))  # noqa: E731
    summary, first_summary = load(out, "training_summary.json"), load(first, "training_summary.json")
    held_out = first_summary["num_validation"]
    assert held_out > 0 and first_summary["num_train"] == 120 - held_out
    assert summary["num_train"] == 120 and summary["num_validation"] == held_out
    assert summary["refit_on_all_rows"]["holdout_num_train"] == 120 - held_out
    # The same number of epochs, every row plus one name example per category.
    assert summary["hyperparameters"]["num_train_epochs"] == first_summary["hyperparameters"]["num_train_epochs"]
    categories = len(summary["label_counts"])
    assert load(out, "train_results.json")["train_samples"] == 120 + categories
    assert load(first, "train_results.json")["train_samples"] == 120 - held_out + categories
    # A different model, with the first run's temperature, validation scores and n-gram ensemble.
    assert not same_weights(out, first)
    assert load(out, "config.json")["prodcat_temperature"] == load(first, "config.json")["prodcat_temperature"] != 1.0
    assert load(out, "eval_results.json") == load(first, "eval_results.json")
    assert load(out, "calibration.json") == load(first, "calibration.json") == summary["calibration"]
    assert load(os.path.join(out, "ngram"), "config.json") == load(os.path.join(first, "ngram"), "config.json")
    assert summary["results"]["ngram_ensemble"]["test_macro_f1"] > 0
    assert summary["results"]["test"]["test_macro_f1"] != first_summary["results"]["test"]["test_macro_f1"]
    assert "--refit_on_all_rows" in open(os.path.join(out, "README.md")).read()

    # Resuming a finished run continues the second run from its checkpoint; the first is not trained again.
    first_model_time = os.path.getmtime(os.path.join(first, "model.safetensors"))
    final = linked_copy(out, str(tmp_path / "final"))
    run_training(*parse_train_args(flags + ["--resume_from_checkpoint", "latest"]))
    assert os.path.getmtime(os.path.join(first, "model.safetensors")) == first_model_time
    assert same_weights(out, final)


@pytest.mark.parametrize("resume, first_done, second_checkpoint, runs", [
    (False, False, False, ["first", "second"]),
    (True, False, False, ["first", "second"]),  # interrupted in the first run: it resumes, the second starts fresh
    (True, True, False, ["second"]),  # interrupted before the second run's first checkpoint: it starts fresh
    (True, True, True, ["second"]),  # interrupted in the second run: it resumes
])  # fmt: skip
def test_refit_on_all_rows_runs_and_resumes_the_right_pass(tmp_path, monkeypatch, resume, first_done, second_checkpoint, runs):
    import prodcat.training.run as training
    from prodcat.training.config import parse_train_args

    out = str(tmp_path / "model")
    first = os.path.join(out, "holdout")
    summary = {"num_train": 90, "hyperparameters": {"num_train_epochs": 7}, "results": {"eval": {"eval_accuracy": 0.5}}}

    def finish_first_run():
        os.makedirs(first, exist_ok=True)
        json.dump(summary, open(os.path.join(first, "training_summary.json"), "w"))

    if first_done:
        finish_first_run()
    if second_checkpoint:
        os.makedirs(os.path.join(out, "checkpoint-4"))
        open(os.path.join(out, "checkpoint-4", "trainer_state.json"), "w").write("{}")
    calls = []

    def fake_train_and_save(model_args, data_args, training_args, holdout=None):
        calls.append(("second" if holdout else "first", data_args, copy.deepcopy(training_args), holdout))
        if holdout is None:
            finish_first_run()
        return {}

    monkeypatch.setattr(training, "train_and_save", fake_train_and_save)
    flags = ["--refit_on_all_rows", "true", "--output_dir", out, "--push_to_hub", "true", "--hub_model_id", "me/model"]
    args = parse_train_args(flags + (["--resume_from_checkpoint", "latest"] if resume else []))
    training.run_training(*args)
    assert [call[0] for call in calls] == runs
    for name, data_args, training_args, holdout in calls:
        assert not data_args.refit_on_all_rows
        if name == "first":
            assert training_args.output_dir == first and data_args.validation_split == 0.1
            assert not training_args.push_to_hub  # only the final model is pushed
            assert training_args.resume_from_checkpoint == ("latest" if resume else None)
        else:
            assert training_args.output_dir == out and data_args.validation_split == 0
            assert training_args.push_to_hub and training_args.num_train_epochs == 7  # the first run's epochs
            assert holdout.validation_results == {"eval_accuracy": 0.5}
            assert training_args.resume_from_checkpoint == ("latest" if second_checkpoint else None)

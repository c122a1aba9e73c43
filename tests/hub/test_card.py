"""The generated model card: renders from a trained output directory, and its metadata is what the
Hub reads (checked with huggingface_hub's own parsers: ``metadata_load``, ``ModelCard``,
``model_index_to_eval_results``). Most tests use small synthetic output directories (config.json +
training_summary.json + results files, no weights) so that every branch of the card is covered
without training; one test uses the shared ``trained_model_dir`` fixture.
"""

from __future__ import annotations

import json
import os
import re
import statistics

import pytest
import yaml
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from prodcat.core.errors import ProdcatError
from prodcat.hub import card as model_card
from tests.conftest import linked_copy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))




def write_synthetic_model_dir(
    path,
    labels: list[str],
    counts: dict[str, int] | None = None,
    summary_extra: dict | None = None,
    results: dict | None = None,
    config_extra: dict | None = None,
) -> str:
    """An output directory as training leaves it, minus the weights (the card does not read them)."""
    os.makedirs(path, exist_ok=True)
    config = {"model_type": "bert", "id2label": {str(i): label for i, label in enumerate(labels)}}
    config.update(config_extra or {})
    with open(os.path.join(path, "config.json"), "w") as handle:
        json.dump(config, handle)
    if counts is not None:
        summary = {
            "base_model": "sentence-transformers/all-MiniLM-L6-v2",
            "base_model_is_embedded_default": True,
            "train_file": "catalogue.csv",
            "validation_file": None,
            "test_file": "holdout.csv",
            "text_columns": ["title", "brand"],
            "label_column": "category",
            "validation_split": 0.1,
            "num_train": sum(counts.values()),
            "num_validation": 40,
            "num_test": 50,
            "singleton_classes": 1,
            "unseen_rows": {"validation": 0, "test": 2},
            "label_counts": counts,
            "widget_examples": ["Steel water bottle 1 l", "Kids rain boots size 28"],
            "hyperparameters": {
                "learning_rate": 1e-4, "head_learning_rate": None, "num_train_epochs": 3.0, "max_seq_length": 48, "seed": 1
            },
            "results": {},
        }
        summary.update(summary_extra or {})
        with open(os.path.join(path, "training_summary.json"), "w") as handle:
            json.dump(summary, handle)
    for split, scores in (results or {}).items():
        with open(os.path.join(path, f"{split}_results.json"), "w") as handle:
            json.dump({f"{split}_{k}": v for k, v in scores.items()}, handle)
    return str(path)


LABELS = [
    "Home > Kitchen > Bottles",
    "Home > Kitchen > Knives",
    "Home > Garden > Hoses",
    "Kids | Baby > Shoes > Boots",
    "Kids | Baby > Toys > Blocks",
    "Kids | Baby > Toys > Puzzles",
]
COUNTS = {LABELS[0]: 30, LABELS[1]: 12, LABELS[2]: 0, LABELS[3]: 3, LABELS[4]: 9, LABELS[5]: 1}
TEST_SCORES = {
    "accuracy": 0.8123, "macro_f1": 0.7012, "weighted_f1": 0.8001, "level_1_accuracy": 0.95, "level_1_macro_f1": 0.94,
    "level_2_accuracy": 0.88, "level_2_macro_f1": 0.8, "level_3_accuracy": 0.8123, "hierarchical_f1": 0.87,
    "num_examples": 50, "runtime": 1.5,
}
EVAL_SCORES = {
    "accuracy": 0.83, "macro_f1": 0.72, "weighted_f1": 0.82, "level_1_accuracy": 0.96, "level_2_accuracy": 0.9, "hierarchical_f1": 0.9,
    "num_examples": 40,
}


@pytest.fixture()
def synthetic_dir(tmp_path) -> str:
    return write_synthetic_model_dir(
        tmp_path / "model", LABELS, COUNTS,
        summary_extra={"unseen_categories": ["Home > Garden > Seeds"], "calibration": {"ece_before": 0.1, "ece_after": 0.03}},
        results={"eval": EVAL_SCORES, "test": TEST_SCORES},
        config_extra={"prodcat_temperature": 1.25},
    )


def sections(text: str) -> dict[str, str]:
    """Markdown body split at ``## `` headings -> {heading: content}."""
    body = text.split("\n---\n", 1)[1]
    parts = re.split(r"^## (.+)$", body, flags=re.M)
    return {parts[i].strip(): parts[i + 1].strip() for i in range(1, len(parts), 2)}


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if cells and cells[0] == first_cell:
                rows.append(cells)
    return rows


def test_template_is_the_top_level_model_card_md():
    assert os.path.samefile(model_card.template_path(), os.path.join(ROOT, "model_card.md"))


def test_card_of_trained_model_parses_with_huggingface_hub(trained_model_dir, tmp_path):
    out = linked_copy(trained_model_dir, str(tmp_path / "model"))
    path = model_card.write_model_card(out, license="apache-2.0", hub_model_id="acme/prodcat-sample")
    assert path == os.path.join(out, "README.md")
    with open(os.path.join(out, "config.json")) as handle:
        labels = list(json.load(handle)["id2label"].values())
    with open(os.path.join(out, "training_summary.json")) as handle:
        summary = json.load(handle)
    with open(os.path.join(out, "eval_results.json")) as handle:
        eval_results = json.load(handle)

    meta = metadata_load(path)
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-classification"
    assert meta["base_model"] == summary["base_model"]
    assert meta["license"] == "apache-2.0"
    assert "prodcat" in meta["tags"]
    assert [w["text"] for w in meta["widget"]] == summary["widget_examples"][:5]
    name, evals = model_index_to_eval_results(meta["model-index"])
    assert name == "prodcat-sample"
    # With ngram/ (training fits it by default) the model-index names say whose scores they are.
    ngram = os.path.isfile(os.path.join(out, "ngram", "config.json"))
    suffix = " (transformer alone)" if ngram else ""
    by_name = {e.metric_name: e for e in evals}
    assert by_name[f"Validation Accuracy{suffix}"].metric_value == pytest.approx(eval_results["eval_accuracy"], abs=1e-4)
    assert by_name[f"Validation Macro-F1{suffix}"].metric_value == pytest.approx(eval_results["eval_macro_f1"], abs=1e-4)
    assert by_name[f"Validation Level 1 accuracy{suffix}"].metric_value == pytest.approx(
        eval_results["eval_level_1_accuracy"], abs=1e-4
    )
    tested = os.path.isfile(os.path.join(out, "test_results.json"))  # the shared model has a test file
    assert {e.dataset_split for e in evals} == ({"validation", "test"} if tested else {"validation"})

    text = open(path, encoding="utf-8").read()
    card = ModelCard.load(path)
    assert ModelCard(card.content).content == card.content  # the Hub's own round trip is stable
    assert card.data.to_dict() == yaml.safe_load(text.split("---\n")[1])
    assert f"{len(labels)} categories" in text
    assert f"| Train | {summary['num_train']:,} |" in text
    assert 'model="acme/prodcat-sample"' in text
    assert tmp_path.as_posix() not in text and trained_model_dir not in text  # no local paths
    for leftover in ("{{", "{%", "None", "nan", "[More Information Needed]"):
        assert leftover not in text
    assert all(content for content in sections(text).values()), "a section is empty"
    assert ("Prediction paths" in sections(text)) == ngram


def test_taxonomy_results_and_limitations_come_from_the_files(synthetic_dir):
    text = str(model_card.render_model_card(synthetic_dir, license="mit", dataset_id="acme/shop-products", dataset_name="Acme shop"))
    parts = sections(text)

    # Per-level category counts and training examples (min / median / max), computed independently.
    for level, expected_nodes in ((1, 2), (2, 4), (3, 6)):
        per_node: dict[str, int] = {}
        for label, n in COUNTS.items():
            node = " > ".join(label.split(" > ")[:level])
            per_node[node] = per_node.get(node, 0) + n
        values = list(per_node.values())
        name = "3 (leaf)" if level == 3 else str(level)
        (row,) = table_rows(parts["Taxonomy"], name)
        median = statistics.median(values)
        median_text = f"{int(median):,}" if float(median).is_integer() else f"{median:,.1f}"
        assert row[1:] == [str(expected_nodes), f"{min(values):,} / {median_text} / {max(values):,}"]
    assert "Kids \\| Baby" in parts["Taxonomy"]  # a pipe in a category name cannot break the table

    (acc,) = table_rows(parts["Results"], "Accuracy (leaf)")
    assert acc[1:] == [f"{EVAL_SCORES['accuracy']:.3f}", f"{TEST_SCORES['accuracy']:.3f}"]
    assert table_rows(parts["Results"], "Level 2 accuracy")[0][1:] == ["0.900", "0.880"]
    assert not table_rows(parts["Results"], "Level 3 accuracy")  # the leaf level is the accuracy row

    limitations = parts["Intended use and limitations"]
    assert "`Home > Garden > Hoses`" in limitations  # no training example: never predicted
    assert "`Home > Garden > Seeds`" in limitations and "2 test rows" in limitations  # unseen in training
    assert "2 categories had fewer than 5 training examples" in limitations
    assert "T = 1.250" in parts["How to use"] and "0.100 → 0.030" in parts["How to use"]
    assert parts["License"].startswith("`mit`")

    meta = ModelCard(text).data.to_dict()
    assert meta["datasets"] == ["acme/shop-products"]
    _, evals = model_index_to_eval_results(meta["model-index"])
    test = {e.metric_name: e for e in evals if e.dataset_split == "test"}
    assert {e.dataset_type for e in evals} == {"acme/shop-products"} and {e.dataset_name for e in evals} == {"Acme shop"}
    assert test["Test Accuracy"].metric_value == pytest.approx(TEST_SCORES["accuracy"], abs=1e-4)
    assert test["Test Weighted-F1"].metric_args == {"average": "weighted"}
    assert test["Test Hierarchical F1"].metric_value == pytest.approx(TEST_SCORES["hierarchical_f1"])
    assert {"Test Level 1 accuracy", "Test Level 2 accuracy"} <= set(test) and "Test Level 3 accuracy" not in test


@pytest.mark.parametrize(
    ("summary_extra", "validation_source", "train_only_sentence"),
    [
        ({}, "10% of the training file, stratified by category", "1 category with a single example stayed whole in train"),
        (
            {"singleton_classes": None, "train_only_classes": 312, "validation_min_category_rows": 20},
            "10% of the training file, stratified by category, drawn from the categories with 20+ rows",
            "312 categories with fewer than 20 examples stayed whole in train",
        ),
    ],
    ids=["summary-before-the-threshold", "threshold-20"],
)
def test_data_section_says_which_categories_were_held_out(tmp_path, summary_extra, validation_source, train_only_sentence):
    model_dir = write_synthetic_model_dir(tmp_path / "model", LABELS, COUNTS, summary_extra=summary_extra)
    data = sections(str(model_card.render_model_card(model_dir)))["Training data"]
    (validation_row,) = table_rows(data, "Validation")
    assert validation_row[2] == validation_source
    assert train_only_sentence in data


def test_threshold_coverage_and_onnx_come_from_the_files(synthetic_dir):
    before = str(model_card.render_model_card(synthetic_dir))
    assert "--threshold 0.8" in before and "an example value" in before  # the predictor's flag, example value
    assert "Share of products" not in before and "onnx" not in before
    os.makedirs(os.path.join(synthetic_dir, "report"))
    curve = {
        "thresholds": [0.0, 0.5, 0.7, 0.8, 0.9, 1.0],
        "coverage": [1.0, 0.9, 0.75, 0.6, 0.4, 0.0],
        "accuracy": [0.8, 0.85, 0.9, 0.95, 0.99, None],
    }
    with open(os.path.join(synthetic_dir, "report", "metrics.json"), "w") as handle:
        json.dump({"backoff_threshold": 0.45, "coverage_curve": curve, "num_examples": 50}, handle)
    os.makedirs(os.path.join(synthetic_dir, "onnx"))
    after = model_card.render_model_card(synthetic_dir)
    text = str(after)
    assert "--threshold 0.45" in text and "the value chosen for this model" in text
    assert table_rows(sections(text)["Results"], "0.8")[0][1:] == ["60.0%", "0.950"]
    assert "onnx" in after.data.tags and "`onnx/`" in text


def test_minimal_directory_gives_a_short_valid_card(tmp_path):
    """Only config.json (e.g. a model trained elsewhere): no invented facts, no empty sections."""
    out = write_synthetic_model_dir(tmp_path / "bare", ["Books", "Games", "Music"])
    text = str(model_card.render_model_card(out))
    meta = ModelCard(text).data.to_dict()
    assert "model-index" not in meta and "base_model" not in meta and "widget" not in meta
    assert meta["license"] == model_card.DEFAULT_LICENSE
    parts = sections(text)
    assert {"Results", "Training data", "Training"}.isdisjoint(parts)
    assert all(parts.values())
    assert "one of 3 categories" in text and "None" not in text


def test_local_base_model_is_not_claimed_as_a_hub_model(tmp_path):
    out = write_synthetic_model_dir(
        tmp_path / "m", LABELS, COUNTS,
        summary_extra={"base_model": "/home/alice/models/my-encoder", "base_model_is_embedded_default": False},
    )
    text = str(model_card.render_model_card(out))
    assert "base_model" not in ModelCard(text).data.to_dict()
    assert "/home/alice" not in text and "`my-encoder`" in text


def test_license_is_checked_and_kept_on_rewrite(synthetic_dir):
    assert model_card.check_license(" Apache-2.0 ") == "apache-2.0"
    with pytest.raises(ProdcatError, match="not a Hub license id"):
        model_card.check_license("MIT license!")
    model_card.write_model_card(synthetic_dir, license="cc-by-4.0")
    model_card.write_model_card(synthetic_dir, hub_model_id="acme/m")  # no license given: keep the card's
    assert metadata_load(os.path.join(synthetic_dir, "README.md"))["license"] == "cc-by-4.0"


def test_write_is_atomic_and_a_failed_render_keeps_the_old_card(synthetic_dir):
    path = model_card.write_model_card(synthetic_dir)
    old = open(path, encoding="utf-8").read()
    with pytest.raises(ProdcatError, match="not a Hub dataset id"):
        model_card.write_model_card(synthetic_dir, dataset_id="bad id with spaces")
    assert open(path, encoding="utf-8").read() == old
    assert not [n for n in os.listdir(synthetic_dir) if n.endswith(".partial")]


def test_output_dir_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(ProdcatError, match="no readable config.json"):
        model_card.write_model_card(str(tmp_path))
    with pytest.raises(ProdcatError, match="no such directory"):
        model_card.write_model_card(str(tmp_path / "missing"))


def test_flat_taxonomy_has_no_level_or_hierarchical_rows(tmp_path):
    labels = ["Cameras", "Fridges", "Mobile Phones"]
    counts = {"Cameras": 40, "Fridges": 25, "Mobile Phones": 60}
    scores = {"accuracy": 0.97, "macro_f1": 0.96, "weighted_f1": 0.97, "level_1_accuracy": 0.97, "hierarchical_f1": 0.97}
    out = write_synthetic_model_dir(tmp_path / "flat", labels, counts, results={"test": scores})
    text = str(model_card.render_model_card(out))
    parts = sections(text)
    assert "one of 3 categories" in text
    assert [row[0] for row in table_rows(parts["Taxonomy"], "Mobile Phones")] == ["Mobile Phones"]
    assert table_rows(parts["Taxonomy"], "Mobile Phones")[0][1] == "60"
    assert not table_rows(parts["Results"], "Level 1 accuracy") and not table_rows(parts["Results"], "Hierarchical F1")
    assert "--threshold" not in text  # back-off needs parent levels
    _, evals = model_index_to_eval_results(ModelCard(text).data.to_dict()["model-index"])
    assert {e.metric_name for e in evals} == {"Test Accuracy", "Test Macro-F1", "Test Weighted-F1"}
    assert "hierarchical-classification" not in ModelCard(text).data.tags


# --------------------------------------------------------------------------------------------
# The n-gram model (ngram/): both prediction paths, and which one each figure describes
# --------------------------------------------------------------------------------------------

PATHS = {
    # The transformer's test scores are left to test_results.json (TEST_SCORES): the card fills them from there.
    "transformer": {"validation_accuracy": 0.71, "validation_macro_f1": 0.55},
    "ensemble": {"validation_accuracy": 0.73, "validation_macro_f1": 0.57, "test_accuracy": 0.84, "test_macro_f1": 0.74},
}
POOLED_ROW = "transformer + n-gram model (prodcat's default)"
TRANSFORMER_TEST_PAIR = f"{TEST_SCORES['accuracy']:.3f} / {TEST_SCORES['macro_f1']:.3f}"  # from test_results.json


def add_ngram_folder(model_dir: str, weight: float = 0.3) -> None:
    """``ngram/`` as training leaves it (the card reads only its config's weight)."""
    os.makedirs(os.path.join(model_dir, "ngram"))
    with open(os.path.join(model_dir, "ngram", "config.json"), "w") as handle:
        json.dump({"format": "prodcat-ngram-1", "weight": weight, "scale": 5.0}, handle)
    with open(os.path.join(model_dir, "ngram", "vocabulary.json"), "w") as handle:
        json.dump({"word": ["steel", "steel bottle"], "char": ["st"]}, handle)


def write_ensemble_report(model_dir: str, predictor: str | None) -> None:
    """``report/metrics.json`` with a coverage curve, scored by ``predictor`` (None: a report from before the key)."""
    os.makedirs(os.path.join(model_dir, "report"), exist_ok=True)
    curve = {"thresholds": [0.5, 0.8], "coverage": [0.9, 0.6], "accuracy": [0.85, 0.95]}
    payload = {"coverage_curve": curve, "num_examples": 50} | ({"predictor": predictor} if predictor else {})
    with open(os.path.join(model_dir, "report", "metrics.json"), "w") as handle:
        json.dump(payload, handle)


@pytest.fixture()
def ngram_dir(tmp_path) -> str:
    out = write_synthetic_model_dir(
        tmp_path / "model", LABELS, COUNTS,
        summary_extra={"default_predictor": "ensemble", "predictors": PATHS},
        results={"eval": EVAL_SCORES, "test": TEST_SCORES},
        config_extra={"prodcat_temperature": 1.25},
    )
    add_ngram_folder(out)
    return out


def test_card_with_ngram_shows_both_prediction_paths_and_whose_scores_are_whose(ngram_dir):
    text = str(model_card.render_model_card(ngram_dir, hub_model_id="acme/grocery"))
    parts = sections(text)
    paths = parts["Prediction paths"]
    header = next(line for line in paths.splitlines() if line.startswith("| Prediction path"))
    assert header == "| Prediction path | Loaded by | Validation accuracy / macro-F1 | Test accuracy / macro-F1 |"
    (pooled,) = table_rows(paths, POOLED_ROW)
    (alone,) = table_rows(paths, "transformer alone")
    assert pooled[2:] == ["0.730 / 0.570", "0.840 / 0.740"]
    assert alone[2:] == ["0.710 / 0.550", TRANSFORMER_TEST_PAIR]
    assert "`pip install prodcat`" in pooled[1] and '`Categorizer.from_pretrained("acme/grocery")`' in pooled[1]
    assert "`prodcat predict --model acme/grocery`" in pooled[1]
    assert '`pipeline("text-classification", model="acme/grocery")`' in alone[1]
    assert "`prodcat predict --model acme/grocery --ensemble false`" in alone[1]
    assert "linear SVM" in paths and "no pickle" in paths and "0.3 here" in paths and "`pipeline()` gives the transformer alone" in paths
    # The privacy note: what the vocabulary holds, and the flags that leave it out.
    assert "`ngram/vocabulary.json` lists the words and word pairs" in paths and "anyone who downloads" in paths
    assert "train with `--ngram_ensemble false`" in paths and "--hub_model_id org/name --ngram_ensemble false`" in paths

    # The headline, the results table and the model-index are the transformer's, and say so.
    assert (
        f"On the held-out test set (50 products), the transformer alone (what `pipeline()` loads): accuracy "
        f"**{TEST_SCORES['accuracy']:.3f}**" in text
    )
    assert "Pooled with its n-gram model, as prodcat predicts by default: accuracy **0.840**, macro-F1 0.740." in text
    assert parts["Results"].startswith("Scores of the transformer alone, as `pipeline()` loads it")
    _, evals = model_index_to_eval_results(ModelCard(text).data.to_dict()["model-index"])
    assert evals and all(e.metric_name.endswith(" (transformer alone)") for e in evals)
    by_name = {e.metric_name: e.metric_value for e in evals}
    assert by_name["Test Accuracy (transformer alone)"] == pytest.approx(TEST_SCORES["accuracy"], abs=1e-4)

    # How to use: the default command pools, `--ensemble false` is the transformer alone; no opt-in `--ensemble`.
    how_to = parts["How to use"]
    assert "prodcat predict --model acme/grocery 'Steel water bottle 1 l'  # transformer + n-gram model" in how_to
    assert "prodcat predict --model acme/grocery --ensemble false 'Steel water bottle 1 l'" in how_to
    assert not re.search(r"--ensemble(?! false)", text)
    assert 'Categorizer.from_pretrained("acme/grocery")  # ensemble=False: the transformer alone' in how_to


def test_card_without_ngram_says_nothing_about_it(tmp_path, synthetic_dir):
    """No ngram/ (or a push that leaves it out): the transformer alone, worded as before."""
    with open(os.path.join(synthetic_dir, "training_summary.json")) as handle:
        summary = json.load(handle)
    summary.update(default_predictor="transformer", predictors={"transformer": PATHS["transformer"]})
    with open(os.path.join(synthetic_dir, "training_summary.json"), "w") as handle:
        json.dump(summary, handle)
    left_out = write_synthetic_model_dir(
        tmp_path / "left-out", LABELS, COUNTS, summary_extra={"predictors": PATHS}, results={"test": TEST_SCORES}
    )
    add_ngram_folder(left_out)
    cards = [model_card.render_model_card(synthetic_dir), model_card.render_model_card(left_out, include_ngram=False)]
    for card in cards:
        text = str(card)
        assert "Prediction paths" not in sections(text)
        assert "ngram" not in text and "n-gram" not in text and "--ensemble" not in text and "transformer alone" not in text
        assert f"On the held-out test set (50 products): accuracy **{TEST_SCORES['accuracy']:.3f}**" in text
        _, evals = model_index_to_eval_results(card.data.to_dict()["model-index"])
        assert "Test Accuracy" in {e.metric_name for e in evals}


def test_old_summary_with_results_ngram_ensemble_still_renders(tmp_path):
    """Summaries from before ``predictors``: the figures of ``results.ngram_ensemble`` fill the table."""
    old = {
        "validation_transformer_accuracy": 0.74, "validation_ensemble_accuracy": 0.76,
        "validation_transformer_macro_f1": 0.59, "validation_ensemble_macro_f1": 0.61,
        "test_accuracy": 0.79, "test_macro_f1": 0.65,
    }
    out = write_synthetic_model_dir(
        tmp_path / "old", LABELS, COUNTS, summary_extra={"results": {"ngram_ensemble": old}}, results={"test": TEST_SCORES}
    )
    add_ngram_folder(out)
    paths = sections(str(model_card.render_model_card(out, hub_model_id="acme/old")))["Prediction paths"]
    assert table_rows(paths, POOLED_ROW)[0][2:] == ["0.760 / 0.610", "0.790 / 0.650"]
    assert table_rows(paths, "transformer alone")[0][2:] == ["0.740 / 0.590", TRANSFORMER_TEST_PAIR]


def test_ngram_without_test_scores_has_no_test_column(tmp_path):
    out = write_synthetic_model_dir(
        tmp_path / "m", LABELS, COUNTS,
        summary_extra={"predictors": {"transformer": PATHS["transformer"], "ensemble": {"validation_accuracy": 0.73}}},
        results={"eval": EVAL_SCORES},
    )
    add_ngram_folder(out)
    paths = sections(str(model_card.render_model_card(out)))["Prediction paths"]
    assert "Test accuracy" not in paths
    assert table_rows(paths, POOLED_ROW)[0][2:] == ["0.730 / –"]


@pytest.mark.parametrize(
    ("predictor", "include_ngram", "expected"),
    [
        ("ensemble", True, "transformer + n-gram model, prodcat's default"),
        (None, True, "the transformer alone"),  # reports from before the key scored the transformer
        ("ensemble", False, None),  # a pooled report on a card without the n-gram model: left out
        ("transformer", False, ""),
    ],
)
def test_coverage_table_names_the_prediction_path_it_scored(ngram_dir, predictor, include_ngram, expected):
    write_ensemble_report(ngram_dir, predictor)
    results = sections(str(model_card.render_model_card(ngram_dir, include_ngram=include_ngram)))["Results"]
    if expected is None:
        assert "Share of products" not in results
        return
    assert table_rows(results, "0.8")[0][1:] == ["60.0%", "0.950"]
    source = "evaluation report `report/metrics.json`, 50 products" + (f"; {expected}" if expected else "")
    assert f"Leaf predictions by score ({source}): keeping only" in results

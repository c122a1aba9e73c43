"""Helpers of the benchmark scripts (the scripts themselves print figures; they are not timed here)."""

from __future__ import annotations

import os
import sys

import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

from common import write_benchmarks_block  # noqa: E402
from few_shot import sample_per_category  # noqa: E402
from significance import paired_bootstrap  # noqa: E402


def test_sample_per_category_caps_keeps_small_categories_and_nests():
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(23)], "category": ["a"] * 20 + ["b"] * 2 + ["c"]})
    small, large = sample_per_category(frame, 4, seed=0), sample_per_category(frame, 8, seed=0)
    assert small.category.value_counts().to_dict() == {"a": 4, "b": 2, "c": 1}
    assert large.category.value_counts().to_dict() == {"a": 8, "b": 2, "c": 1}
    assert set(small.text) <= set(large.text)  # each smaller set is a subset of the larger ones
    assert set(sample_per_category(frame, 4, seed=1).text) != set(small.text)  # the seed decides which rows


def test_benchmarks_block_is_replaced_in_place_or_appended(tmp_path):
    path = str(tmp_path / "BENCHMARKS.md")
    with open(path, "w") as handle:
        handle.write("# Benchmarks\n\nintro\n<!-- speed:start -->\nold table\n<!-- speed:end -->\n\nnotes stay\n")
    write_benchmarks_block("speed", "new table", path)
    write_benchmarks_block("curve", "curve table", path)
    text = open(path).read()
    assert "old table" not in text and "<!-- speed:start -->\nnew table\n<!-- speed:end -->\n\nnotes stay" in text
    assert text.rstrip().endswith("<!-- curve:start -->\ncurve table\n<!-- curve:end -->")


def test_paired_bootstrap_of_macro_f1_differences():
    references = ["a"] * 30 + ["b"] * 30 + ["c"] * 4
    baseline = ["a"] * 30 + ["b"] * 30 + ["b"] * 4  # never finds the rare category
    better = references[:]  # perfect
    worse = ["a"] * 64
    deltas = paired_bootstrap(references, {"base": baseline, "better": better, "same": baseline[:], "worse": worse}, "base", 200, seed=1)
    assert set(deltas) == {"better", "same", "worse"}
    assert (deltas["same"] == 0).all()
    assert (deltas["worse"] < 0).all()
    # "better" differs from the baseline only on the rare category's rows: the lead is never negative, is 0
    # on a resample that drew none of them, and varies with how many it drew.
    assert (deltas["better"] >= 0).all() and deltas["better"].mean() > 0 and deltas["better"].std() > 0

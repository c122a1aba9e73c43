import numpy as np
import pytest

from prodcat.core.hierarchy import ancestors, level_membership, max_depth, normalize_path, path_prefix


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Electronics>Audio", "Electronics > Audio"),
        ("Electronics > Audio ", "Electronics > Audio"),
        ("  Electronics  >   Audio  >  Head   phones", "Electronics > Audio > Head phones"),
        ("A >> B", "A > B"),
        ("A > B >", "A > B"),
        ("Flat", "Flat"),
    ],
)
def test_normalize_path_variants_collapse(raw, expected):
    assert normalize_path(raw) == expected


def test_normalize_path_custom_separator():
    assert normalize_path("Home/Kitchen / Pans", "/") == "Home > Kitchen > Pans"
    assert normalize_path("Home|Kitchen", "|") == "Home > Kitchen"


def test_prefix_and_ancestors_handle_ragged_depths():
    assert path_prefix("A > B > C", 2) == "A > B"
    assert path_prefix("A", 3) == "A"
    assert ancestors("A > B > C") == ["A", "A > B", "A > B > C"]
    assert max_depth(["A", "A > B > C", "D > E"]) == 3


def test_level_membership_groups_leaves_under_parents():
    labels = ["A > x", "A > y", "B > z"]
    nodes, index = level_membership(labels, 1)
    assert nodes == ["A", "B"]
    assert index.tolist() == [0, 0, 1]
    probs = np.array([0.5, 0.3, 0.2])
    parent = np.zeros(len(nodes))
    np.add.at(parent, index, probs)
    assert parent.tolist() == pytest.approx([0.8, 0.2])

"""rac.labels: label specs as callers pass them, flat label sets, and chunks that fit a pass."""

from __future__ import annotations

import warnings

import pytest

from rac.labels import LabelSet, check_label, flatten_labels, nest_scores, parse_labels

GROUPS = {"sentiment": ["positive", "negative"], "topic": {"tech": ["phones"], "trips": ["flights"]}}
FLAT = ["sentiment.positive", "sentiment.negative", "topic.tech.phones", "topic.trips.flights"]


def test_groups_flatten_to_dotted_names_and_nest_back() -> None:
    assert flatten_labels(GROUPS) == FLAT
    assert flatten_labels(["a", "b"]) == ["a", "b"] and flatten_labels("a") == ["a"]
    scores = {name: float(i) for i, name in enumerate(FLAT)}
    nested = nest_scores(GROUPS, scores)
    assert nested == {"sentiment": {"positive": 0.0, "negative": 1.0}, "topic": {"tech": {"phones": 2.0}, "trips": {"flights": 3.0}}}
    assert nest_scores(["a", "b"], {"a": 0.5, "b": 0.1}) == {"a": 0.5, "b": 0.1}


def test_shared_and_per_text_specs() -> None:
    specs, names = parse_labels(["a", "b"], 3)
    assert names == [("a", "b")] * 3 and specs == [["a", "b"]] * 3
    specs, names = parse_labels([["a"], GROUPS], 2)
    assert names == [("a",), tuple(FLAT)] and specs[1] is GROUPS
    assert parse_labels(GROUPS, 2)[1] == [tuple(FLAT)] * 2  # a dict is one spec shared by all texts
    with pytest.raises(ValueError, match="3 texts"):
        parse_labels([["a"], ["b"]], 3)


def test_duplicates_are_dropped_with_one_warning_for_the_call() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, names = parse_labels([["x", "y", "x"], ["y", "y", "z"]], 2)
    assert names == [("x", "y"), ("y", "z")]
    assert len(caught) == 1 and "['x', 'y']" in str(caught[0].message)


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [([], ValueError, "no labels"), ([[]], ValueError, "no labels"), ("a,b", TypeError, "list or a dict"),
     (["a", 2], TypeError, "must be strings"), (["a", " "], ValueError, "empty"),
     (["a<<SEP>>b"], ValueError, "marker"), ({"g<</EXAMPLE>>": ["a"]}, ValueError, "marker")],
)
def test_bad_labels_are_clear_errors(labels, error, match) -> None:
    with pytest.raises(error, match=match):
        parse_labels(labels, 1)


def test_check_label_returns_the_name() -> None:
    assert check_label("book restaurant") == "book restaurant"


def test_chunks_fit_the_budget_and_spread_the_count_evenly() -> None:
    labels = LabelSet(tuple(f"l{i}" for i in range(30)), [[1, 2]] * 30)
    assert labels.chunks(1000, 25) == [(0, 15), (15, 30)]  # 15 + 15, not 25 + 5
    assert labels.chunks(1000, 30) == [(0, 30)]
    assert labels.chunks(20, 25) == [(0, 10), (10, 20), (20, 30)]  # 10 pieces of 2 tokens per 20
    assert labels.chunks(20, 25) is labels.chunks(20, 25)  # cached per (budget, max_labels)
    assert labels.block_ids(0, 2) == [1, 2, 1, 2]
    uneven = LabelSet(("a", "b", "c"), [[1], [2, 2, 2], [3]])
    assert uneven.chunks(4, 25) == [(0, 2), (2, 3)]
    with pytest.raises(ValueError, match="'b' alone is longer than the 2 tokens"):
        uneven.chunks(2, 25)

"""read_corpus on well-formed CSV/JSONL/Parquet (the bad-input table lives in test_cli_data.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from rac.corpus import parse_labels, read_corpus
from rac.formatting import RACExample

REPO = Path(__file__).resolve().parents[1]


def test_jsonl_lists(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"text": "hi there", "labels": ["greet"], "id": 7}\n\n{"text": "bye", "labels": ["leave", "greet", "leave"]}\n'
    )
    rows = read_corpus(path)
    assert rows == [RACExample("hi there", ("greet",)), RACExample("bye", ("leave", "greet"))]


def test_csv_delimited_and_json_list_labels(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    pd.DataFrame(
        {"body": ["a b", "c d", "None"], "tags": ["x; y", '["z", "x"]', "NA"], "key": ["r1", "r2", "r3"]}
    ).to_csv(path, index=False)
    rows = read_corpus(path, text_col="body", labels_col="tags", label_sep=";", id_col="key")
    assert [r.true_labels for r in rows] == [("x", "y"), ("z", "x"), ("NA",)]  # "None"/"NA" are real words, not NaN
    assert [r.text for r in rows][2] == "None" and rows[0].id == "r1"


def test_parquet_with_all_labels(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    pd.DataFrame(
        {"text": ["t1", "t2"], "labels": [["a"], ["b"]], "all": [["a", "b", "c"], None], "n": [1, 2]}
    ).to_parquet(path)
    rows = read_corpus(path, all_labels_col="all", id_col="n")
    assert rows[0].all_labels == ("a", "b", "c") and rows[1].all_labels is None
    assert rows[0].id == 1 and isinstance(rows[0].id, int)


def test_parse_labels_forms() -> None:
    assert parse_labels(["a", " b "]) == ("a", "b")
    assert parse_labels('["a", "b"]') == ("a", "b")
    assert parse_labels("a|b||c", "|") == ("a", "b", "c")
    assert parse_labels("a|b") == ("a|b",)


def test_repo_sample_is_valid() -> None:
    rows = read_corpus(REPO / "data" / "sample.jsonl")
    assert len(rows) == 280
    labels = sorted({label for r in rows for label in r.true_labels})
    assert len(labels) == 7 and all(sum(r.true_labels == (lab,) for r in rows) == 40 for lab in labels)
    assert len({r.text for r in rows}) == 280
    snips = Path("/work/shared/data/train/snips/train.jsonl")
    if not snips.exists():
        pytest.skip("shared SNIPS data not mounted")
    train = {json.loads(line)["text"] for line in snips.open()}
    assert {r.text for r in rows} <= train  # provenance claim in data/README.md: SNIPS train split only

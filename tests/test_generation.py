"""RAC training-set generator: the seeds' recipe, checked on real embeddings and statistically on synthetic vectors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from rac.embedding import Embedder
from rac.formatting import EXAMPLE_END_TOKEN, EXAMPLE_TOKEN, FALSE_LABEL_TOKEN, TRUE_LABEL_TOKEN, RACExample
from rac.generation import generate_rac_dataset, sample_rac_items, write_jsonl
from rac.index import ExampleIndex

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample.jsonl"
BLOCK = re.compile(re.escape(EXAMPLE_TOKEN) + r" (.*?) " + re.escape(EXAMPLE_END_TOKEN))


def _blocks(text: str) -> list[tuple[str, list[str], list[str]]]:
    """``(example text, true labels, false labels)`` for each example block appended to ``text``."""
    out = []
    for body in BLOCK.findall(text):
        head, *marks = re.split(r" (?=<<(?:TRUE|FALSE)_LABEL>> )", body)
        true = [m.removeprefix(TRUE_LABEL_TOKEN + " ") for m in marks if m.startswith(TRUE_LABEL_TOKEN)]
        false = [m.removeprefix(FALSE_LABEL_TOKEN + " ") for m in marks if m.startswith(FALSE_LABEL_TOKEN)]
        out.append((head, true, false))
    return out


@pytest.fixture(scope="module")
def sample_run() -> tuple[list[RACExample], list[dict], dict]:
    from rac.corpus import read_corpus

    rows = read_corpus(SAMPLE)
    items, summary = generate_rac_dataset(rows, 120, seed=7, embedder=Embedder())
    return rows, items, summary


def test_real_embeddings_recipe(sample_run: tuple[list[RACExample], list[dict], dict]) -> None:
    rows, items, summary = sample_run
    assert len(items) == len(rows) == summary["corpus_rows"]  # untouched rows included
    augmented = 0
    for row, item in zip(rows, items):
        assert set(item) == {"text", "all_labels", "true_labels"}
        assert item["true_labels"] == list(row.true_labels)
        assert set(item["true_labels"]) <= set(item["all_labels"]) and len(item["all_labels"]) == 6  # 1 true + 5 negatives
        assert len(set(item["all_labels"])) == len(item["all_labels"])
        blocks = _blocks(item["text"])
        if not blocks:
            assert item["text"] == row.text
            continue
        augmented += 1
        assert item["text"].startswith(row.text + " " + EXAMPLE_TOKEN) and 1 <= len(blocks) <= 3
        assert row.text not in {b[0] for b in blocks}  # never itself
        for _, true, false in blocks:
            assert true and not set(true) & set(false) and set(false) <= set(item["all_labels"])
    assert augmented == summary["augmented"] == sum(summary["examples_per_sample"].values())
    assert summary["selected"] == 120 and summary["augmented"] + summary["selected_without_neighbours"] == 120
    # SNIPS intents are well separated: retrieved (not noise-replaced) examples mostly share the sample's label
    same = [t == item["true_labels"] for item in items for _, t, _ in _blocks(item["text"])]
    assert np.mean(same) > 0.6


def test_deterministic_for_a_seed(sample_run: tuple[list[RACExample], list[dict], dict]) -> None:
    rows, items, summary = sample_run
    index = ExampleIndex.build(rows, Embedder())
    again, again_summary = generate_rac_dataset(rows, 120, seed=7, index=index)
    assert again == items and again_summary == summary
    other, _ = generate_rac_dataset(rows, 120, seed=8, index=index)
    assert other != items


def _clustered(n_clusters: int = 20, per_cluster: int = 150, dim: int = 64) -> tuple[list[RACExample], np.ndarray]:
    """Synthetic clusters: same-cluster cosine ~0.67 (> 0.5), cross-cluster ~0; label = cluster."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(n_clusters, dim))
    vectors = np.repeat(centers, per_cluster, axis=0) + 0.7 * rng.normal(size=(n_clusters * per_cluster, dim))
    rows = [RACExample(f"item {i}", (f"label {i // per_cluster}",)) for i in range(len(vectors))]
    return rows, vectors.astype(np.float32)


def test_probabilities_statistically() -> None:
    rows, vectors = _clustered()
    index = ExampleIndex.build(rows, vectors=vectors)
    items, summary = generate_rac_dataset(rows, 2500, seed=123, index=index, num_negatives=3)
    per_sample, noise, eligible, dropped = [], 0, 0, 0
    for item in items:
        blocks = _blocks(item["text"])
        if blocks:
            per_sample.append(len(blocks))
        for _, true, false in blocks:
            noise += true != item["true_labels"]  # retrieved neighbours always share the cluster label
            eligible += 1
            dropped += not false
    total = sum(per_sample)
    assert len(per_sample) == 2500 and summary["examples_total"] == total
    # binomial sd: noise sqrt(.21/5000) ~ 0.0065, drop ~ 0.007; tolerance 0.03 is > 4 sd
    assert abs(noise / total - 0.3) < 0.03 and summary["noise_rate_realized"] == pytest.approx(noise / total)
    assert abs(dropped / eligible - 0.5) < 0.03 and summary["drop_false_rate_realized"] == pytest.approx(dropped / eligible)
    shares = np.bincount(per_sample, minlength=4)[1:] / len(per_sample)
    assert np.all(np.abs(shares - 1 / 3) < 0.04)  # 1..3 examples uniformly
    assert summary["replacement_not_disjoint"] == 0
    assert all(len(item["all_labels"]) == 4 for item in items)


def test_all_labels_kept_and_rates_honoured() -> None:
    rows, vectors = _clustered(n_clusters=4, per_cluster=30, dim=16)
    rows = [RACExample(r.text, r.true_labels, all_labels=(*r.true_labels, "other")) for r in rows]
    index = ExampleIndex.build(rows, vectors=vectors)
    items, summary = generate_rac_dataset(rows, 60, seed=1, index=index, noise_rate=0.0, drop_false_rate=1.0)
    assert [item["all_labels"] for item in items] == [list(r.all_labels) for r in rows]
    assert summary["replaced_with_random"] == 0 and summary["rows_with_sampled_negatives"] == 0
    assert all(not false and true == item["true_labels"] for item in items for _, true, false in _blocks(item["text"]))
    untouched, _ = generate_rac_dataset(rows, 0, index=index)
    assert [item["text"] for item in untouched] == [r.text for r in rows]


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n_samples": 10_000}, "n_samples"), ({"noise_rate": 1.5}, "noise_rate"), ({"drop_false_rate": -0.1}, "drop_false_rate"),
     ({"max_examples": 0}, "max_examples")],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    rows, vectors = _clustered(n_clusters=2, per_cluster=5, dim=8)
    with pytest.raises(ValueError, match=match):
        generate_rac_dataset(rows, index=ExampleIndex.build(rows, vectors=vectors), **kwargs)


def test_write_jsonl_is_atomic(tmp_path: Path) -> None:
    out = tmp_path / "train.jsonl"
    write_jsonl([{"text": "a", "all_labels": ["x"], "true_labels": ["x"]}], out)
    assert [json.loads(line) for line in out.read_text().splitlines()] == [{"text": "a", "all_labels": ["x"], "true_labels": ["x"]}]
    with pytest.raises(TypeError):
        write_jsonl([{"text": "b"}, {"text": object()}], out)
    assert json.loads(out.read_text())["text"] == "a"  # old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]


def test_structured_items_and_the_gliclass_text_agree() -> None:
    """``sample_rac_items`` keeps the examples apart; ``generate_rac_dataset`` writes them into the text with
    predict's processor: cut to model tokens (not words), markers spelled out in the data escaped."""
    from rac.inputs import GLiClassProcessor
    from rac.model import DEFAULT_MODEL_DIR, load_tokenizer, read_config

    rows, vectors = _clustered(n_clusters=2, per_cluster=6, dim=8)
    rows = [RACExample(f"{r.text} <<SEP>> unbelievably interconnected {r.text}", r.true_labels) for r in rows]
    index = ExampleIndex.build(rows, vectors=vectors)
    structured, _ = sample_rac_items(rows, 12, seed=3, index=index, noise_rate=0.0)
    items, summary = generate_rac_dataset(rows, 12, seed=3, index=index, noise_rate=0.0, max_example_tokens=5)
    assert summary["params"]["max_example_tokens"] == 5 and summary["params"]["tokenizer"] == "rac default model"
    tokenizer = load_tokenizer(DEFAULT_MODEL_DIR, read_config(DEFAULT_MODEL_DIR))
    processor = GLiClassProcessor(tokenizer, max_example_tokens=5)
    for item, plain in zip(items, structured, strict=True):
        shown = [RACExample.from_dict(e) for e in plain["examples"]]
        assert item["text"] == processor.rac_text(plain["text"], shown, plain["all_labels"])
        assert "<<SEP>>" not in item["text"] and item["text"].startswith(plain["text"].replace("<<SEP>>", "< <SEP>>"))
        for body, _, _ in _blocks(item["text"]):
            assert len(tokenizer(body, add_special_tokens=False)["input_ids"]) == 5  # "item 3 < < sep"
    assert any(plain["examples"] for plain in structured)

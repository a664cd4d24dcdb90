"""Per-label evidence from an index: prototypes kept by add/remove/load, reliability, the kNN share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rac.evidence import IndexStatistics, gather, retrieval_reliability
from rac.formatting import RACExample
from rac.index import ExampleIndex

DIM = 8


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.normal(size=(n, DIM))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_prototypes_follow_add_remove_and_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [RACExample(f"t{i}", ("a",) if i < 3 else ("a", "b"), id=i) for i in range(5)]
    vectors = unit(rng, 5)
    index = ExampleIndex.build(rows, vectors=vectors)
    names, prototypes, counts, version = index.label_prototypes()
    assert names == ["a", "b"] and counts.tolist() == [5, 2]
    expected = vectors.sum(0) / np.linalg.norm(vectors.sum(0))
    assert prototypes[0] == pytest.approx(expected, abs=1e-5)

    index.remove([3, 4])
    names, prototypes, counts, later = index.label_prototypes()
    assert names == ["a"] and counts.tolist() == [3] and later > version  # "b" has no example left
    expected = vectors[:3].sum(0) / np.linalg.norm(vectors[:3].sum(0))
    assert prototypes[0] == pytest.approx(expected, abs=1e-5)

    index.save(tmp_path / "index")
    loaded = ExampleIndex.load(tmp_path / "index")
    assert loaded.label_prototypes()[0] == ["a"]
    assert loaded.label_prototypes()[1] == pytest.approx(prototypes, abs=1e-5)


def test_statistics_refresh_when_the_index_changes_and_reliability_reads_the_graph() -> None:
    rng = np.random.default_rng(1)
    centres = unit(rng, 2)
    # two tight clusters, one label each: every example's nearest other example shares its label
    vectors = np.concatenate([centres[0] + 0.01 * rng.normal(size=(20, DIM)), centres[1] + 0.01 * rng.normal(size=(20, DIM))])
    rows = [RACExample(f"t{i}", ("x",) if i < 20 else ("y",)) for i in range(40)]
    index = ExampleIndex.build(rows, vectors=vectors)
    assert retrieval_reliability(index) == 1.0
    statistics = IndexStatistics(index)
    first = statistics.snapshot()
    assert statistics.snapshot() is first  # nothing changed: cached
    index.add([RACExample("new", ("z",))], vectors=centres[:1])
    second = statistics.snapshot()
    assert second is not first and "z" in second.position
    cosines, indexed = second.prototype_cosines(centres[1], ["x", "y", "unknown"])
    assert indexed.tolist() == [1.0, 1.0, 0.0] and cosines[1] > 0.99 and cosines[2] == 0.0
    # labels shuffled: neighbours no longer share labels
    shuffled = [RACExample(f"t{i}", ("x",) if i % 2 else ("y",)) for i in range(40)]
    assert retrieval_reliability(ExampleIndex.build(shuffled, vectors=vectors)) < 0.8


def test_gather_without_an_index_uses_the_given_examples() -> None:
    shown = [RACExample("a", ("x",), similarity=0.8), RACExample("b", ("y",), similarity=0.6)]
    evidence = gather(np.array([0.1, 0.2, 0.3]), ["x", "y", "z"], shown, None, None, None)
    assert evidence.indexed.tolist() == [1.0, 1.0, 0.0]
    assert evidence.shown.sum() == pytest.approx(1.0) and evidence.nearest == pytest.approx(0.8)
    assert evidence.prototype.tolist() == [0.0, 0.0, 0.0]


def test_linear_probe_matches_scikit_learn_and_names_every_candidate() -> None:
    from sklearn.linear_model import LogisticRegression

    from rac.evidence import PROBE_C, LinearProbe

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, DIM))
    labels = [["a", "b", "c"][i % 3] for i in range(60)]
    vectors[np.arange(60) % 3 == 0] += 2.0
    probe = LinearProbe.fit(vectors, [[label] for label in labels])
    reference = LogisticRegression(C=PROBE_C, max_iter=1000).fit(vectors, labels).predict_proba(vectors)
    assert probe.probabilities(vectors, ["a", "b", "c"]) == pytest.approx(reference, abs=1e-9)
    # candidates in another order, plus one the probe never saw (0)
    assert probe.probabilities(vectors[:3], ["new", "c", "a"])[:, 0].tolist() == [0.0, 0.0, 0.0]
    # two classes: scikit-learn's one-row binary model, read as a distribution
    binary = [["yes"] if i % 3 == 0 else ["no"] for i in range(60)]
    two = LogisticRegression(C=PROBE_C, max_iter=1000).fit(vectors, [b[0] for b in binary]).predict_proba(vectors)
    assert LinearProbe.fit(vectors, binary).probabilities(vectors, ["no", "yes"]) == pytest.approx(two, abs=1e-9)
    # multi-label: one-vs-rest, and a label every example carries is certain
    multi = LinearProbe.fit(vectors, [[label, "all"] for label in labels])
    assert not multi.multinomial
    assert multi.probabilities(vectors[:2], ["all", "a"])[:, 0].tolist() == [1.0, 1.0]

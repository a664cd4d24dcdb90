"""Retriever: top-k above a cosine threshold, never the query itself, batched."""

from __future__ import annotations

import numpy as np
import pytest

from rac.embedding import Embedder
from rac.formatting import RACExample
from rac.index import ExampleIndex
from rac.retrieval import Retriever

CORPUS = [
    ("what's the weather like in paris today", "get weather"),
    ("weather forecast for paris tomorrow", "get weather"),
    ("will it rain in paris this weekend", "get weather"),
    ("is it going to be sunny in paris", "get weather"),
    ("book a table for two at an italian restaurant", "book restaurant"),
    ("reserve a restaurant for six on friday", "book restaurant"),
    ("add this song to my workout playlist", "add to playlist"),
    ("put this track on my chill playlist", "add to playlist"),
]


@pytest.fixture(scope="module")
def index() -> ExampleIndex:
    return ExampleIndex.build([RACExample(t, (label,)) for t, label in CORPUS], Embedder())


def test_defaults_follow_the_seeds(index: ExampleIndex) -> None:
    retriever = Retriever(index)
    assert (retriever.k, retriever.min_similarity) == (3, 0.5)
    [hits] = retriever.retrieve(["weather in paris next week"])
    assert 1 <= len(hits) <= 3
    assert all(h.true_labels == ("get weather",) and h.similarity >= 0.5 for h in hits)
    assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)


def test_query_in_index_never_returns_itself(index: ExampleIndex) -> None:
    texts = [t for t, _ in CORPUS]
    results = Retriever(index, k=3, min_similarity=-1.0).retrieve(texts)
    for text, hits in zip(texts, results):
        assert len(hits) == 3  # over-fetch: dropping the self match still leaves k
        assert text not in {h.text for h in hits}


def test_duplicates_of_the_query_are_all_skipped() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(10, 16)).astype(np.float32)
    vectors[1:4] = vectors[0]  # three more exact copies of row 0's text and vector
    examples = [RACExample("dup" if i < 4 else f"other {i}", ("x",)) for i in range(10)]
    index = ExampleIndex.build(examples, vectors=vectors)
    [hits] = Retriever(index, k=3, min_similarity=-1.0).retrieve(["dup"], vectors=vectors[:1])
    assert len(hits) == 3 and "dup" not in {h.text for h in hits}


def test_k_threshold_and_batching(index: ExampleIndex) -> None:
    retriever = Retriever(index)
    queries = ["rain forecast for paris", "add a tune to my running playlist", "quantum chromodynamics lecture notes"]
    batched = retriever.retrieve(queries)
    single = [retriever.retrieve([q])[0] for q in queries]
    assert [[h.text for h in hits] for hits in batched] == [[h.text for h in hits] for hits in single]
    for b, s in zip(batched, single):  # padding in a batch moves the embeddings by float noise only
        assert [h.similarity for h in b] == pytest.approx([h.similarity for h in s], abs=1e-4)
    assert batched[2] == []  # nothing in the corpus is that close
    assert batched[1][0].true_labels == ("add to playlist",)
    assert len(retriever.retrieve(queries[:1], k=1)[0]) == 1
    assert len(retriever.retrieve(queries[2:], min_similarity=-1.0)[0]) == 3
    strict = retriever.retrieve(queries[:1], min_similarity=0.8)[0]
    assert all(h.similarity >= 0.8 for h in strict) and len(strict) < len(batched[0])


def test_precomputed_vectors_skip_embedding(index: ExampleIndex) -> None:
    retriever = Retriever(index, min_similarity=-1.0)
    vectors = index.vectors([0, 4])
    stored = retriever.retrieve([CORPUS[0][0], CORPUS[4][0]], vectors=vectors)
    recomputed = retriever.retrieve([CORPUS[0][0], CORPUS[4][0]])
    # stored vectors went through hnswlib's float32 normalisation, recomputed ones did not: float noise only
    assert [[h.text for h in hits] for hits in stored] == [[h.text for h in hits] for hits in recomputed]
    for a, b in zip(stored, recomputed):
        assert [h.similarity for h in a] == pytest.approx([h.similarity for h in b], abs=1e-5)


def test_bad_arguments(index: ExampleIndex) -> None:
    with pytest.raises(ValueError, match="k must be"):
        Retriever(index, k=0)
    with pytest.raises(ValueError, match="min_similarity"):
        Retriever(index, min_similarity=1.5)
    with pytest.raises(TypeError):
        Retriever(index).retrieve("one string")
    assert Retriever(index).retrieve([]) == []

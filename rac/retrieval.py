"""Nearest labeled examples for a batch of queries, as the GLiClass RAC seeds retrieved them.

Defaults follow the seeds (paraphrase-MiniLM + HNSW, up to 3 neighbours with cosine > 0.5). A query that
is itself in the index (same text) never gets itself back: that would leak its label into its input.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from rac.formatting import RACExample
from rac.index import ExampleIndex

DEFAULT_K = 3
DEFAULT_MIN_SIMILARITY = 0.5


class Retriever:
    """Top-``k`` examples above a cosine threshold, self-matches removed."""

    def __init__(self, index: ExampleIndex, k: int = DEFAULT_K, min_similarity: float = DEFAULT_MIN_SIMILARITY):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not -1.0 <= min_similarity <= 1.0:
            raise ValueError(f"min_similarity is a cosine in [-1, 1], got {min_similarity}")
        self.index, self.k, self.min_similarity = index, k, min_similarity

    def retrieve(
        self,
        texts: list[str],
        *,
        k: int | None = None,
        min_similarity: float | None = None,
        vectors: np.ndarray | None = None,
    ) -> list[list[RACExample]]:
        """For each text, up to ``k`` examples with ``similarity >= min_similarity``, most similar first.

        ``vectors`` (one unit row per text) skip the embedding step. The search over-fetches by the number of
        exact-text copies of a query in the index, so dropping them still leaves ``k`` candidates.
        """
        if isinstance(texts, str):
            raise TypeError("retrieve takes a list of texts, not a single string")
        k = self.k if k is None else k
        threshold = self.min_similarity if min_similarity is None else min_similarity
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not texts:
            return []
        if vectors is None:
            vectors = self.index.embedder.encode(list(texts))
        if len(vectors) != len(texts):
            raise ValueError(f"got {len(vectors)} vectors for {len(texts)} texts")
        with self.index.reading():  # one state of the index for the self-matches, the search and the hits
            self_ids = [set(self.index.ids_for_text(text)) for text in texts]
            ids, sims = self.index.search(vectors, k + max(len(s) for s in self_ids))
            results = []
            for row_ids, row_sims, skip in zip(ids, sims, self_ids):
                hits = []
                for i, sim in zip(row_ids, row_sims):
                    if i < 0 or i in skip or sim < threshold:
                        continue
                    hits.append(replace(self.index.example(i), similarity=float(sim)))
                    if len(hits) == k:
                        break
                results.append(hits)
        return results

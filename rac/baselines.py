"""The peers a user compares ``rac`` with, on the same sentence embeddings: what five lines of scikit-learn do.

Each function returns an ``(n_queries, n_labels)`` score matrix over the candidate labels, so ``rac eval``
ranks and thresholds them exactly like the classifier's scores. A supervised peer cannot name a label its
corpus has no example of: such labels score 0 (``logreg``, ``knn``) or -1 (``centroid``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rac.evidence import LabelStatistics, LinearProbe, knn_share
from rac.formatting import RACExample


def zero_shot_scores(vectors: np.ndarray, label_vectors: np.ndarray) -> np.ndarray:
    """Cosine between each text and each label name (no corpus at all)."""
    return np.asarray(vectors) @ np.asarray(label_vectors).T


def knn_scores(neighbours: Sequence[Sequence[RACExample]], labels: Sequence[str]) -> np.ndarray:
    """Similarity-weighted vote of each text's nearest examples (``rac.evidence.knn_share``), no cosine cut."""
    if not neighbours:
        return np.zeros((0, len(labels)))
    return np.stack([knn_share(found, labels) for found in neighbours])


def centroid_scores(vectors: np.ndarray, statistics: LabelStatistics, labels: Sequence[str]) -> np.ndarray:
    """Cosine between each text and each label's mean example embedding; -1 for labels with no example."""
    out = np.full((len(vectors), len(labels)), -1.0)
    for i, vector in enumerate(vectors):
        cosines, indexed = statistics.prototype_cosines(vector, labels)
        out[i, indexed > 0] = cosines[indexed > 0]
    return out


def logreg_scores(
    vectors: np.ndarray,
    corpus_vectors: np.ndarray,
    corpus_labels: Sequence[Sequence[str]],
    labels: Sequence[str],
    *,
    multi_label: bool,
) -> np.ndarray:
    """Logistic regression on the corpus embeddings (``rac.evidence.LinearProbe``, the fusion's probe):
    multinomial for single-label sets, one-vs-rest otherwise."""
    if not len(corpus_vectors) or not len(vectors):
        return np.zeros((len(vectors), len(labels)))
    probe = LinearProbe.fit(corpus_vectors, corpus_labels, multinomial=not multi_label)
    return probe.probabilities(vectors, labels)

"""The peers a user compares ``rac`` with, on the same sentence embeddings: what five lines of scikit-learn do.

Each function returns an ``(n_queries, n_labels)`` score matrix over the candidate labels, so ``rac eval``
ranks and thresholds them exactly like the classifier's scores. A supervised peer cannot name a label its
corpus has no example of: such labels score 0 (``logreg``, ``knn``) or -1 (``centroid``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rac.evidence import LabelStatistics, knn_share
from rac.formatting import RACExample

#: Inverse regularisation of the logistic-regression peer: unit-norm sentence embeddings need weaker
#: regularisation than scikit-learn's default ``C=1``, which under-fits them (a separable toy set is missed).
LOGREG_C = 10.0


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
    """Logistic regression (``C=LOGREG_C``) on the corpus embeddings: multinomial for single-label sets,
    one-vs-rest otherwise.

    Probabilities per candidate label; a label with no corpus example scores 0, a label every corpus row
    carries scores 1.
    """
    from sklearn.linear_model import LogisticRegression

    position = {label: j for j, label in enumerate(labels)}
    out = np.zeros((len(vectors), len(labels)))
    if not len(corpus_vectors) or not len(vectors):
        return out
    if not multi_label:
        targets = np.array([position[row[0]] for row in corpus_labels])
        present = np.unique(targets)
        if len(present) == 1:
            out[:, present[0]] = 1.0
            return out
        model = LogisticRegression(C=LOGREG_C, max_iter=1000).fit(corpus_vectors, targets)
        out[:, model.classes_] = model.predict_proba(vectors)
        return out
    indicator = np.zeros((len(corpus_labels), len(labels)), dtype=bool)
    for row, names in enumerate(corpus_labels):
        indicator[row, [position[name] for name in names]] = True
    for j in range(len(labels)):
        column = indicator[:, j]
        if column.all() or not column.any():
            out[:, j] = float(column.all())
            continue
        out[:, j] = LogisticRegression(C=LOGREG_C, max_iter=1000).fit(corpus_vectors, column).predict_proba(vectors)[:, 1]
    return out

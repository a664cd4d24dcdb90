"""What the labeled corpus says about each candidate label of a text, beside the model's own score.

The fusion (``rac.fusion``) turns these numbers into the final score. They come from one query embedding
and one index search per text (the same search that picks the model's examples), plus per-label statistics
of the index that are kept up to date as it grows:

* ``shown``: similarity-weighted share of the examples shown to the model that carry the label;
* ``knn``: share of the label among the ``KNN_DEPTH`` nearest examples, weighted by
  ``softmax(cosine / KNN_TEMPERATURE)`` and without the similarity cut (the kNN peer users compare with);
* ``prototype``: cosine between the text and the label's prototype (mean embedding of its examples);
* ``indexed``: whether the index holds any example of the label (a label added this week has none);
* ``reliability``: how often an indexed example's nearest other example shares one of its labels; high for
  topics, low for sentiment, where neighbours say little and the model should decide;
* ``nearest``: the cosine of the text's nearest example (a near-duplicate's labels say more than a far
  neighbour's);
* ``probe``: the probability of a linear probe, logistic regression fitted on the index's embeddings
  (``LinearProbe``): the supervised reading of the corpus, strongest where a label has many examples;
* ``name``: cosine between the text and the label's name, embedding zero-shot: a second opinion, beside
  the model's, on a label the index has no example of.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rac.formatting import RACExample

if TYPE_CHECKING:
    from rac.index import ExampleIndex

#: Neighbours the kNN share counts (more than the model sees: a vote needs more voters than an input has room).
KNN_DEPTH = 10
#: Softmax temperature over cosine similarities in the kNN share.
KNN_TEMPERATURE = 0.05
#: Indexed examples sampled (seeded) to measure retrieval reliability.
RELIABILITY_SAMPLE = 256
#: Reliability assumed when there is no index to measure it on (given examples only): the middle.
DEFAULT_RELIABILITY = 0.5
#: Inverse regularisation of the linear probe: unit-norm sentence embeddings need weaker regularisation
#: than scikit-learn's default ``C=1``, which under-fits them (a separable toy set is missed).
PROBE_C = 10.0
#: Most indexed examples the probe is fitted on (a seeded sample), so a large index refits in seconds.
PROBE_SAMPLE = 4000


@dataclass(frozen=True)
class Evidence:
    """The evidence for one text, one entry per candidate label (arrays of the label set's length)."""

    model: np.ndarray
    shown: np.ndarray
    knn: np.ndarray
    prototype: np.ndarray
    indexed: np.ndarray
    reliability: float
    nearest: float = 0.0
    probe: np.ndarray | None = None
    name: np.ndarray | None = None

    @classmethod
    def from_dicts(cls, labels: Sequence[str], evidence: dict[str, dict[str, float]]) -> Evidence:
        """Inverse of ``as_dicts`` for ``labels`` (in that order)."""
        column = lambda key: np.array([evidence[label][key] for label in labels], dtype=np.float64)  # noqa: E731
        first = evidence[labels[0]] if labels else {}
        optional = {key: column(key) if key in first else None for key in ("probe", "name")}
        return cls(column("model"), column("shown"), column("knn"), column("prototype"), column("indexed"),
                   float(first.get("reliability", DEFAULT_RELIABILITY)), float(first.get("nearest", 0.0)), **optional)

    def as_dicts(self, labels: Sequence[str]) -> dict[str, dict[str, float]]:
        """``{label: {"model": .., "shown": .., ...}}``: the raw evidence, JSON-ready."""
        return {
            label: {
                "model": float(self.model[j]), "shown": float(self.shown[j]), "knn": float(self.knn[j]),
                "prototype": float(self.prototype[j]), "indexed": float(self.indexed[j]),
                "reliability": float(self.reliability), "nearest": float(self.nearest),
                **({} if self.probe is None else {"probe": float(self.probe[j])}),
                **({} if self.name is None else {"name": float(self.name[j])}),
            }
            for j, label in enumerate(labels)
        }


def shown_share(examples: Sequence[RACExample], labels: Sequence[str]) -> np.ndarray:
    """Per label, the similarity-weighted share of ``examples`` carrying it (equal weights without similarities)."""
    position = {label: j for j, label in enumerate(labels)}
    share = np.zeros(len(labels), dtype=np.float64)
    weights = [1.0 if e.similarity is None else max(float(e.similarity), 0.0) for e in examples]
    total = sum(weights) or 1.0
    for example, weight in zip(examples, weights):
        for label in set(example.true_labels):
            if label in position:
                share[position[label]] += weight / total
    return share


def knn_share(neighbours: Sequence[RACExample], labels: Sequence[str]) -> np.ndarray:
    """Per label, its share among ``neighbours`` weighted by ``softmax(similarity / KNN_TEMPERATURE)``."""
    if not neighbours:
        return np.zeros(len(labels), dtype=np.float64)
    sims = np.array([float(n.similarity if n.similarity is not None else 1.0) for n in neighbours])
    weights = np.exp((sims - sims.max()) / KNN_TEMPERATURE)
    position = {label: j for j, label in enumerate(labels)}
    share = np.zeros(len(labels), dtype=np.float64)
    for neighbour, weight in zip(neighbours, weights / weights.sum()):
        for label in set(neighbour.true_labels):
            if label in position:
                share[position[label]] += weight
    return share


class LinearProbe:
    """Logistic regression on example embeddings: multinomial when every example has one label (a
    distribution over labels), one-vs-rest otherwise (one probability per label).

    Fitted with scikit-learn, kept as a weight matrix so scoring a batch is one matrix product. A label with
    no example scores 0; a label every example carries scores 1.
    """

    def __init__(self, labels: list[str], coef: np.ndarray, intercept: np.ndarray, multinomial: bool,
                 constant: dict[str, float]):
        self.labels, self.coef, self.intercept = labels, coef, intercept
        self.multinomial, self.constant = multinomial, constant

    @classmethod
    def fit(cls, vectors: np.ndarray, label_lists: Sequence[Sequence[str]], *, multinomial: bool | None = None,
            regularization: float = PROBE_C) -> LinearProbe:
        """Fit on ``vectors`` (one row per example) and their label lists; ``multinomial=None`` decides by
        whether every example has exactly one label."""
        from sklearn.linear_model import LogisticRegression

        vectors = np.asarray(vectors, dtype=np.float64)
        if multinomial is None:
            multinomial = all(len(labels) == 1 for labels in label_lists)
        names = sorted({label for labels in label_lists for label in labels})
        empty = np.zeros((0, vectors.shape[1]))
        if multinomial:
            if len(names) < 2:
                return cls([], empty, np.zeros(0), True, {name: 1.0 for name in names})
            model = LogisticRegression(C=regularization, max_iter=1000).fit(vectors, [labels[0] for labels in label_lists])
            coef, intercept = model.coef_, model.intercept_
            if len(model.classes_) == 2:  # scikit-learn keeps one row for two classes: softmax([0, z]) = sigmoid(z)
                coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
            return cls(list(model.classes_), coef, intercept, True, {})
        rows, biases, kept, constant = [], [], [], {}
        for name in names:
            column = np.array([name in labels for labels in label_lists])
            if column.all():
                constant[name] = 1.0
                continue
            model = LogisticRegression(C=regularization, max_iter=1000).fit(vectors, column)
            rows.append(model.coef_[0])
            biases.append(model.intercept_[0])
            kept.append(name)
        return cls(kept, np.array(rows).reshape(len(kept), -1), np.array(biases), False, constant)

    def probabilities(self, vectors: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        """``(len(vectors), len(labels))`` probabilities for the candidate ``labels``."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        out = np.zeros((len(vectors), len(labels)))
        position = {label: j for j, label in enumerate(labels)}
        for name, value in self.constant.items():
            if name in position:
                out[:, position[name]] = value
        if not self.labels or not len(vectors):
            return out
        logits = vectors @ self.coef.T + self.intercept
        if self.multinomial:
            logits = logits - logits.max(1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(1, keepdims=True)
        else:
            probs = 1.0 / (1.0 + np.exp(-logits))
        for column, name in enumerate(self.labels):
            if name in position:
                out[:, position[name]] = probs[:, column]
        return out


@dataclass(frozen=True)
class LabelStatistics:
    """A snapshot of an index's per-label statistics."""

    position: dict[str, int]
    prototypes: np.ndarray  # (n_labels, dimension), unit rows
    counts: np.ndarray  # examples per label
    reliability: float
    probe: LinearProbe | None = None

    def prototype_cosines(self, vector: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(cosine to each label's prototype, indexed flag)``; 0 and False for labels with no example."""
        rows = np.array([self.position.get(label, -1) for label in labels])
        indexed = rows >= 0
        cosines = np.zeros(len(labels), dtype=np.float64)
        if indexed.any():
            cosines[indexed] = self.prototypes[rows[indexed]] @ np.asarray(vector, dtype=np.float32)
        return cosines, indexed.astype(np.float64)


class IndexStatistics:
    """Label prototypes, counts and retrieval reliability of one ``ExampleIndex``, as of its latest change.

    The index keeps the per-label sums itself (``ExampleIndex.label_prototypes``, updated by ``add`` and
    ``remove``), so a snapshot costs no pass over the store; reliability and the linear probe are re-measured
    when the index has grown or shrunk by more than a tenth since, or (the probe) gained a label. Thread-safe.
    """

    def __init__(self, index: ExampleIndex, *, probe: bool = True):
        """``probe=False`` skips the linear probe (its fit is the one costly part of a refresh)."""
        self.index = index
        self.with_probe = probe
        self._lock = threading.Lock()
        self._snapshot: LabelStatistics | None = None
        self._version = -1
        self._reliability_at = 0
        self._reliability = DEFAULT_RELIABILITY
        self._probe: LinearProbe | None = None
        self._probe_labels: frozenset[str] = frozenset()

    def snapshot(self) -> LabelStatistics:
        """The statistics of the index as it is now."""
        with self._lock:
            if self._snapshot is not None and self.index.version == self._version:
                return self._snapshot
            names, prototypes, counts, version = self.index.label_prototypes()
            size = len(self.index)
            if size and (self._reliability_at == 0 or abs(size - self._reliability_at) > 0.1 * self._reliability_at):
                self._reliability, self._reliability_at = retrieval_reliability(self.index), size
                self._probe = None
            if self.with_probe and size and (self._probe is None or not self._probe_labels.issuperset(names)):
                self._probe, self._probe_labels = fit_probe(self.index), frozenset(names)
            self._snapshot = LabelStatistics({n: j for j, n in enumerate(names)}, prototypes, counts,
                                             self._reliability, self._probe)
            self._version = version
            return self._snapshot


def retrieval_reliability(index: ExampleIndex, *, sample: int = RELIABILITY_SAMPLE, seed: int = 0) -> float:
    """Share of sampled indexed examples whose nearest other example carries one of their labels."""
    live = index.live_ids()
    if len(live) < 2:
        return DEFAULT_RELIABILITY
    ids = np.random.default_rng(seed).choice(live, size=min(sample, len(live)), replace=False)
    found, _ = index.search(index.vectors(ids), 2)
    hits = []
    for i, row in zip(ids, found):
        other = next((j for j in row if j >= 0 and j != i), None)
        if other is None:
            continue
        hits.append(bool(set(index.example(i).true_labels) & set(index.example(other).true_labels)))
    return float(np.mean(hits)) if hits else DEFAULT_RELIABILITY


def fit_probe(index: ExampleIndex, *, sample: int = PROBE_SAMPLE, seed: int = 0) -> LinearProbe:
    """A ``LinearProbe`` on (a seeded sample of) the index's live examples, from their stored vectors."""
    live = index.live_ids()
    if len(live) > sample:
        live = sorted(np.random.default_rng(seed).choice(live, size=sample, replace=False).tolist())
    return LinearProbe.fit(index.vectors(live), [index.example(i).true_labels for i in live])


def gather(
    model_scores: np.ndarray,
    labels: Sequence[str],
    shown: Sequence[RACExample],
    neighbours: Sequence[RACExample] | None,
    statistics: LabelStatistics | None,
    vector: np.ndarray | None,
    name: np.ndarray | None = None,
) -> Evidence:
    """One text's ``Evidence``; ``name``: the text's cosine to each label name, when embedded. Without an
    index (given examples only), the shown examples stand in for the neighbours, a label counts as indexed
    when one of them carries it, and reliability is the prior."""
    share = shown_share(shown, labels)
    pool = shown if neighbours is None else neighbours
    nearest = max((float(n.similarity) for n in pool if n.similarity is not None), default=0.0)
    if statistics is None or vector is None:
        carried = {label for example in shown for label in example.true_labels}
        return Evidence(
            model=np.asarray(model_scores, dtype=np.float64), shown=share, knn=knn_share(shown, labels),
            prototype=np.zeros(len(labels)), indexed=np.array([float(label in carried) for label in labels]),
            reliability=DEFAULT_RELIABILITY, nearest=nearest, name=name,
        )
    prototype, indexed = statistics.prototype_cosines(vector, labels)
    probe = statistics.probe.probabilities(vector, labels)[0] if statistics.probe is not None else None
    return Evidence(
        model=np.asarray(model_scores, dtype=np.float64), shown=share, knn=knn_share(neighbours or (), labels),
        prototype=prototype, indexed=indexed, reliability=statistics.reliability, nearest=nearest, probe=probe,
        name=name,
    )

"""Accuracy of the RAC classifier on labeled dataset folders, next to the peers a user would compare it with.

For each folder (``train.jsonl`` + ``test.jsonl`` of ``{"text", "labels"}``; with no train split a seeded
half of test is the corpus and the other half the queries) a seeded sample of the corpus is indexed and a
seeded sample of the queries is scored against every label of the dataset. Columns (``COLUMN_HELP``):

* ``k=N``: ``RACClassifier.predict`` itself with N retrieved examples (the learned evidence fusion on for
  N > 0), and for the largest N the model's own scores (``model alone``) and the former fixed mix;
* the peers on the same embeddings (``rac.baselines``): logistic regression, a kNN vote, label centroids,
  embedding zero-shot and the retrieval vote of the neighbours the model sees.

``--unseen-labels F`` removes every corpus row of a seeded share F of the labels (label drift) and adds
the top-1 hit rate on queries with an unseen / a seen true label.

Metrics: macro-F1 of the top label (the headline for single-label sets) and micro-F1 of the labels scoring
>= ``threshold`` (the headline for multi-label sets); both are kept for every cell. A set is multi-label
when any of its rows has more than one label.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rac.baselines import centroid_scores, knn_scores, logreg_scores, zero_shot_scores
from rac.evidence import KNN_DEPTH, IndexStatistics, shown_share
from rac.formatting import RACExample

if TYPE_CHECKING:
    from rac.classifier import RACClassifier
    from rac.embedding import Embedder

#: Default sample sizes per dataset (seeded), sized for the 30-minute budget of all 13 dev sets x 4 k values
#: on two CPU cores: embedding all ~77k dev corpus rows alone would take longer than that.
DEFAULT_MAX_QUERIES = 200
DEFAULT_MAX_CORPUS = 1000
DEFAULT_KS = (0, 1, 2, 3)
#: Neighbours the retrieval-vote baseline counts (the RAC seeds' k).
DEFAULT_VOTE_K = 3
#: Texts per ``predict`` call, so the progress bar moves; the classifier batches inside each call.
CHUNK = 64
#: Weight of the examples' share in the classifier's former fixed mix (the ``fixed mix`` column).
FIXED_MIX_WEIGHT = 0.5

MACRO_TOP1 = "macro_f1_top1"
MICRO_AT_THRESHOLD = "micro_f1_at_threshold"
ZERO_SHOT = "embedding zero-shot"
VOTE = "retrieval vote"
LOGREG = "logreg"
KNN = "knn"
CENTROID = "centroid"

COLUMN_HELP = (
    "Columns: `k=N`: `RACClassifier` with N retrieved examples (cosine >= min similarity) in the model's input "
    "and, for N > 0, the learned evidence fusion; `model alone k=N`: the model's own scores in that run; "
    "`fixed mix k=N`: the former fixed mix, 0.5 x model + 0.5 x the examples' similarity-weighted label share; "
    "`logreg`: logistic regression on the corpus embeddings (one-vs-rest at the threshold on multi-label sets); "
    "`knn`: vote of the {knn_k} nearest corpus rows weighted by softmax(cosine / 0.05), no cosine cut; "
    "`centroid`: cosine to each label's mean corpus embedding; `embedding zero-shot`: cosine between text and "
    "label-name embeddings; `retrieval vote`: most common label among the top {vote_k} neighbours above the "
    "cosine cut (label set: labels a strict majority carry), embedding zero-shot when a query has none. "
    "`with neighbour`: share of queries with at least one neighbour above the cut."
)


def model_alone(k: int) -> str:
    """Column of the model's own scores at ``k`` examples, before the fusion adds the corpus's evidence."""
    return f"model alone k={k}"


def fixed_mix_column(k: int) -> str:
    """Column of the former fixed mix at ``k`` examples."""
    return f"fixed mix k={k}"


# ------------------------------------------------------------------------------------------- metrics
def macro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    """Macro-F1 over the labels that occur in ``gold`` or ``pred`` (boolean ``(n, L)`` indicator matrices).

    Labels absent from both carry no evidence and are skipped, as scikit-learn does for class indices; with
    no label anywhere the prediction matches the gold exactly and scores 1.0.
    """
    from sklearn.metrics import f1_score

    gold, pred = _indicators(gold, pred)
    present = np.flatnonzero(gold.any(0) | pred.any(0))
    if present.size == 0:
        return 1.0
    return float(f1_score(gold, pred, labels=present, average="macro", zero_division=0.0))


def micro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    """Micro-F1 over all (row, label) decisions; 1.0 when neither side has any label (nothing to get wrong)."""
    from sklearn.metrics import f1_score

    gold, pred = _indicators(gold, pred)
    return float(f1_score(gold, pred, average="micro", zero_division=1.0))


def _indicators(gold: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gold, pred = np.asarray(gold, dtype=bool), np.asarray(pred, dtype=bool)
    if gold.shape != pred.shape or gold.ndim != 2:
        raise ValueError(f"gold and pred must be (n, L) indicator matrices of one shape: {gold.shape}, {pred.shape}")
    return gold.astype(np.int8), pred.astype(np.int8)


def top1(scores: np.ndarray) -> np.ndarray:
    """One-hot of each row's best label (first one on ties)."""
    scores = np.asarray(scores)
    out = np.zeros(scores.shape, dtype=bool)
    if scores.shape[1]:
        out[np.arange(len(scores)), scores.argmax(1)] = True
    return out


@dataclass(frozen=True)
class Decisions:
    """A method's answer on every query: its single best label and its thresholded label set."""

    best: np.ndarray  # (n, L) bool, one True per row
    chosen: np.ndarray  # (n, L) bool

    @classmethod
    def from_scores(cls, scores: np.ndarray, threshold: float) -> Decisions:
        """Best = argmax, chosen = scores >= ``threshold``."""
        return cls(top1(scores), np.asarray(scores) >= threshold)

    def metrics(self, gold: np.ndarray) -> dict[str, float]:
        return {MACRO_TOP1: macro_f1(gold, self.best), MICRO_AT_THRESHOLD: micro_f1(gold, self.chosen)}


def vote(neighbours: Sequence[Sequence[RACExample]], labels: Sequence[str], fallback: Decisions) -> Decisions:
    """Retrieval-vote baseline: the neighbours' labels decide, the ``fallback`` answers queries with none.

    Best label: the one most neighbours carry, ties broken by the larger summed similarity. Label set
    (multi-label): the labels carried by a strict majority of the neighbours (1 of 1, 2 of 2, 2 of 3), which
    may be empty when neighbours disagree.
    """
    position = {label: j for j, label in enumerate(labels)}
    best, chosen = fallback.best.copy(), fallback.chosen.copy()
    for i, found in enumerate(neighbours):
        if not found:
            continue
        counts = np.zeros(len(labels))
        weight = np.zeros(len(labels))
        for example in found:
            for label in example.true_labels:
                if label in position:
                    counts[position[label]] += 1
                    weight[position[label]] += example.similarity or 0.0
        best[i] = False
        best[i, np.lexsort((-weight, -counts))[0]] = True
        chosen[i] = counts > len(found) / 2
    return Decisions(best, chosen)


# ------------------------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class EvalDataset:
    """One folder made ready to score: the corpus to index, the sampled queries, the full label set."""

    name: str
    corpus: list[RACExample]
    queries: list[RACExample]
    labels: tuple[str, ...]
    multi_label: bool
    corpus_source: str  # "train" or "half of test"

    def gold(self) -> np.ndarray:
        """``(n_queries, n_labels)`` indicator matrix of the queries' labels."""
        position = {label: j for j, label in enumerate(self.labels)}
        out = np.zeros((len(self.queries), len(self.labels)), dtype=bool)
        for i, query in enumerate(self.queries):
            out[i, [position[label] for label in query.true_labels]] = True
        return out


def load_dataset(
    folder: str | Path,
    *,
    max_queries: int | None = DEFAULT_MAX_QUERIES,
    max_corpus: int | None = DEFAULT_MAX_CORPUS,
    seed: int = 0,
    queries_from_train: bool = False,
) -> EvalDataset:
    """Read ``folder``'s train/test splits, halving test (seeded) when there is no train split.

    Labels are the sorted union over the whole corpus and test splits, so a query is scored against every
    label the dataset uses; ``max_queries`` queries and ``max_corpus`` corpus rows are kept by seeded samples
    (``None``: all of them). ``queries_from_train`` splits the train split instead, never reading test: a
    seeded half are queries, the other half the corpus (for choosing settings without touching test rows).
    """
    from rac.corpus import read_corpus

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such dataset folder")
    for name, value in (("max_queries", max_queries), ("max_corpus", max_corpus)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    split = "train" if queries_from_train else "test"
    rows = read_corpus(folder / f"{split}.jsonl")
    rng = np.random.default_rng(seed)
    if not queries_from_train and (folder / "train.jsonl").is_file():
        corpus, queries, source = read_corpus(folder / "train.jsonl"), rows, "train"
    else:
        if len(rows) < 2:
            raise ValueError(f"{folder}: fewer than 2 {split} rows to split into corpus and queries")
        order = rng.permutation(len(rows))
        half = len(rows) // 2
        corpus, queries, source = [rows[i] for i in order[:half]], [rows[i] for i in order[half:]], f"half of {split}"
    labels = tuple(sorted({label for row in corpus + rows for label in row.true_labels}))
    multi = any(len(row.true_labels) > 1 for row in corpus + rows)
    corpus, queries = _sample(corpus, max_corpus, rng), _sample(queries, max_queries, rng)
    return EvalDataset(folder.name, corpus, queries, labels, multi, source)


def _sample(rows: list[RACExample], size: int | None, rng: np.random.Generator) -> list[RACExample]:
    """``size`` rows drawn without replacement, in their file order (all of them when there are fewer)."""
    if size is None or len(rows) <= size:
        return rows
    return [rows[i] for i in np.sort(rng.choice(len(rows), size, replace=False))]


def drift_split(
    dataset: EvalDataset, fraction: float, seed: int = 0
) -> tuple[list[RACExample], frozenset[str]]:
    """The corpus without every row carrying one of a seeded ``fraction`` of the labels, and those labels.

    Simulates labels added after the corpus was built: queries and candidate labels stay whole, the index
    never sees an example of an unseen label (a multi-label row carrying any of them goes too).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"unseen-labels fraction must be in [0, 1), got {fraction}")
    if fraction == 0:
        return list(dataset.corpus), frozenset()
    return withhold_labels(dataset.corpus, fraction, np.random.default_rng([seed, 7]))


def withhold_labels(
    rows: Sequence[RACExample], fraction: float, rng: np.random.Generator
) -> tuple[list[RACExample], frozenset[str]]:
    """``rows`` without any row carrying one of ``max(1, round(fraction x labels))`` labels drawn by ``rng``
    (the labels the rows carry), and the labels drawn; ``rac fit-fusion`` simulates drift with it too."""
    present = sorted({label for row in rows for label in row.true_labels})
    if not present:
        return list(rows), frozenset()
    count = max(1, round(fraction * len(present)))
    unseen = frozenset(present[i] for i in rng.choice(len(present), size=count, replace=False))
    return [row for row in rows if not unseen.intersection(row.true_labels)], unseen


# ------------------------------------------------------------------------------------------- results
@dataclass
class DatasetResult:
    """Scores of every column on one dataset (``scores[column][metric]``) and what produced them.

    ``hits[column]`` holds the top-1 hit rate (best label among the true ones) on queries with an unseen
    true label (``"unseen"``) and on the others (``"seen"``), when labels were held out of the corpus.
    """

    name: str
    path: str
    multi_label: bool
    n_labels: int
    n_corpus: int
    n_queries: int
    corpus_source: str
    coverage: float  # share of queries with at least one neighbour >= min_similarity
    scores: dict[str, dict[str, float]]
    seconds: dict[str, float]  # wall time of each phase: "index", "queries" (embed + retrieve), each "k=..."
    unseen_labels: list[str] = field(default_factory=list)
    n_unseen_queries: int = 0
    hits: dict[str, dict[str, float | None]] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        """The headline metric: micro-F1 at the threshold for multi-label sets, top-1 macro-F1 otherwise."""
        return MICRO_AT_THRESHOLD if self.multi_label else MACRO_TOP1

    @property
    def other_metric(self) -> str:
        return MACRO_TOP1 if self.multi_label else MICRO_AT_THRESHOLD


@dataclass
class EvalReport:
    """All datasets' results plus the configuration (and command) that produced them."""

    config: dict[str, Any]
    datasets: list[DatasetResult] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return list(self.datasets[0].scores) if self.datasets else []

    @property
    def drift(self) -> bool:
        return bool(self.config.get("unseen_labels"))

    def average(self, column: str, *, headline: bool = True) -> float:
        """Mean over datasets of ``column``'s headline (or other) metric."""
        return float(np.mean([r.scores[column][r.metric if headline else r.other_metric] for r in self.datasets]))

    def average_hits(self, column: str, group: str) -> float | None:
        """Mean over datasets (those with such queries) of the top-1 hit rate on ``group`` queries."""
        values = [r.hits[column][group] for r in self.datasets if r.hits.get(column, {}).get(group) is not None]
        return float(np.mean(values)) if values else None

    def to_dict(self) -> dict[str, Any]:
        average: dict[str, Any] = {
            "headline": {c: self.average(c) for c in self.columns},
            "other": {c: self.average(c, headline=False) for c in self.columns},
            "coverage": float(np.mean([r.coverage for r in self.datasets])),
        }
        if self.drift:
            average["hits"] = {c: {g: self.average_hits(c, g) for g in ("unseen", "seen")} for c in self.columns}
        return {"config": self.config, "datasets": [{**asdict(r), "metric": r.metric} for r in self.datasets],
                "average": average}

    def table(self, *, headline: bool = True) -> str:
        """Markdown table: one row per dataset and the average; ``headline=False`` shows the other metric."""
        head = ["dataset", "type", "metric", "queries", "corpus", "labels", *self.columns, "with neighbour"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.datasets:
            metric = r.metric if headline else r.other_metric
            cells = [r.name, "multi" if r.multi_label else "single", _METRIC_NAMES[metric], str(r.n_queries),
                     f"{r.n_corpus} ({r.corpus_source})", str(r.n_labels)]
            cells += [f"{r.scores[c][metric]:.3f}" for c in self.columns] + [f"{r.coverage:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
        average = [f"**{self.average(c, headline=headline):.3f}**" for c in self.columns]
        coverage = float(np.mean([r.coverage for r in self.datasets]))
        lines.append("| " + " | ".join(["**average**", "", "", "", "", "", *average, f"{coverage:.2f}"]) + " |")
        return "\n".join(lines)

    def hits_table(self) -> str:
        """Markdown table of the top-1 hit rates on queries with an unseen / a seen true label (drift runs)."""
        head = ["dataset", "unseen labels", "unseen queries", *(f"{c} unseen / seen" for c in self.columns)]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

        def cell(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        for r in self.datasets:
            cells = [r.name, str(len(r.unseen_labels)), str(r.n_unseen_queries)]
            cells += [f"{cell(r.hits[c]['unseen'])} / {cell(r.hits[c]['seen'])}" for c in self.columns]
            lines.append("| " + " | ".join(cells) + " |")
        cells = [f"**{cell(self.average_hits(c, 'unseen'))} / {cell(self.average_hits(c, 'seen'))}**"
                 for c in self.columns]
        lines.append("| " + " | ".join(["**average**", "", "", *cells]) + " |")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        c = self.config
        drift = (
            f" Label drift: {c['unseen_labels']:.0%} of each dataset's labels (seeded) have no corpus row, as if "
            "added after the index was built; queries and candidate labels stay whole." if self.drift else ""
        )
        parts = [
            "# rac eval: accuracy",
            "",
            f"Command: `{c['command']}`",
            "",
            f"Model `{c['model']}` ({c['dtype']}), fusion {c['fusion']}, embedder `{c['embedder']}`, k = "
            f"{', '.join(map(str, c['ks']))} examples with cosine >= {c['min_similarity']}, threshold "
            f"{c['threshold']}, up to {c['max_queries']} queries and {c['max_corpus']} corpus rows per dataset "
            f"(seeded samples, seed {c['seed']}), at most {c['max_labels_per_pass']} labels per pass "
            f"({'larger sets shortlisted to that many' if c.get('shortlist') else 'every label scored'}); {c['device']}, "
            f"{c['machine']}; {c['seconds']:.0f} s wall, {c['cpu_seconds']:.0f} s CPU in all.{drift}",
            "",
            "Headline metric: macro-F1 of the top label on single-label sets, micro-F1 of the labels scoring >= "
            "the threshold on multi-label sets (a set is multi-label when any row has more than one label).",
            "",
            COLUMN_HELP.format(knn_k=c["knn_k"], vote_k=c["vote_k"]),
            "",
            self.table(),
            "",
        ]
        if self.drift:
            parts += ["## Unseen and seen labels", "",
                      "Top-1 hit rate (the best label is one of the query's true labels) on queries with an unseen "
                      "true label / on the others.", "", self.hits_table(), ""]
        parts += ["## Other metric", "",
                  "The metric that is not the headline: micro-F1 at the threshold on single-label sets, top-1 "
                  "macro-F1 on multi-label sets.", "", self.table(headline=False), ""]
        return "\n".join(parts)

    def plot(self, path: str | Path) -> Path:
        """PNG: headline F1 per dataset for each column, and the average F1 against k (needs ``rac[plot]``)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("the eval chart needs matplotlib: pip install 'rac[plot]'") from None
        columns, names = self.columns, [r.name for r in self.datasets]
        fig, (bars, line) = plt.subplots(1, 2, figsize=(max(10, 1.1 * len(names) + 6), 5),
                                         gridspec_kw={"width_ratios": [3, 1]})
        width = 0.8 / max(1, len(columns))
        for i, column in enumerate(columns):
            values = [r.scores[column][r.metric] for r in self.datasets]
            bars.bar(np.arange(len(names)) + (i - (len(columns) - 1) / 2) * width, values, width, label=column)
        bars.set_xticks(np.arange(len(names)), names, rotation=40, ha="right")
        bars.set_ylabel("headline F1")
        bars.set_ylim(0, 1)
        bars.legend(fontsize=7, ncol=2)
        ks = self.config["ks"]
        line.plot(ks, [self.average(f"k={k}") for k in ks], marker="o", label="rac")
        for column in (KNN, LOGREG, CENTROID):
            if column in columns:
                line.axhline(self.average(column), linestyle="--", linewidth=1, label=column,
                             color=f"C{columns.index(column)}")
        line.set_xlabel("k (examples retrieved)")
        line.set_ylabel("average headline F1")
        line.set_xticks(ks)
        line.legend(fontsize=7)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def write(self, out: str | Path, *, chart: bool = True) -> list[Path]:
        """Write ``OUT.json`` (every number + config), ``OUT.md`` (the tables) and, with matplotlib installed
        and ``chart``, ``OUT.png``; a .json/.md suffix is dropped."""
        out = Path(out)
        if out.suffix in (".json", ".md", ".png"):
            out = out.with_suffix("")
        out.parent.mkdir(parents=True, exist_ok=True)
        json_path, md_path = out.with_name(out.name + ".json"), out.with_name(out.name + ".md")
        json_path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        md_path.write_text(self.to_markdown(), encoding="utf-8")
        written = [json_path, md_path]
        if chart:
            try:
                written.append(self.plot(out.with_name(out.name + ".png")))
            except ImportError as err:
                warnings.warn(f"{err}; no chart written", UserWarning, stacklevel=2)
        return written


_METRIC_NAMES = {MACRO_TOP1: "macro-F1 top-1", MICRO_AT_THRESHOLD: "micro-F1 @thr"}


# ------------------------------------------------------------------------------------------- running
def classifier_scores(
    classifier: RACClassifier,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    k: int,
    min_similarity: float,
    batch_size: int = 32,
    on_chunk: Callable[[int], Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(final scores, the model's own scores)`` of ``classifier.predict`` (multi-label), each
    ``(len(texts), len(labels))``; the model's own come from each result's evidence, so one call gives both.

    Texts go to ``predict`` in chunks of ``CHUNK`` so ``on_chunk(n_done)`` can move a progress bar.
    """
    position = {label: j for j, label in enumerate(labels)}
    final = np.zeros((len(texts), len(labels)), dtype=np.float64)
    model = np.zeros_like(final)
    for at in range(0, len(texts), CHUNK):
        results = classifier.predict(list(texts[at : at + CHUNK]), list(labels), multi_label=True, k=k,
                                     min_similarity=min_similarity, batch_size=batch_size)
        for row, result in enumerate(results, start=at):
            for label, score in result.labels:
                final[row, position[label]] = score
                # labels a shortlist kept out of the pass have no evidence: their final score is the model's
                model[row, position[label]] = (result.evidence or {}).get(label, {}).get("model", score)
        if on_chunk is not None:
            on_chunk(len(results))
    return final, model


def fixed_mix(model_scores: np.ndarray, share: np.ndarray) -> np.ndarray:
    """The classifier's former fixed mix of one text's scores, ``0.5 * model + 0.5 * share`` of the shown
    examples (when any carries a candidate), kept so the fusion can be compared with it."""
    model_scores = np.asarray(model_scores, dtype=np.float64)
    return (1 - FIXED_MIX_WEIGHT) * model_scores + FIXED_MIX_WEIGHT * share if share.any() else model_scores


def evaluate_dataset(
    dataset: EvalDataset,
    classifier: RACClassifier,
    embedder: Embedder,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    vote_k: int = DEFAULT_VOTE_K,
    knn_k: int = KNN_DEPTH,
    unseen_labels: float = 0.0,
    threshold: float = 0.5,
    min_similarity: float = 0.5,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    path: str = "",
) -> DatasetResult:
    """Score one prepared dataset: index its corpus (minus the unseen labels' rows), run the classifier at
    each k through ``predict`` itself, and every peer on the same index and embeddings."""
    from tqdm.auto import tqdm

    from rac.index import ExampleIndex
    from rac.retrieval import Retriever

    clock = time.perf_counter()
    seconds = {}

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[phase], clock = now - clock, now

    texts = [q.text for q in dataset.queries]
    labels = list(dataset.labels)
    gold = dataset.gold()
    corpus, unseen = drift_split(dataset, unseen_labels, seed)
    index = ExampleIndex.build(corpus, embedder, show_progress=progress)
    scoring = classifier.with_index(index)
    lap("index")
    vectors = embedder.encode(texts, show_progress=progress)
    neighbours = Retriever(index, k=max(vote_k, knn_k, *ks), min_similarity=-1.0).retrieve(texts, vectors=vectors)
    close = [[n for n in found if n.similarity >= min_similarity] for found in neighbours]
    statistics = IndexStatistics(index).snapshot()
    zero_shot_scores_ = zero_shot_scores(vectors, embedder.encode(labels, show_progress=False))
    zero_shot = Decisions.from_scores(zero_shot_scores_, threshold)
    lap("queries")

    decisions: dict[str, Decisions] = {}
    for k in ks:
        bar = tqdm(total=len(texts), desc=f"{dataset.name} k={k}", disable=not progress, leave=False)
        final, model = classifier_scores(scoring, texts, labels, k=k, min_similarity=min_similarity,
                                         batch_size=batch_size, on_chunk=bar.update)
        bar.close()
        decisions[f"k={k}"] = Decisions.from_scores(final, threshold)
        if k == max(ks) and k > 0:
            decisions[model_alone(k)] = Decisions.from_scores(model, threshold)
            mixed = [fixed_mix(row, shown_share(found[:k], labels)) for row, found in zip(model, close)]
            decisions[fixed_mix_column(k)] = Decisions.from_scores(np.array(mixed).reshape(model.shape), threshold)
        lap(f"k={k}")
    corpus_vectors = index.vectors(index.live_ids())
    decisions[LOGREG] = Decisions.from_scores(
        logreg_scores(vectors, corpus_vectors, [row.true_labels for row in index.examples], labels,
                      multi_label=dataset.multi_label), threshold)
    decisions[KNN] = Decisions.from_scores(knn_scores([found[:knn_k] for found in neighbours], labels), threshold)
    decisions[CENTROID] = Decisions.from_scores(centroid_scores(vectors, statistics, labels), threshold)
    decisions[ZERO_SHOT] = zero_shot
    decisions[VOTE] = vote([found[:vote_k] for found in close], labels, zero_shot)
    lap("peers")

    unseen_rows = np.array([bool(unseen.intersection(q.true_labels)) for q in dataset.queries], dtype=bool)
    hits = {}
    if unseen:
        for column, decision in decisions.items():
            hit = (decision.best & gold).any(1)
            hits[column] = {group: float(hit[mask].mean()) if mask.any() else None
                            for group, mask in (("unseen", unseen_rows), ("seen", ~unseen_rows))}
    return DatasetResult(
        name=dataset.name,
        path=path,
        multi_label=dataset.multi_label,
        n_labels=len(labels),
        n_corpus=len(corpus),
        n_queries=len(texts),
        corpus_source=dataset.corpus_source,
        coverage=float(np.mean([bool(found) for found in close])) if close else 0.0,
        scores={column: decision.metrics(gold) for column, decision in decisions.items()},
        seconds=seconds,
        unseen_labels=sorted(unseen),
        n_unseen_queries=int(unseen_rows.sum()),
        hits=hits,
    )


def evaluate(
    folders: Sequence[str | Path],
    *,
    model: Any = None,
    embedder: Embedder | str | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    vote_k: int = DEFAULT_VOTE_K,
    knn_k: int = KNN_DEPTH,
    unseen_labels: float = 0.0,
    max_queries: int | None = DEFAULT_MAX_QUERIES,
    max_corpus: int | None = DEFAULT_MAX_CORPUS,
    seed: int = 0,
    threshold: float = 0.5,
    min_similarity: float = 0.5,
    batch_size: int = 32,
    max_labels_per_pass: int | None = None,
    fusion: Any = "default",
    dtype: str = "auto",
    shortlist: bool = True,
    progress: bool = True,
    command: str = "",
) -> EvalReport:
    """Evaluate ``model`` (a checkpoint path, a loaded ``GLiClassModel``, or ``None`` for rac's default) on
    each dataset folder; ``command`` is recorded in the report so its numbers can be reproduced.
    ``max_labels_per_pass``, ``fusion``, ``dtype``, ``shortlist``: as in ``RACClassifier.from_pretrained``."""
    import torch
    from tqdm.auto import tqdm

    from rac.classifier import RACClassifier
    from rac.embedding import Embedder

    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 0:
        raise ValueError(f"ks must be integers >= 0, got {ks}")
    for name, value in (("vote_k", vote_k), ("knn_k", knn_k)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if max_labels_per_pass is not None and max_labels_per_pass < 1:
        raise ValueError(f"max_labels_per_pass must be >= 1, got {max_labels_per_pass}")
    if not 0.0 <= unseen_labels < 1.0:
        raise ValueError(f"unseen-labels fraction must be in [0, 1), got {unseen_labels}")
    if not folders:
        raise ValueError("no dataset folders given")
    missing = [str(f) for f in folders if not (Path(f) / "test.jsonl").is_file()]
    if missing:  # before minutes of model loading and indexing
        raise FileNotFoundError(f"no test.jsonl in dataset folder(s): {', '.join(missing)}")
    start, cpu_start = time.perf_counter(), time.process_time()
    embedder = embedder if isinstance(embedder, Embedder) else Embedder(embedder, dtype=dtype)
    classifier = RACClassifier.from_pretrained(model, max_labels_per_pass=max_labels_per_pass, fusion=fusion,
                                               dtype=dtype, shortlist=shortlist)
    config = {
        "command": command,
        "model": "rac default model" if model is None else str(model if isinstance(model, (str, Path)) else type(model)),
        "dtype": classifier.dtype_name,
        "shortlist": classifier.shortlist,
        "fusion": repr(classifier.fusion) if classifier.fusion is not None else "off",
        "embedder": embedder.name,
        "ks": ks,
        "vote_k": vote_k,
        "knn_k": knn_k,
        "unseen_labels": unseen_labels,
        "max_queries": max_queries,
        "max_corpus": max_corpus,
        "seed": seed,
        "threshold": threshold,
        "min_similarity": min_similarity,
        "batch_size": batch_size,
        "max_labels_per_pass": classifier.max_labels_per_pass,
        "device": f"{classifier.model.device}, {torch.get_num_threads()} torch threads",
        "datasets": [str(f) for f in folders],
    }
    report = EvalReport(config)
    for folder in tqdm(folders, desc="datasets", disable=not progress):
        dataset = load_dataset(folder, max_queries=max_queries, max_corpus=max_corpus, seed=seed)
        report.datasets.append(
            evaluate_dataset(
                dataset, classifier, embedder, ks=ks, vote_k=vote_k, knn_k=knn_k, unseen_labels=unseen_labels,
                threshold=threshold, min_similarity=min_similarity, batch_size=batch_size, seed=seed,
                progress=progress, path=str(folder),
            )
        )
    config["seconds"] = time.perf_counter() - start
    config["cpu_seconds"] = time.process_time() - cpu_start  # all threads; less sensitive to other jobs' load
    config["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
    return report

"""Accuracy of the RAC classifier on labeled dataset folders, next to the two baselines it must beat.

For each folder (``train.jsonl`` + ``test.jsonl`` of ``{"text", "labels"}``; with no train split a seeded
half of test is the corpus and the other half the queries) a seeded sample of the corpus is indexed, a seeded
sample of the queries is embedded once and retrieved once (``max(*ks, vote_k)`` neighbours, cosine >=
``min_similarity``), and every column sees those same neighbours:

* ``RACClassifier`` with the top ``k`` of them as RAC examples, for each ``k`` in ``ks``: the model's scores
  mixed with the examples' labels at the classifier's ``vote_weight`` (``blend_votes``), and, for the
  largest ``k``, the model's scores alone;
* embedding zero-shot: cosine between the query and each label name, same embedder, no model;
* retrieval vote: the labels of the neighbours, no model (rule in ``vote``).

Metrics: macro-F1 of the top label (the headline for single-label sets) and micro-F1 of the labels scoring
>= ``threshold`` (the headline for multi-label sets); both are kept for every cell. A set is multi-label
when any of its rows has more than one label.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

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

MACRO_TOP1 = "macro_f1_top1"
MICRO_AT_THRESHOLD = "micro_f1_at_threshold"
ZERO_SHOT = "embedding zero-shot"
VOTE = "retrieval vote"


def model_alone(k: int) -> str:
    """Column of the model's own scores at ``k`` examples, before the classifier blends in their labels."""
    return f"model alone k={k}"


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


# ------------------------------------------------------------------------------------------- results
@dataclass
class DatasetResult:
    """Scores of every column on one dataset (``scores[column][metric]``) and what produced them."""

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
        ks = self.config["ks"]
        alone = [model_alone(ks[-1])] if ks[-1] > 0 and self.config.get("vote_weight", 0) > 0 else []
        return [f"k={k}" for k in ks] + alone + [ZERO_SHOT, VOTE]

    def average(self, column: str, *, headline: bool = True) -> float:
        """Mean over datasets of ``column``'s headline (or other) metric."""
        return float(np.mean([r.scores[column][r.metric if headline else r.other_metric] for r in self.datasets]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "datasets": [{**asdict(r), "metric": r.metric} for r in self.datasets],
            "average": {
                "headline": {c: self.average(c) for c in self.columns},
                "other": {c: self.average(c, headline=False) for c in self.columns},
                "coverage": float(np.mean([r.coverage for r in self.datasets])),
            },
        }

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

    def to_markdown(self) -> str:
        c = self.config
        return "\n".join([
            "# rac eval: accuracy",
            "",
            f"Command: `{c['command']}`",
            "",
            f"Model `{c['model']}`, embedder `{c['embedder']}`, k = {', '.join(map(str, c['ks']))} examples with "
            f"cosine >= {c['min_similarity']}, threshold {c['threshold']}, up to {c['max_queries']} queries and "
            f"{c['max_corpus']} corpus rows per dataset (seeded samples, seed {c['seed']}), at most "
            f"{c['max_labels_per_pass']} labels per pass, vote weight {c.get('vote_weight', 0)}; {c['device']}, "
            f"{c['machine']}; {c['seconds']:.0f} s wall, {c['cpu_seconds']:.0f} s CPU in all.",
            "",
            "Headline metric: macro-F1 of the top label on single-label sets, micro-F1 of the labels scoring >= "
            "the threshold on multi-label sets (a set is multi-label when any row has more than one label). "
            "`k=N`: `RACClassifier` with N retrieved examples: the model's scores mixed, at the vote weight, with "
            "the similarity-weighted share of those examples carrying each label; "
            + (f"`{model_alone(c['ks'][-1])}`: the model's scores before that mix. "
               if model_alone(c["ks"][-1]) in self.columns else "")
            + f"`{ZERO_SHOT}`: cosine between text and label-name embeddings as the score (label set: cosine >= "
            f"the threshold). `{VOTE}`: most common label among the "
            f"top {c['vote_k']} neighbours (label set: labels a strict majority of them carry), embedding zero-shot "
            "when a query has none. `with neighbour`: share of queries with at least one neighbour.",
            "",
            self.table(),
            "",
            "## Other metric",
            "",
            "The metric that is not the headline: micro-F1 at the threshold on single-label sets, top-1 macro-F1 on "
            "multi-label sets.",
            "",
            self.table(headline=False),
            "",
        ])

    def write(self, out: str | Path) -> tuple[Path, Path]:
        """Write ``OUT.json`` (every number + config) and ``OUT.md`` (the tables); a .json/.md suffix is dropped."""
        out = Path(out)
        if out.suffix in (".json", ".md"):
            out = out.with_suffix("")
        out.parent.mkdir(parents=True, exist_ok=True)
        json_path, md_path = out.with_name(out.name + ".json"), out.with_name(out.name + ".md")
        json_path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        md_path.write_text(self.to_markdown(), encoding="utf-8")
        return json_path, md_path


_METRIC_NAMES = {MACRO_TOP1: "macro-F1 top-1", MICRO_AT_THRESHOLD: "micro-F1 @thr"}


# ------------------------------------------------------------------------------------------- running
def score_with_model(
    classifier: RACClassifier,
    texts: Sequence[str],
    labels: Sequence[str],
    examples: Sequence[Sequence[RACExample]],
    *,
    batch_size: int = 32,
    on_chunk: Callable[[int], Any] | None = None,
) -> np.ndarray:
    """The model's own ``(len(texts), len(labels))`` sigmoid scores (no vote mixed in), each text shown its
    own ``examples``.

    Texts go to ``predict`` in chunks of ``CHUNK`` so ``on_chunk(n_done)`` can move a progress bar.
    """
    position = {label: j for j, label in enumerate(labels)}
    out = np.zeros((len(texts), len(labels)), dtype=np.float32)
    for at in range(0, len(texts), CHUNK):
        results = classifier.predict(
            list(texts[at : at + CHUNK]), list(labels), multi_label=True, batch_size=batch_size,
            examples=list(examples[at : at + CHUNK]), vote_weight=0.0,
        )
        for row, result in enumerate(results, start=at):
            for label, score in result.labels:
                out[row, position[label]] = score
        if on_chunk is not None:
            on_chunk(len(results))
    return out


def with_votes(
    scores: np.ndarray, examples: Sequence[Sequence[RACExample]], labels: Sequence[str], weight: float
) -> np.ndarray:
    """Every row of ``score_with_model``'s scores mixed with its examples' labels as ``RACClassifier`` mixes them."""
    from rac.classifier import blend_votes

    if not len(scores):
        return scores
    return np.stack([blend_votes(row, found, labels, weight) for row, found in zip(scores, examples)])


def evaluate_dataset(
    dataset: EvalDataset,
    classifier: RACClassifier,
    embedder: Embedder,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    vote_k: int = DEFAULT_VOTE_K,
    threshold: float = 0.5,
    min_similarity: float = 0.5,
    batch_size: int = 32,
    progress: bool = True,
    path: str = "",
) -> DatasetResult:
    """Score one prepared dataset: index its corpus, retrieve once, run every column on the same neighbours."""
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
    index = ExampleIndex.build(dataset.corpus, embedder, show_progress=progress)
    lap("index")
    vectors = embedder.encode(texts, show_progress=progress)
    depth = max([*ks, vote_k])
    neighbours = Retriever(index, k=depth, min_similarity=min_similarity).retrieve(texts, vectors=vectors)

    label_vectors = embedder.encode(labels, show_progress=False)
    zero_shot = Decisions.from_scores(vectors @ label_vectors.T, threshold)
    lap("queries")
    scores = {}
    for k in ks:
        examples = [found[:k] for found in neighbours]
        bar = tqdm(total=len(texts), desc=f"{dataset.name} k={k}", disable=not progress, leave=False)
        model_scores = score_with_model(classifier, texts, labels, examples, batch_size=batch_size, on_chunk=bar.update)
        bar.close()
        blended = with_votes(model_scores, examples, labels, classifier.vote_weight)
        scores[f"k={k}"] = Decisions.from_scores(blended, threshold).metrics(gold)
        if k == max(ks) and k > 0 and classifier.vote_weight > 0:
            scores[model_alone(k)] = Decisions.from_scores(model_scores, threshold).metrics(gold)
        lap(f"k={k}")
    scores[ZERO_SHOT] = zero_shot.metrics(gold)
    scores[VOTE] = vote([found[:vote_k] for found in neighbours], labels, zero_shot).metrics(gold)
    return DatasetResult(
        name=dataset.name,
        path=path,
        multi_label=dataset.multi_label,
        n_labels=len(labels),
        n_corpus=len(dataset.corpus),
        n_queries=len(texts),
        corpus_source=dataset.corpus_source,
        coverage=float(np.mean([bool(found) for found in neighbours])) if neighbours else 0.0,
        scores=scores,
        seconds=seconds,
    )


def evaluate(
    folders: Sequence[str | Path],
    *,
    model: Any = None,
    embedder: Embedder | str | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    vote_k: int = DEFAULT_VOTE_K,
    max_queries: int | None = DEFAULT_MAX_QUERIES,
    max_corpus: int | None = DEFAULT_MAX_CORPUS,
    seed: int = 0,
    threshold: float = 0.5,
    min_similarity: float = 0.5,
    batch_size: int = 32,
    max_labels_per_pass: int | None = None,
    vote_weight: float | None = None,
    progress: bool = True,
    command: str = "",
) -> EvalReport:
    """Evaluate ``model`` (a checkpoint path, a loaded ``GLiClassModel``, or ``None`` for rac's default) on
    each dataset folder; ``command`` is recorded in the report so its numbers can be reproduced.
    ``max_labels_per_pass``, ``vote_weight``: as in ``RACClassifier`` (``None``: its defaults)."""
    import torch
    from tqdm.auto import tqdm

    from rac.classifier import RACClassifier
    from rac.embedding import Embedder

    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 0:
        raise ValueError(f"ks must be integers >= 0, got {ks}")
    if vote_k < 1:
        raise ValueError(f"vote_k must be >= 1, got {vote_k}")
    if max_labels_per_pass is not None and max_labels_per_pass < 1:
        raise ValueError(f"max_labels_per_pass must be >= 1, got {max_labels_per_pass}")
    if vote_weight is not None and not 0.0 <= vote_weight <= 1.0:
        raise ValueError(f"vote_weight must be in [0, 1], got {vote_weight}")
    if not folders:
        raise ValueError("no dataset folders given")
    missing = [str(f) for f in folders if not (Path(f) / "test.jsonl").is_file()]
    if missing:  # before minutes of model loading and indexing
        raise FileNotFoundError(f"no test.jsonl in dataset folder(s): {', '.join(missing)}")
    start, cpu_start = time.perf_counter(), time.process_time()
    embedder = embedder if isinstance(embedder, Embedder) else Embedder(embedder)
    options = {} if vote_weight is None else {"vote_weight": vote_weight}
    classifier = RACClassifier.from_pretrained(model, max_labels_per_pass=max_labels_per_pass, **options)
    config = {
        "command": command,
        "model": "rac default model" if model is None else str(model if isinstance(model, (str, Path)) else type(model)),
        "embedder": embedder.name,
        "ks": ks,
        "vote_k": vote_k,
        "max_queries": max_queries,
        "max_corpus": max_corpus,
        "seed": seed,
        "threshold": threshold,
        "min_similarity": min_similarity,
        "batch_size": batch_size,
        "max_labels_per_pass": classifier.max_labels_per_pass,
        "vote_weight": classifier.vote_weight,
        "device": f"{classifier.model.device}, {torch.get_num_threads()} torch threads",
        "datasets": [str(f) for f in folders],
    }
    report = EvalReport(config)
    for folder in tqdm(folders, desc="datasets", disable=not progress):
        dataset = load_dataset(folder, max_queries=max_queries, max_corpus=max_corpus, seed=seed)
        report.datasets.append(
            evaluate_dataset(
                dataset, classifier, embedder, ks=ks, vote_k=vote_k, threshold=threshold,
                min_similarity=min_similarity, batch_size=batch_size, progress=progress, path=str(folder),
            )
        )
    config["seconds"] = time.perf_counter() - start
    config["cpu_seconds"] = time.process_time() - cpu_start  # all threads; less sensitive to other jobs' load
    config["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
    return report

"""Fitting the evidence fusion (``rac fit-fusion``): evidence from training-pool datasets, label drift
simulated, one logistic model, and a leave-one-dataset-out ablation that says which features earn a place.

Why it is done this way:

* **Pool only, unseen label spaces.** The model is over-confident on label spaces it was trained on, and a
  fusion fitted there over-trusts it. So the datasets used here are ones the model did not train on
  (``rac train --exclude`` keeps them out; the shipped model's are listed in its README).
* **Drift.** Half of each dataset's queries are scored against an index from which a seeded share of the
  labels (``unseen_rate``) has been removed, so the fusion learns what a label with no example is worth.
* **Same code as predict.** Evidence comes from ``RACClassifier.predict`` itself (fusion off), so what
  the fusion is fitted on is exactly what it sees in use.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rac.evaluation import Decisions, fixed_mix, macro_f1, micro_f1, withhold_labels
from rac.evidence import Evidence
from rac.fusion import ALL_FEATURES, DEFAULT_FEATURES, FEATURE_SOURCES, EvidenceFusion, features

DEFAULT_QUERIES = 300
DEFAULT_CORPUS = 1000
DEFAULT_UNSEEN_RATE = 0.3
DEFAULT_K = 3
#: Weight of a query whose true label the index lacks, against 1 for the others. Drift is simulated on half
#: the queries, for 30% of the labels, so such queries are rare in the fit; at weight 1 the fusion learns
#: to follow the neighbours' old labels and names a new label less often than the model alone would
#: (leave-one-dataset-out on the pool: ``benchmarks/results/fusion_fit.md``).
DEFAULT_UNSEEN_WEIGHT = 2.0
#: Feature sets compared by the ablation (each fitted leave-one-dataset-out): every candidate feature, the
#: shipped set, and the shipped set without each evidence source.
ABLATIONS: dict[str, tuple[str, ...]] = {
    "every candidate feature": ALL_FEATURES,
    "shipped": DEFAULT_FEATURES,
    **{f"shipped without {source}": tuple(f for f in DEFAULT_FEATURES if FEATURE_SOURCES[f] != source)
       for source in ("neighbours", "prototype", "probe", "name", "index")},
    "shipped without the unseen-label model weight": tuple(f for f in DEFAULT_FEATURES if f != "unseen_model"),
    "shipped without coverage": tuple(f for f in DEFAULT_FEATURES if f != "coverage"),
    "shipped without reliability": tuple(f for f in DEFAULT_FEATURES if not f.startswith("reliab")),
    "shipped without nearest-neighbour similarity": tuple(f for f in DEFAULT_FEATURES if f != "near_knn"),
    "shipped plus the model's gap to the best label": (*DEFAULT_FEATURES, "model_gap"),
    "shipped plus the shown examples' share": (*DEFAULT_FEATURES, "shown"),
    "shipped plus the label-name cosine of indexed labels too": (*DEFAULT_FEATURES, "name_gap"),
}


@dataclass
class QueryEvidence:
    """One scored query: its dataset, candidate labels, evidence, gold labels, and whether any is unseen."""

    dataset: str
    multi_label: bool
    labels: list[str]
    evidence: Evidence
    gold: list[str]
    unseen: bool

    def targets(self) -> np.ndarray:
        gold = set(self.gold)
        return np.array([label in gold for label in self.labels], dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "multi_label": self.multi_label, "labels": self.labels,
                "evidence": self.evidence.as_dicts(self.labels), "gold": self.gold, "unseen": self.unseen}

    @classmethod
    def from_dict(cls, item: dict[str, Any]) -> QueryEvidence:
        return cls(item["dataset"], item["multi_label"], item["labels"],
                   Evidence.from_dicts(item["labels"], item["evidence"]), item["gold"], item["unseen"])


def collect(
    classifier: Any,
    data_dir: str | Path,
    datasets: Sequence[str],
    *,
    embedder: Any = None,
    max_queries: int = DEFAULT_QUERIES,
    max_corpus: int = DEFAULT_CORPUS,
    unseen_rate: float = DEFAULT_UNSEEN_RATE,
    k: int = DEFAULT_K,
    seed: int = 0,
    progress: bool = True,
) -> list[QueryEvidence]:
    """Evidence for seeded queries of each pool dataset (its held-out split; corpus: its training split),
    half of them against an index with ``unseen_rate`` of the labels removed."""
    from tqdm.auto import tqdm

    from rac.embedding import Embedder
    from rac.index import ExampleIndex
    from rac.training import load_pool

    embedder = embedder or Embedder()

    pool = load_pool(data_dir, list(datasets))
    missing = sorted(set(datasets) - {ds.name for ds in pool})
    if missing:
        raise FileNotFoundError(f"no such dataset(s) under {data_dir}: {', '.join(missing)}")
    out: list[QueryEvidence] = []
    for ds in tqdm(pool, desc="datasets", disable=not progress):
        rng = np.random.default_rng([seed, len(out)])
        corpus = [ds.train[i] for i in np.sort(rng.choice(len(ds.train), min(max_corpus, len(ds.train)), replace=False))]
        queries = [ds.heldout[i] for i in rng.choice(len(ds.heldout), min(max_queries, len(ds.heldout)), replace=False)]
        queries = [q for q in queries if set(q.true_labels) <= set(ds.labels)]
        drifted, unseen = withhold_labels(corpus, unseen_rate, rng)
        half = len(queries) // 2
        for part, rows, hidden in ((0, queries[:half], set()), (1, queries[half:], unseen)):
            index = ExampleIndex.build(corpus if part == 0 else drifted, embedder, show_progress=False)
            results = classifier.with_index(index).predict([q.text for q in rows], ds.labels, k=k, multi_label=True)
            for query, result in zip(rows, results):
                scored = list(result.evidence)  # the labels of the pass (a shortlist when the set is large)
                out.append(QueryEvidence(ds.name, ds.multi_label, scored, Evidence.from_dicts(scored, result.evidence),
                                         list(query.true_labels), bool(hidden.intersection(query.true_labels))))
    return out


def design(
    queries: Sequence[QueryEvidence], names: Sequence[str], *, unseen_weight: float = DEFAULT_UNSEEN_WEIGHT
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stacked features, targets and weights: every dataset weighs the same in the fit, whatever its size,
    and within one a query with an unseen true label weighs ``unseen_weight``."""
    x = np.concatenate([features(q.evidence, names) for q in queries])
    y = np.concatenate([q.targets() for q in queries])
    query_weight = [unseen_weight if q.unseen else 1.0 for q in queries]
    totals: dict[str, float] = {}
    for q, weight in zip(queries, query_weight):
        totals[q.dataset] = totals.get(q.dataset, 0.0) + weight * len(q.labels)
    w = np.concatenate([np.full(len(q.labels), weight / totals[q.dataset]) for q, weight in zip(queries, query_weight)])
    return x, y, w * len(w) / w.sum()


def score_queries(queries: Sequence[QueryEvidence], scorer: Any) -> dict[str, float]:
    """Headline F1 (macro top-1 single-label, micro at 0.5 multi-label) and top-1 hit rates of ``scorer``
    (Evidence -> scores) on one dataset's queries."""
    scores = np.stack([scorer(q.evidence) for q in queries])
    gold = np.stack([q.targets() for q in queries]).astype(bool)
    decisions = Decisions.from_scores(scores, 0.5)
    f1 = micro_f1(gold, decisions.chosen) if queries[0].multi_label else macro_f1(gold, decisions.best)
    hit = (decisions.best & gold).any(1)
    unseen = np.array([q.unseen for q in queries])
    return {"f1": f1, "hit_unseen": float(hit[unseen].mean()) if unseen.any() else float("nan"),
            "hit_seen": float(hit[~unseen].mean()) if (~unseen).any() else float("nan")}


def ablation(
    queries: Sequence[QueryEvidence], *, regularization: float = 1.0, unseen_weight: float = DEFAULT_UNSEEN_WEIGHT
) -> dict[str, dict[str, float]]:
    """Leave-one-dataset-out averages for every feature set in ``ABLATIONS`` and the two reference scorers."""
    names = sorted({q.dataset for q in queries})
    by_set = {name: [q for q in queries if q.dataset == name] for name in names}
    table: dict[str, dict[str, float]] = {}
    references = {"model alone": lambda e: e.model, "fixed mix (0.5)": lambda e: fixed_mix(e.model, e.shown)}
    for label, scorer in references.items():
        rows = [score_queries(by_set[name], scorer) for name in names]
        table[label] = {key: float(np.nanmean([r[key] for r in rows])) for key in rows[0]}
    for label, feature_names in ABLATIONS.items():
        rows = []
        for held in names:
            x, y, w = design([q for q in queries if q.dataset != held], feature_names, unseen_weight=unseen_weight)
            fusion = EvidenceFusion.fit(x, y, weights=w, feature_names=feature_names, regularization=regularization)
            rows.append(score_queries(by_set[held], fusion.score))
        table[label] = {key: float(np.nanmean([r[key] for r in rows])) for key in rows[0]}
    return table


def fit(
    queries: Sequence[QueryEvidence], *, feature_names: Sequence[str] = DEFAULT_FEATURES, regularization: float = 1.0,
    unseen_weight: float = DEFAULT_UNSEEN_WEIGHT, fitted_on: dict[str, Any] | None = None,
) -> EvidenceFusion:
    """The fusion fitted on every query."""
    x, y, w = design(queries, feature_names, unseen_weight=unseen_weight)
    return EvidenceFusion.fit(x, y, weights=w, feature_names=feature_names, regularization=regularization,
                              fitted_on=fitted_on)


def report_markdown(table: dict[str, dict[str, float]], fusion: EvidenceFusion, command: str, seconds: float) -> str:
    """The ablation table and the fitted weights, as Markdown."""
    lines = ["# Evidence fusion: fit and ablation", "", f"Command: `{command}` ({seconds:.0f} s)", "",
             f"Fitted on held-out rows of {', '.join(fusion.fitted_on.get('datasets', []))} (training-pool "
             "datasets; they should be ones the model did not train on, `rac train --exclude`), "
             f"{fusion.fitted_on.get('queries')} queries, half against an index with "
             f"{fusion.fitted_on.get('unseen_rate', 0):.0%} of the labels removed; a query whose true label the "
             f"index lacks weighs {fusion.fitted_on.get('unseen_weight')}.", "",
             "Leave-one-dataset-out: each row fitted on all datasets but one and scored on that one, averaged. "
             "F1: macro-F1 of the top label (single-label sets), micro-F1 at 0.5 (multi-label sets); hit: top-1 "
             "hit rate on queries whose true label is unseen / seen.", "",
             "| features | F1 | hit unseen | hit seen |", "|---|---|---|---|"]
    for label, row in table.items():
        lines.append(f"| {label} | {row['f1']:.3f} | {row['hit_unseen']:.3f} | {row['hit_seen']:.3f} |")
    lines += ["", "## Shipped weights (standardised features)", "", "| feature | source | weight |", "|---|---|---|"]
    for name, coef in zip(fusion.feature_names, fusion.coef):
        lines.append(f"| `{name}` | {FEATURE_SOURCES[name]} | {coef:+.3f} |")
    lines.append(f"| intercept | | {fusion.intercept:+.3f} |")
    return "\n".join(lines) + "\n"


def run(
    classifier: Any,
    data_dir: str | Path,
    datasets: Sequence[str],
    out: str | Path,
    *,
    report: str | Path | None = None,
    cache: str | Path | None = None,
    command: str = "",
    progress: bool = True,
    unseen_weight: float = DEFAULT_UNSEEN_WEIGHT,
    **options: Any,
) -> tuple[EvidenceFusion, dict[str, dict[str, float]]]:
    """Collect (or read ``cache``), ablate, fit on everything, save the fusion to ``out``; ``report``
    gets ``REPORT.md`` and ``REPORT.json``."""
    start = time.perf_counter()
    cache_path = Path(cache) if cache else None
    if cache_path is not None and cache_path.is_file():
        queries = [QueryEvidence.from_dict(item) for item in json.loads(cache_path.read_text(encoding="utf-8"))]
    else:
        queries = collect(classifier, data_dir, datasets, progress=progress, **options)
        if cache_path is not None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_text(json.dumps([q.to_dict() for q in queries]), encoding="utf-8")
    table = ablation(queries, unseen_weight=unseen_weight)
    fitted_on = {"datasets": sorted({q.dataset for q in queries}), "queries": len(queries), "command": command,
                 "unseen_weight": unseen_weight,
                 "unseen_rate": options.get("unseen_rate", DEFAULT_UNSEEN_RATE), "k": options.get("k", DEFAULT_K),
                 "model": str(getattr(classifier, "model_name", "rac default model"))}
    fusion = fit(queries, unseen_weight=unseen_weight, fitted_on=fitted_on)
    fusion.save(out)
    if report is not None:
        report = Path(report)
        report.parent.mkdir(parents=True, exist_ok=True)
        seconds = time.perf_counter() - start
        report.with_suffix(".md").write_text(report_markdown(table, fusion, command, seconds), encoding="utf-8")
        report.with_suffix(".json").write_text(json.dumps({"ablation": table, "fusion": fusion.to_dict(),
                                                           "seconds": seconds}, indent=1) + "\n", encoding="utf-8")
    return fusion, table

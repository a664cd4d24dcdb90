"""The label shortlist on the dev sets with more than 25 labels: does it keep the true labels, and what does it
do to F1 against scoring every label in chunks?

Each set is read as ``rac eval`` reads it (``rac.evaluation.load_dataset``: seeded samples of the queries
and the corpus) and its corpus indexed once; at k=0 and k=3 (neighbours with cosine >= 0.5, as ``rac eval``):

* recall: the share of queries whose true labels are all in the shortlist (k=0: label-name cosine alone;
  k=3: plus the labels of the examples shown and of the 10 nearest neighbours), and its mean share of true
  labels kept;
* F1, ``rac eval``'s headline metric (micro-F1 at 0.5 on multi-label sets, top-1 macro-F1 otherwise), of
  ``RACClassifier.predict`` with the shortlist and with ``shortlist=False``, on its final scores and on the
  model's own (they differ where a fusion is on); and the passes each takes per text.

    python benchmarks/shortlist.py                      # 200 queries and 1,000 corpus rows per set
    python benchmarks/shortlist.py --max-queries 50 --datasets clinc150,trec_fine --out /tmp/shortlist
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rac.classifier import RACClassifier  # noqa: E402
from rac.embedding import Embedder  # noqa: E402
from rac.evaluation import (  # noqa: E402
    DEFAULT_MAX_CORPUS,
    DEFAULT_MAX_QUERIES,
    MACRO_TOP1,
    MICRO_AT_THRESHOLD,
    Decisions,
    classifier_scores,
    load_dataset,
)
from rac.index import ExampleIndex  # noqa: E402

DEV = Path("/work/shared/data/dev")
#: The dev sets with more candidate labels than one pass holds (25).
DATASETS = ("clinc150", "liar_topics", "nlupp_banking", "reuters21578", "trec_fine")
KS = (0, 3)
MIN_SIMILARITY = 0.5
THRESHOLD = 0.5


def shortlist_recall(classifier: RACClassifier, texts: list[str], labels: tuple[str, ...],
                     gold: list[tuple[str, ...]], k: int) -> dict[str, float]:
    """Share of texts whose gold labels are all shortlisted, and mean share of gold labels shortlisted, for the
    shortlists ``predict`` itself would make (same retrieval, same embeddings)."""
    shown, neighbours, vectors = classifier._examples(texts, None, k, MIN_SIMILARITY)
    picked = classifier._shortlists(texts, [labels] * len(texts), shown, neighbours, vectors)
    kept = [{labels[j] for j in p.kept} if p is not None else set(labels) for p in picked]
    share = [len(kept_i & set(g)) / len(g) for kept_i, g in zip(kept, gold)]
    return {"all_true_kept": float(np.mean([s == 1.0 for s in share])), "true_kept": float(np.mean(share))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated dev sets (default: %(default)s)")
    parser.add_argument("--max-queries", type=int, default=DEFAULT_MAX_QUERIES, help="queries per set (default: %(default)s)")
    parser.add_argument("--max-corpus", type=int, default=DEFAULT_MAX_CORPUS, help="corpus rows per set (default: %(default)s)")
    parser.add_argument("--model", default=None, help="GLiClass checkpoint folder (default: rac's shipped model)")
    parser.add_argument("--dtype", default=None, help="precision of model and embedder (default: auto)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass (default: %(default)s)")
    parser.add_argument("--out", default=None, help="results stem (default: benchmarks/results/shortlist)")
    args = parser.parse_args()
    out = Path(args.out or ROOT / "benchmarks" / "results" / "shortlist")
    started, load_before = time.perf_counter(), os.getloadavg()[0]

    base = RACClassifier.from_pretrained(args.model, dtype=args.dtype)
    every = RACClassifier(base.model, fusion=base.fusion, dtype=base.dtype_name, shortlist=False)
    embedder = Embedder(dtype=base.dtype_name)
    rows = []
    for name in args.datasets.split(","):
        dataset = load_dataset(DEV / name, max_queries=args.max_queries, max_corpus=args.max_corpus)
        index = ExampleIndex.build(dataset.corpus, embedder, show_progress=False)
        texts, labels = [q.text for q in dataset.queries], dataset.labels
        gold_labels = [q.true_labels for q in dataset.queries]
        gold = dataset.gold()
        metric = MICRO_AT_THRESHOLD if dataset.multi_label else MACRO_TOP1
        row: dict[str, Any] = {"dataset": name, "labels": len(labels), "queries": len(texts), "corpus": len(index),
                               "multi_label": dataset.multi_label, "metric": metric}
        for mode, classifier in (("shortlist", base), ("every label", every)):
            scoring = classifier.with_index(index)
            for k in KS:
                clock = time.perf_counter()
                final, model = classifier_scores(scoring, texts, list(labels), k=k, min_similarity=MIN_SIMILARITY,
                                                 batch_size=args.batch_size)
                row[f"{mode} k={k} s"] = time.perf_counter() - clock
                row[f"{mode} k={k}"] = Decisions.from_scores(final, THRESHOLD).metrics(gold)[metric]
                row[f"{mode} k={k} model alone"] = Decisions.from_scores(model, THRESHOLD).metrics(gold)[metric]
                if scoring.shortlist:
                    row[f"recall k={k}"] = shortlist_recall(scoring, texts, labels, gold_labels, k)
        # passes of a short text with every label scored (a long one can take more); the shortlist takes one
        row["passes every label"] = len(every.processor.label_sets([labels])[0].chunks(10**6, every.max_labels_per_pass))
        rows.append(row)
        print(f"[{time.perf_counter() - started:.0f} s] {json.dumps(row)}", flush=True)

    meta = {
        "command": " ".join(["python benchmarks/shortlist.py", *sys.argv[1:]]),
        "classifier": repr(base),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "total_s": round(time.perf_counter() - started, 1),
    }
    results = {"meta": meta, "rows": rows, "average": average(rows)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_name(out.name + ".json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    report = render(results)
    out.with_name(out.name + ".md").write_text(report, encoding="utf-8")
    print(report)
    return 0


def average(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean over the sets of every F1 and recall column."""
    keys = [key for key, value in rows[0].items() if isinstance(value, float) and not key.endswith(" s")]
    out = {key: float(np.mean([row[key] for row in rows])) for key in keys}
    for k in KS:
        for part in ("all_true_kept", "true_kept"):
            out[f"recall k={k} {part}"] = float(np.mean([row[f"recall k={k}"][part] for row in rows]))
    return out


def render(results: dict[str, Any]) -> str:
    meta, rows, avg = results["meta"], results["rows"], results["average"]
    lines = [
        "# Label shortlist: recall and F1 against scoring every label",
        "",
        f"Command: `{meta['command']}` ({meta['total_s']:.0f} s); `{meta['classifier']}`; {meta['machine']}; 1-minute "
        f"load average {meta['load_average_before_after'][0]} before, {meta['load_average_before_after'][1]} after.",
        "",
        "Recall: share of queries whose true labels are all in the shortlist (mean share of true labels kept). "
        "F1: the headline metric of `rac eval` (micro-F1 @0.5 on multi-label sets, top-1 macro-F1 otherwise), "
        "final scores / the model's own.",
        "",
        "| dataset | labels | passes, every label (short text) | recall k=0 | recall k=3 | F1 k=0 shortlist | F1 k=0 every label "
        "| F1 k=3 shortlist | F1 k=3 every label |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def f1(row: dict[str, Any], mode: str, k: int) -> str:
        return f"{row[f'{mode} k={k}']:.3f} / {row[f'{mode} k={k} model alone']:.3f}"

    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['labels']} | {r['passes every label']} "
            f"| {r['recall k=0']['all_true_kept']:.3f} ({r['recall k=0']['true_kept']:.3f}) "
            f"| {r['recall k=3']['all_true_kept']:.3f} ({r['recall k=3']['true_kept']:.3f}) "
            f"| {f1(r, 'shortlist', 0)} | {f1(r, 'every label', 0)} | {f1(r, 'shortlist', 3)} | {f1(r, 'every label', 3)} |"
        )
    lines.append(
        f"| **average** | | | {avg['recall k=0 all_true_kept']:.3f} ({avg['recall k=0 true_kept']:.3f}) "
        f"| {avg['recall k=3 all_true_kept']:.3f} ({avg['recall k=3 true_kept']:.3f}) "
        f"| {f1(avg, 'shortlist', 0)} | {f1(avg, 'every label', 0)} | {f1(avg, 'shortlist', 3)} | {f1(avg, 'every label', 3)} |"
    )
    seconds = {mode: sum(r[f"{mode} k={k} s"] for r in rows for k in KS) for mode in ("shortlist", "every label")}
    lines += ["", f"Model time over all sets and both k: shortlist {seconds['shortlist']:.0f} s, every label "
              f"{seconds['every label']:.0f} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

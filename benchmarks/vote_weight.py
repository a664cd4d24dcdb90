"""Choose ``RACClassifier``'s ``vote_weight`` without touching a test split.

The model scores a seeded sample of queries once per dataset with k retrieved examples; the scores are then
mixed with the retrieved examples' labels at each weight of the grid (``rac.evaluation.with_votes``, the
classifier's own rule), and the average headline F1 (as ``rac eval`` defines it) is printed per weight.

* ``--split train`` (default): the dev sets' train splits only, halved into queries and corpus
  (``load_dataset(queries_from_train=True)``); test rows are never read. These are label spaces the model
  never trained on, as a user's would be.
* ``--split test --data /work/shared/data/train``: held-out test rows of the training pool, whose label
  spaces the model did train on (the model's home ground; shown for comparison).

    python benchmarks/vote_weight.py --max-queries 200  # shipped model, dev train splits, k=3 (the default's run)
    python benchmarks/vote_weight.py --split test --data /work/shared/data/train --out benchmarks/results/vote_weight_pool
    python benchmarks/vote_weight.py --quick          # 3 sets, 30 queries: a dry run of the machinery

Writes ``benchmarks/results/vote_weight.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rac.evaluation import (  # noqa: E402
    MACRO_TOP1,
    MICRO_AT_THRESHOLD,
    Decisions,
    load_dataset,
    score_with_model,
    vote,
    with_votes,
)

DEV = Path("/work/shared/data/dev")
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
QUICK_DATASETS = ("hwu64", "tweet_irony", "semeval2018_ec", "bbc_news", "trec", "nlupp_banking")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEV, help="folder of dataset folders (default: %(default)s)")
    parser.add_argument("--split", choices=("train", "test"), default="train",
                        help="where queries come from: half of train (corpus: the other half), or test (corpus: "
                             "train) (default: %(default)s)")
    parser.add_argument("--model", default=None, help="GLiClass checkpoint folder (default: rac's shipped model)")
    parser.add_argument("--k", type=int, default=3, help="retrieved examples per query (default: %(default)s)")
    parser.add_argument("--max-queries", type=int, default=100, help="queries per dataset (default: %(default)s)")
    parser.add_argument("--max-corpus", type=int, default=1000, help="corpus rows per dataset (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_DATASETS)}, 30 queries")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "vote_weight",
                        help="output stem: OUT.json and OUT.md (default: benchmarks/results/vote_weight)")
    args = parser.parse_args()
    if args.split == "test" and "/dev/" in f"{args.data.resolve()}/":
        raise SystemExit(f"refusing to choose a setting on the test split of an evaluation folder: {args.data}")

    from rac.classifier import RACClassifier
    from rac.embedding import Embedder
    from rac.index import ExampleIndex
    from rac.retrieval import Retriever

    # every set needs a train split: the corpus for --split test (a set without one trained on its test
    # split), the queries and corpus for --split train
    folders = sorted(p for p in args.data.iterdir() if (p / "train.jsonl").is_file() and (p / "test.jsonl").is_file())
    if args.quick:
        folders = [p for p in folders if p.name in QUICK_DATASETS]
    max_queries = 30 if args.quick else args.max_queries
    command = "python " + shlex.join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    start = time.perf_counter()
    embedder = Embedder()
    classifier = RACClassifier.from_pretrained(args.model)
    rows = []
    for folder in folders:
        dataset = load_dataset(folder, max_queries=max_queries, max_corpus=args.max_corpus,
                               queries_from_train=args.split == "train")
        texts, labels, gold = [q.text for q in dataset.queries], list(dataset.labels), dataset.gold()
        index = ExampleIndex.build(dataset.corpus, embedder, show_progress=False)
        vectors = embedder.encode(texts, show_progress=False)  # once, for retrieval and embedding zero-shot
        neighbours = Retriever(index, k=args.k).retrieve(texts, vectors=vectors)
        scores = score_with_model(classifier, texts, labels, neighbours)
        metric = MICRO_AT_THRESHOLD if dataset.multi_label else MACRO_TOP1
        zero_shot = Decisions.from_scores(vectors @ embedder.encode(labels, show_progress=False).T, 0.5)
        row = {
            "dataset": dataset.name, "metric": metric, "labels": len(labels),
            "with_neighbour": float(np.mean([bool(found) for found in neighbours])),
            "vote": vote(neighbours, labels, zero_shot).metrics(gold)[metric],
            "weights": {str(w): Decisions.from_scores(with_votes(scores, neighbours, labels, w), 0.5).metrics(gold)[metric]
                        for w in WEIGHTS},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    averages = {str(w): float(np.mean([r["weights"][str(w)] for r in rows])) for w in WEIGHTS}
    best = max(WEIGHTS, key=lambda w: averages[str(w)])
    vote_average = float(np.mean([r["vote"] for r in rows]))
    seconds = time.perf_counter() - start
    head = ["dataset", "labels", *[f"w={w}" for w in WEIGHTS], "retrieval vote", "with neighbour"]
    lines = [
        "# vote_weight: the model's scores mixed with its examples' labels",
        "",
        f"Command: `{command}`",
        "",
        f"Model `{args.model or 'rac default model'}`, k={args.k} retrieved examples (cosine >= 0.5), "
        f"{max_queries} queries and {args.max_corpus} corpus rows per dataset of `{args.data}` (seeded; "
        + ("queries and corpus: the two halves of the train split, test never read" if args.split == "train"
           else "queries: test split, corpus: train split") + "), "
        f"headline F1 as in `rac eval`; {seconds:.0f} s. `w=0` is the model alone; best average: **w={best}**.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [r["dataset"], str(r["labels"]), *[f"{r['weights'][str(w)]:.3f}" for w in WEIGHTS],
                 f"{r['vote']:.3f}", f"{r['with_neighbour']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| " + " | ".join(["**average**", "", *[f"**{averages[str(w)]:.3f}**" for w in WEIGHTS],
                                    f"**{vote_average:.3f}**", ""]) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"command": command, "data": str(args.data), "split": args.split, "k": args.k, "max_queries": max_queries,
              "max_corpus": args.max_corpus, "seconds": seconds, "datasets": rows, "average": averages,
              "vote_average": vote_average, "best": best}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

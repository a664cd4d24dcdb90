"""Accuracy of rac on every dev set: the classifier with k = 0..3 retrieved examples against the peers on
the same embeddings (logreg, kNN, centroid, embedding zero-shot, retrieval vote; see ``rac.evaluation``).

Writes ``benchmarks/results/accuracy.json`` (every number, the config and this command), ``accuracy.md`` and
``accuracy.png``.

    python benchmarks/accuracy.py                      # rac's shipped model, 13 dev sets, default sample sizes
    python benchmarks/accuracy.py --unseen-labels 0.3 --k 0,3 --out benchmarks/results/accuracy_drift
    python benchmarks/accuracy.py --dtype float32 --out benchmarks/results/accuracy_fp32
    python benchmarks/accuracy.py --model CKPT --quick # 3 small sets, 40 queries: a dry run of the machinery
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rac.evaluation import DEFAULT_MAX_CORPUS, DEFAULT_MAX_QUERIES, evaluate  # noqa: E402

DATA = Path("/work/shared/data/dev")
QUICK_DATASETS = ("ethos_multilabel", "nlupp_banking", "scicite")
QUICK_QUERIES = 40


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder of dataset folders (default: %(default)s)")
    parser.add_argument("--model", default=None, help="GLiClass checkpoint folder (default: rac's shipped model)")
    parser.add_argument("--max-queries", type=int, default=None,
                        help=f"queries per dataset (default: {DEFAULT_MAX_QUERIES}, {QUICK_QUERIES} with --quick)")
    parser.add_argument("--max-corpus", type=int, default=DEFAULT_MAX_CORPUS,
                        help="corpus rows indexed per dataset; 0 = all (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_DATASETS)}, few queries")
    parser.add_argument("--k", default="0,1,2,3", help="comma-separated k values (default: %(default)s)")
    parser.add_argument("--unseen-labels", type=float, default=0.0,
                        help="share of each set's labels with no corpus row (label drift; default: %(default)s)")
    parser.add_argument("--no-fusion", action="store_true", help="the k columns without the evidence fusion")
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "accuracy",
                        help="output stem: writes OUT.json and OUT.md (default: benchmarks/results/accuracy)")
    args = parser.parse_args()

    folders = sorted(p for p in args.data.iterdir() if (p / "test.jsonl").is_file())
    if args.quick:
        folders = [p for p in folders if p.name in QUICK_DATASETS]
    if not folders:
        raise SystemExit(f"no dataset folders with a test.jsonl under {args.data}")
    max_queries = args.max_queries or (QUICK_QUERIES if args.quick else DEFAULT_MAX_QUERIES)
    command = "python " + shlex.join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    report = evaluate(folders, model=args.model, max_queries=max_queries, max_corpus=args.max_corpus or None,
                      ks=[int(k) for k in args.k.split(",")], unseen_labels=args.unseen_labels,
                      fusion=None if args.no_fusion else "default", dtype=args.dtype, command=command)
    print(report.table())
    for path in report.write(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

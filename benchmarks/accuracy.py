"""Accuracy of rac on every dev set: the model with k = 0..3 retrieved examples against embedding zero-shot
and retrieval vote (see ``rac.evaluation`` for the columns and metrics).

Writes ``benchmarks/results/accuracy.json`` (every number, the config and this command) and ``accuracy.md``.

    python benchmarks/accuracy.py                      # rac's shipped model, 13 dev sets, default sample sizes
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
                      command=command)
    print(report.table())
    for path in report.write(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Rows per second of batch classification: in-process (``rac.batch.predict_batches``, what ``rac predict
--output`` runs) against Ray Data (``rac.distributed.predict_dataset``) with 1 and 2 actors, on this machine.

The rows are ``data/sample.jsonl``'s texts (cycled to ``--rows``), its 7 labels, k=3 retrieval from an index
of the same corpus, 64 rows per batch. Each system's time is end to end from data in memory to output
batches back in the driver, including what it takes to load the model (in-process: once; Ray: once per
actor, in parallel, plus starting the actors); the in-process classification alone is given too. Ray runs
on a local instance with ``num_cpus=2``; each actor reserves 1 CPU and runs torch on 1 thread, while the
in-process run uses torch's default threads (the 2 cores).

    python benchmarks/batch.py                 # 256 rows
    python benchmarks/batch.py --rows 128 --out /tmp/batch   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rac.batch import predict_batches  # noqa: E402
from rac.classifier import RACClassifier  # noqa: E402
from rac.corpus import read_corpus  # noqa: E402
from rac.index import build_index  # noqa: E402

SAMPLE = ROOT / "data" / "sample.jsonl"
BATCH_SIZE = 64


def run_all(table: pa.Table, labels: list[str], index: Path) -> tuple[dict[str, dict], str]:
    """Time in-process, then Ray with 1 and 2 actors, on the same rows; returns the runs and the dtype."""
    import ray

    from rac.distributed import from_table, predict_dataset

    build_index(SAMPLE, index, show_progress=False)
    runs = {}
    start = time.perf_counter()
    classifier = RACClassifier.from_pretrained(index=index)
    loaded = time.perf_counter()
    rows = sum(len(b) for b in predict_batches(classifier, table, labels, text_column="text", batch_size=BATCH_SIZE))
    end = time.perf_counter()
    runs["in-process"] = {"rows": rows, "wall_s": round(end - start, 2), "rows_per_s": round(rows / (end - start), 1),
                          "load_s": round(loaded - start, 2), "classify_rows_per_s": round(rows / (end - loaded), 1)}
    dtype = classifier.dtype_name
    del classifier

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        for workers in (1, 2):
            start = time.perf_counter()
            dataset = predict_dataset(from_table(table, BATCH_SIZE, workers), labels, index=index,
                                      batch_size=BATCH_SIZE, num_workers=workers)
            rows = sum(len(b) for b in dataset.iter_batches(batch_format="pyarrow", batch_size=None))
            wall = time.perf_counter() - start
            runs[f"ray, {workers} worker{'s' if workers > 1 else ''}"] = {
                "rows": rows, "wall_s": round(wall, 2), "rows_per_s": round(rows / wall, 1)}
    finally:
        ray.shutdown()

    return runs, dtype


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256, help="rows to classify (default: %(default)s)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "batch"), help="OUT.json + OUT.md")
    args = parser.parse_args()
    began, load_before = time.time(), os.getloadavg()
    corpus = read_corpus(SAMPLE)
    labels = sorted({label for example in corpus for label in example.true_labels})
    table = pa.table({"row": list(range(args.rows)), "text": [corpus[i % len(corpus)].text for i in range(args.rows)]})
    work = Path(tempfile.mkdtemp(prefix="rac-batch-bench-"))
    try:
        runs, dtype = run_all(table, labels, work / "index")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = runs["in-process"]["rows_per_s"]
    for run in runs.values():
        run["vs_in_process"] = round(run["rows_per_s"] / base, 2)
    report = {"command": "python benchmarks/batch.py" + (f" --rows {args.rows}" if args.rows != 256 else ""),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "dtype": dtype,
              "labels": len(labels), "k": 3, "batch_size": BATCH_SIZE,
              "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
              "runs": runs, "wall_s": round(time.time() - began, 1)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# Batch classification: in-process vs Ray Data", "",
        f"`{report['command']}` on {report['machine']}, {report['wall_s']} s; {args.rows} rows, {len(labels)} labels, "
        f"k=3, {BATCH_SIZE} rows per batch, dtype {dtype}. Load average (1 min) before/after: "
        f"{report['load_average_before_after']}.", "",
        "**Noisy numbers**: the machine was shared with other jobs during the run; compare the ratios of runs "
        "made minutes apart, not the absolute figures. Times are end to end and include loading the model "
        "(once in-process; once per actor on Ray, in parallel, plus actor start-up).", "",
        "| run | rows | wall s | rows/s | vs in-process | in-process: load s, classify-only rows/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, run in runs.items():
        extra = f"{run['load_s']}, {run['classify_rows_per_s']}" if "load_s" in run else ""
        lines.append(f"| {name} | {run['rows']} | {run['wall_s']} | {run['rows_per_s']} | {run['vs_in_process']} | {extra} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

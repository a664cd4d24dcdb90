"""bf16 against fp32, side by side in one process: do the scores and the neighbours agree, and how much faster is it?

Both classifiers share one model (``dtype`` is autocast around the forward; the weights stay fp32), both
embedders one sentence-transformers model, so every comparison is the same work in two precisions:

* agreement: dev test texts (benchmarks/speed.py's stratified sample) at 10 and 50 real label names,
  zero-shot: top-1 agreement, max / p99 / mean |score difference| over every (text, label) pair; at 50
  labels both with every label scored (two passes, precision alone) and with the label shortlist (whose
  embedder runs in the same precision);
* index: the same dev train rows embedded and indexed in each precision, the texts' top-3 neighbours
  compared (recall@3 of the fp32 sets), through HNSW and by exact search, and the vectors' cosine;
* speed: ``predict`` at 10 labels on the short texts (and on all of them), and ``ExampleIndex.build``;
  runs alternate between the precisions and the best of ``--repeats`` counts. The ratio is taken on the
  process's CPU time with one torch thread (``--threads``): on a shared machine wall time mostly measures
  the neighbours; the wall-time ratio is reported beside it.

    python benchmarks/precision.py                      # 500 texts, 1,400 index rows
    python benchmarks/precision.py --texts 140 --index-rows 70 --out /tmp/precision   # a reduced run
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import DATASETS, SHORT_TOKENS, label_sets, load_index_rows, load_texts, token_lengths  # noqa: E402

from rac.classifier import RACClassifier  # noqa: E402
from rac.embedding import Embedder  # noqa: E402
from rac.index import ExampleIndex  # noqa: E402
from rac.model import load_default_model  # noqa: E402
from rac.precision import cpu_has_native_bf16  # noqa: E402

DTYPES = ("float32", "bfloat16")
K = 3


def alternating(runs: dict[str, Any], repeats: int) -> dict[str, dict[str, float]]:
    """Best CPU and wall seconds of each ``runs[name]()`` over ``repeats`` rounds, the names taking turns."""
    best = {name: {"cpu": float("inf"), "wall": float("inf")} for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            cpu, wall = time.process_time(), time.perf_counter()
            run()
            best[name]["cpu"] = min(best[name]["cpu"], time.process_time() - cpu)
            best[name]["wall"] = min(best[name]["wall"], time.perf_counter() - wall)
    return best


def speedup(seconds: dict[str, dict[str, float]]) -> dict[str, float]:
    """fp32 time / bf16 time, on CPU and on wall time."""
    return {clock: seconds["float32"][clock] / seconds["bfloat16"][clock] for clock in ("cpu", "wall")}


def agreement(full: list[Any], half: list[Any]) -> dict[str, float]:
    """Top-1 agreement and |score difference| statistics between two runs' results on the same texts; for the
    texts whose top label differs, how far apart the two labels were in float32 (a near tie flips easily)."""
    diffs = np.array([abs(a.scores[name] - b.scores[name]) for a, b in zip(full, half) for name in a.scores])
    gaps = [a.labels[0][1] - a.scores[b.labels[0][0]] for a, b in zip(full, half) if a.labels[0][0] != b.labels[0][0]]
    return {
        "top1_agreement": float(np.mean([a.labels[0][0] == b.labels[0][0] for a, b in zip(full, half)])),
        "flips_max_fp32_gap": float(max(gaps, default=0.0)),
        "max_abs_diff": float(diffs.max()),
        "p99_abs_diff": float(np.quantile(diffs, 0.99)),
        "mean_abs_diff": float(diffs.mean()),
        "pairs": int(diffs.size),
    }


def neighbour_recall(reference: np.ndarray, other: np.ndarray) -> float:
    """Mean share of each row's reference neighbour ids that ``other`` also found."""
    return float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(reference.tolist(), other.tolist())]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=500, help="dev test texts (default: %(default)s)")
    parser.add_argument("--index-rows", type=int, default=200, help="train rows per dataset indexed (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed rounds, best kept (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="predict batch size (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--out", default=None, help="results stem (default: benchmarks/results/precision)")
    args = parser.parse_args()
    out = Path(args.out or Path(__file__).resolve().parent / "results" / "precision")
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)

    model = load_default_model()
    classifiers = {
        (dtype, shortlist): RACClassifier(model, dtype=dtype, shortlist=shortlist)
        for dtype in DTYPES for shortlist in (True, False)
    }
    embedders = {dtype: Embedder(dtype=dtype) for dtype in DTYPES}
    texts = load_texts(args.texts)
    short = [t for t, n in zip(texts, token_lengths(texts, model.tokenizer)) if n <= SHORT_TOKENS]
    names = label_sets()

    def predict(dtype: str, batch: list[str], labels: list[str], shortlist: bool = True) -> list[Any]:
        return classifiers[dtype, shortlist].predict(batch, labels, threshold=0.0, batch_size=args.batch_size)

    for dtype in DTYPES:  # warm-up: thread pools, autocast kernels, the shortlist's label vectors
        predict(dtype, texts[:8], names[50])

    scores = {}
    for n, shortlist in ((10, False), (50, False), (50, True)):
        runs = {dtype: predict(dtype, texts, names[n], shortlist) for dtype in DTYPES}
        key = f"{n} labels" + (", shortlist" if shortlist else (", every label" if n > 25 else ""))
        scores[key] = agreement(runs["float32"], runs["bfloat16"])
        print(f"[{time.perf_counter() - started:.0f} s] {key}: {json.dumps(scores[key])}", flush=True)

    rows = load_index_rows(args.index_rows)
    indexes: dict[str, ExampleIndex] = {}

    def build(dtype: str) -> None:
        indexes[dtype] = ExampleIndex.build(rows, embedders[dtype], show_progress=False)

    build_s = alternating({dtype: (lambda d=dtype: build(d)) for dtype in DTYPES}, args.repeats)
    query = {dtype: embedders[dtype].encode(texts) for dtype in DTYPES}
    stored = {dtype: indexes[dtype].vectors(range(len(rows))) for dtype in DTYPES}
    hnsw = {dtype: indexes[dtype].search(query[dtype], K)[0] for dtype in DTYPES}
    exact = {dtype: np.argsort(-(query[dtype] @ stored[dtype].T), axis=1)[:, :K] for dtype in DTYPES}
    cosine = (stored["float32"] * stored["bfloat16"]).sum(1)
    index = {
        "rows": len(rows),
        "recall_at_3_hnsw": neighbour_recall(hnsw["float32"], hnsw["bfloat16"]),
        "recall_at_3_exact": neighbour_recall(exact["float32"], exact["bfloat16"]),
        "vector_cosine_min": float(cosine.min()),
        "vector_cosine_mean": float(cosine.mean()),
        "build_s": build_s,
        "build_speedup": speedup(build_s),
    }
    print(f"[{time.perf_counter() - started:.0f} s] index: {json.dumps(index)}", flush=True)

    speed = {}
    for what, batch in (("short texts", short), ("all texts", texts)):
        seconds = alternating({dtype: (lambda d=dtype, b=batch: predict(d, b, names[10])) for dtype in DTYPES}, args.repeats)
        speed[what] = {"texts": len(batch), "seconds": seconds, "speedup": speedup(seconds)}
        print(f"[{time.perf_counter() - started:.0f} s] predict, 10 labels, {what}: {json.dumps(speed[what])}", flush=True)

    meta = {
        "command": " ".join(["python benchmarks/precision.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}",
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "texts": len(texts), "short_texts": len(short), "datasets": list(DATASETS), "repeats": args.repeats,
        "threads": args.threads,
        "total_s": round(time.perf_counter() - started, 1),
    }
    results = {"meta": meta, "agreement": scores, "index": index, "speed": speed}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_name(out.name + ".json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    report = render(results)
    out.with_name(out.name + ".md").write_text(report, encoding="utf-8")
    print(report)
    return 0


def render(results: dict[str, Any]) -> str:
    meta, index, speed = results["meta"], results["index"], results["speed"]
    lines = [
        "# Precision: bfloat16 against float32",
        "",
        f"Command: `{meta['command']}` ({meta['total_s']:.0f} s); {meta['machine']}; 1-minute load average "
        f"{meta['load_average_before_after'][0]} before, {meta['load_average_before_after'][1]} after.",
        "",
        f"Agreement, shipped model, zero-shot, {meta['texts']} dev test texts ({', '.join(meta['datasets'])}), "
        "real clinc150 label names; every (text, label) score compared:",
        "",
        "| labels | top-1 agreement | flipped texts: largest fp32 gap between the two top labels | max abs diff "
        "| p99 abs diff | mean abs diff | pairs |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, row in results["agreement"].items():
        lines.append(f"| {key} | {row['top1_agreement']:.1%} | {row['flips_max_fp32_gap']:.4f} | {row['max_abs_diff']:.4f} "
                     f"| {row['p99_abs_diff']:.4f} | {row['mean_abs_diff']:.5f} | {row['pairs']} |")
    lines += [
        "",
        f"Index: {index['rows']} dev train rows embedded in each precision; the texts' top-3 neighbours in the bf16 "
        f"index against the fp32 one: recall@3 {index['recall_at_3_hnsw']:.3f} through HNSW, "
        f"{index['recall_at_3_exact']:.3f} by exact search; vector cosine bf16 vs fp32 min "
        f"{index['vector_cosine_min']:.5f}, mean {index['vector_cosine_mean']:.6f}.",
        "",
        f"Speed, {meta['threads']} torch thread(s), best of {meta['repeats']} alternating rounds; speed-up = fp32 time / "
        "bf16 time, on the process's CPU seconds (the figure that holds on a shared machine) and on wall seconds:",
        "",
        "| what | fp32 CPU s | bf16 CPU s | speed-up (CPU) | speed-up (wall) |",
        "|---|---|---|---|---|",
    ]
    timed = [(f"index build, {index['rows']} rows", index["build_s"], index["build_speedup"])]
    timed += [(f"predict, 10 labels, {row['texts']} {what}", row["seconds"], row["speedup"]) for what, row in speed.items()]
    for what, seconds, ratio in timed:
        lines.append(f"| {what} | {seconds['float32']['cpu']:.2f} | {seconds['bfloat16']['cpu']:.2f} "
                     f"| {ratio['cpu']:.2f}x | {ratio['wall']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

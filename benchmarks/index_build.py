"""Index build throughput, single-query retrieval latency (p50/p99) and recall@3 against exact search.

Two corpora: 10k real texts from /work/shared/data/train/*/train.jsonl embedded with the packaged MiniLM,
and 100k synthetic 384-d vectors (Gaussian clusters around 2,000 random centres, a stand-in for sentence
embeddings, which are far from isotropic). Queries are held-out points from the same source. Latency is
measured one query at a time through ``ExampleIndex.search`` (what the retriever calls), after warm-up.

    python benchmarks/index_build.py                   # writes benchmarks/results/index_build.{md,json}
    python benchmarks/index_build.py --sizes 10000 --ef 32 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rac.embedding import Embedder  # noqa: E402
from rac.formatting import RACExample  # noqa: E402
from rac.index import DEFAULT_EF_CONSTRUCTION, DEFAULT_M, ExampleIndex  # noqa: E402

DATA = Path("/work/shared/data/train")
RESULTS = Path(__file__).resolve().parent / "results"


def real_corpus(n: int, n_queries: int, seed: int) -> tuple[list[RACExample], list[str]]:
    """``n`` unique training texts (all train-role datasets, shuffled) plus ``n_queries`` disjoint held-out texts."""
    rows: dict[str, tuple[str, ...]] = {}
    for path in sorted(DATA.glob("*/train.jsonl")):
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                item = json.loads(line)
                rows.setdefault(item["text"], tuple(item["labels"]))
    texts = sorted(rows)
    order = np.random.default_rng(seed).permutation(len(texts))
    if len(order) < n + n_queries:
        raise SystemExit(f"only {len(order)} unique training texts, need {n + n_queries}")
    corpus = [RACExample(texts[i], rows[texts[i]]) for i in order[:n]]
    return corpus, [texts[i] for i in order[n : n + n_queries]]


def synthetic(n: int, n_queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors: 2,000 centres, per-point noise so a point's cosine to its centre is ~0.7."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2000, dim)).astype(np.float32)
    points = centres[rng.integers(len(centres), size=n + n_queries)] + rng.normal(size=(n + n_queries, dim)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points[:n], points[n:]


def exact_top(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute-force cosine top-k (numpy), in blocks to bound memory."""
    out = []
    for start in range(0, len(queries), 256):
        sims = queries[start : start + 256] @ base.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        out.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(out)


def measure(index: ExampleIndex, base: np.ndarray, queries: np.ndarray, ef_values: list[int], k: int = 3) -> list[dict]:
    """Recall@k and single-query latency for each ef_search on one graph."""
    truth = exact_top(base, queries, k)
    rows = []
    for ef in ef_values:
        index.ef_search = ef
        for q in queries[:50]:  # warm-up
            index.search(q[None], k)
        latencies = np.empty(len(queries))
        found = np.empty((len(queries), k), dtype=np.int64)
        for i, q in enumerate(queries):
            t0 = time.perf_counter_ns()
            ids, _ = index.search(q[None], k)
            latencies[i] = (time.perf_counter_ns() - t0) / 1e6
            found[i] = ids[0]
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)])
        rows.append({"ef_search": ef, "recall_at_3": round(float(recall), 4),
                     "p50_ms": round(float(np.percentile(latencies, 50)), 4), "p99_ms": round(float(np.percentile(latencies, 99)), 4)})
        print(f"    ef={ef:4d}  recall@3={recall:.4f}  p50={rows[-1]['p50_ms']:.3f} ms  p99={rows[-1]['p99_ms']:.3f} ms", flush=True)
    return rows


def run(name: str, examples: list[RACExample], base: np.ndarray, queries: np.ndarray, args: argparse.Namespace,
        embed_s: float | None) -> list[dict]:
    results = []
    for m in args.M:
        t0 = time.perf_counter()
        index = ExampleIndex.build(examples, vectors=base, M=m, ef_construction=args.ef_construction, num_threads=args.threads)
        build_s = time.perf_counter() - t0
        index.num_threads = 1  # latency is single-query, single-thread
        print(f"  {name}: M={m} built {len(base)} in {build_s:.1f}s ({len(base) / build_s:,.0f} ex/s)", flush=True)
        for row in measure(index, base, queries, args.ef):
            results.append({"corpus": name, "n": len(base), "dim": base.shape[1], "M": m, "ef_construction": args.ef_construction,
                            "build_threads": args.threads, "build_s": round(build_s, 2),
                            "build_examples_per_s": round(len(base) / build_s),
                            "embed_examples_per_s": round(len(base) / embed_s) if embed_s else None, **row})
    return results


def write_report(results: list[dict], args: argparse.Namespace) -> None:
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, Python {platform.python_version()}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, "machine": machine, "queries": args.queries, "results": results}
    (RESULTS / "index_build.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# Index build and retrieval benchmark", "",
        f"Command: `{command}`  ", f"Machine: {machine}  ",
        f"Queries: {args.queries} held-out, one at a time through `ExampleIndex.search` (k=3), recall@3 vs numpy brute force.", "",
        "| corpus | n | M | ef_c | build ex/s | embed ex/s | ef_search | recall@3 | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['corpus']} | {r['n']:,} | {r['M']} | {r['ef_construction']} | {r['build_examples_per_s']:,} | "
                     f"{r['embed_examples_per_s'] or '-'} | {r['ef_search']} | {r['recall_at_3']:.4f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} |")
    (RESULTS / "index_build.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000], help="10000 = real texts, others synthetic")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--M", nargs="+", type=int, default=[DEFAULT_M])
    parser.add_argument("--ef", nargs="+", type=int, default=[16, 32, 64, 128])
    parser.add_argument("--ef-construction", type=int, default=DEFAULT_EF_CONSTRUCTION)
    parser.add_argument("--threads", type=int, default=1, help="build threads (1 = the library default, reproducible graph)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = []
    for n in args.sizes:
        if n == 10_000:
            examples, query_texts = real_corpus(n, args.queries, args.seed)
            embedder = Embedder()
            t0 = time.perf_counter()
            base = embedder.encode([e.text for e in examples], show_progress=True)
            embed_s = time.perf_counter() - t0
            queries = embedder.encode(query_texts)
            print(f"  embedded {n} real texts in {embed_s:.1f}s", flush=True)
            results += run("real texts (MiniLM)", examples, base, queries, args, embed_s)
        else:
            base, queries = synthetic(n, args.queries, 384, args.seed)
            examples = [RACExample(f"synthetic {i}", ("x",)) for i in range(n)]
            results += run("synthetic clustered 384-d", examples, base, queries, args, None)
    write_report(results, args)
    print(f"wrote {RESULTS / 'index_build.md'}")


if __name__ == "__main__":
    main()

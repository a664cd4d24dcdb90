"""``rac serve`` throughput and latency at 1, 8 and 32 concurrent clients, against ``RACClassifier.predict``
called in-process one request at a time (the same texts, labels, index and options).

Every request is one text of ``data/sample.jsonl`` (cycled) against its 7 labels with k=3 retrieval from an
index of the same corpus (a text never retrieves itself). The server runs in a subprocess on 127.0.0.1 with
its defaults (5 ms batch wait, 64 texts per shared call); each client is a thread with its own HTTP
connection, sending its next request when the last one is answered. The in-process baseline runs before and
after the server, so drift in a shared machine's load shows, and twice each time: on the main thread (as a
script calls it) and on a worker thread, as the server runs its predictions; on a loaded machine the two
differ several-fold (torch's intra-op threads contend with other jobs' processes differently), so the
server is compared with both. Clients, server and baseline share the machine's cores: on a 2-core box the
clients' own CPU time is part of what is measured.

    python benchmarks/serve.py                        # 60 / 60 / 160 / 320 requests; results in benchmarks/results/
    python benchmarks/serve.py --requests 20 --out /tmp/serve   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rac.classifier import RACClassifier  # noqa: E402
from rac.corpus import read_corpus  # noqa: E402
from rac.index import ExampleIndex, build_index  # noqa: E402

SAMPLE = ROOT / "data" / "sample.jsonl"
#: Requests per run at each client count (bounded, so the whole run stays within a few minutes).
REQUESTS = {1: 60, 8: 160, 32: 320}
CLIENTS = tuple(REQUESTS)


def summary(latencies: list[float], wall: float) -> dict[str, float]:
    ms = np.asarray(latencies) * 1000
    return {"requests": len(latencies), "wall_s": round(wall, 3), "throughput_rps": round(len(latencies) / wall, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def in_process(classifier: RACClassifier, texts: list[str], labels: list[str]) -> dict[str, dict[str, float]]:
    """One request at a time, on the main thread and on a worker thread."""
    def run() -> dict[str, float]:
        latencies, start = [], time.perf_counter()
        for text in texts:
            t = time.perf_counter()
            classifier.predict([text], labels, k=3)
            latencies.append(time.perf_counter() - t)
        return summary(latencies, time.perf_counter() - start)

    with ThreadPoolExecutor(1) as worker:
        return {"main thread": run(), "worker thread": worker.submit(run).result()}


def over_http(url: str, texts: list[str], labels: list[str], clients: int) -> dict[str, float]:
    def client(part: list[str]) -> list[float]:
        out = []
        with httpx.Client(base_url=url, timeout=300) as http:
            for text in part:
                t = time.perf_counter()
                response = http.post("/predict", json={"texts": [text], "labels": labels, "k": 3})
                response.raise_for_status()
                out.append(time.perf_counter() - t)
        return out

    parts = [texts[i::clients] for i in range(clients)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [x for part in pool.map(client, parts) for x in part]
    return summary(latencies, time.perf_counter() - start)


def batch_stats(url: str) -> tuple[float, float]:
    """(shared predict calls, texts in them) so far, from /metrics."""
    values = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(("rac_batch_texts_count", "rac_batch_texts_sum")):
            name, value = line.split()
            values[name] = float(value)
    return values["rac_batch_texts_count"], values["rac_batch_texts_sum"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=None,
                        help="requests per run (default: 60 in-process and at 1 client, 160 at 8, 320 at 32)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve"), help="OUT.json + OUT.md")
    args = parser.parse_args()
    began = time.time()
    load_before = os.getloadavg()

    corpus = read_corpus(SAMPLE)
    labels = sorted({label for example in corpus for label in example.true_labels})
    texts = [example.text for example in corpus]
    counts = {n: args.requests or REQUESTS[n] for n in CLIENTS}
    base_count = args.requests or REQUESTS[1]

    work = Path(tempfile.mkdtemp(prefix="rac-serve-bench-"))
    try:
        build_index(SAMPLE, work / "index", show_progress=False)
        shutil.copytree(work / "index", work / "served")
        classifier = RACClassifier.from_pretrained(index=ExampleIndex.load(work / "index"))
        classifier.predict(texts[:8], labels)  # warm-up
        cycle = lambda n, offset=0: [texts[(offset + i) % len(texts)] for i in range(n)]  # noqa: E731
        before = in_process(classifier, cycle(base_count), labels)

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "rac.cli", "serve", "--index", str(work / "served"), "--port", str(port)]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            over_http(url, cycle(8), labels, 1)  # warm-up
            served = {}
            for n in CLIENTS:
                calls, batched = batch_stats(url)
                served[n] = over_http(url, cycle(counts[n], offset=17 * n), labels, n)
                calls2, batched2 = batch_stats(url)
                served[n]["mean_texts_per_forward_call"] = round((batched2 - batched) / max(calls2 - calls, 1), 2)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=120)
        after = in_process(classifier, cycle(base_count, offset=5), labels)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for where in ("main thread", "worker thread"):
        baseline_rps = (before[where]["throughput_rps"] + after[where]["throughput_rps"]) / 2
        for n in CLIENTS:
            served[n][f"vs_in_process_{where.split()[0]}"] = round(served[n]["throughput_rps"] / baseline_rps, 2)
    report = {
        "command": "python benchmarks/serve.py" + (f" --requests {args.requests}" if args.requests else ""),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "classifier_dtype": classifier.dtype_name, "labels": len(labels), "k": 3, "texts_per_request": 1,
        "in_process_before": before, "in_process_after": after, "served": {str(n): served[n] for n in CLIENTS},
        "wall_s": round(time.time() - began, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    rows = [(f"in-process, one request at a time, {where} ({when})", runs[where])
            for when, runs in (("before", before), ("after", after)) for where in runs]
    rows += [(f"rac serve, {n} client{'s' if n > 1 else ''}", served[n]) for n in CLIENTS]
    lines = [
        "# rac serve: throughput and latency", "",
        f"`{report['command']}` on {report['machine']}, {report['wall_s']} s; 1 text per request, "
        f"{len(labels)} labels, k=3, dtype {report['classifier_dtype']}. Load average (1 min) before/after: "
        f"{report['load_average_before_after']}.", "",
        "**Noisy numbers**: this 2-core machine was shared with other jobs while this ran; the in-process rows "
        "before and after the server show the drift. Compare the ratios, measured minutes apart, not the "
        "absolute figures.", "",
        "| run | requests | req/s | p50 ms | p99 ms | texts per forward call | req/s vs in-process, main thread "
        "| vs in-process, worker thread |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in rows:
        lines.append(f"| {name} | {row['requests']} | {row['throughput_rps']} | {row['p50_ms']} | {row['p99_ms']} | "
                     f"{row.get('mean_texts_per_forward_call', 1)} | {row.get('vs_in_process_main', '')} | "
                     f"{row.get('vs_in_process_worker', '')} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

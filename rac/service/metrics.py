"""Prometheus text-format metrics for ``rac serve``, hand-written (no client library is a dependency).

Counters and histograms are guarded by one lock, so handlers, the batcher and the worker thread may all
record into the same ``Metrics``.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable

#: Request latency buckets in seconds (upper bounds), and forward-pass batch sizes in texts.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out, running = [], 0
        for bound, count in zip((*map(str, self.buckets), "+Inf"), self.counts):
            running += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}')
        braces = f"{{{labels}}}" if labels else ""
        return out + [f"{name}_sum{braces} {self.total}", f"{name}_count{braces} {running}"]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Requests and errors by endpoint and status, request latency, texts per forward pass, index size."""

    def __init__(self, index_size: Callable[[], int]):
        self._lock = threading.Lock()
        self._index_size = index_size
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._latency: dict[str, _Histogram] = {}
        self._batches = _Histogram(BATCH_BUCKETS)

    def request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[endpoint, method, status] += 1
            self._latency.setdefault(endpoint, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def batch(self, texts: int) -> None:
        with self._lock:
            self._batches.observe(texts)

    def render(self) -> str:
        """The exposition text (``text/plain; version=0.0.4``)."""
        lines = ["# HELP rac_requests_total HTTP requests by endpoint, method and status code.",
                 "# TYPE rac_requests_total counter"]
        with self._lock:
            errors: dict[str, int] = defaultdict(int)
            for (endpoint, method, status), count in sorted(self._requests.items()):
                lines.append(f'rac_requests_total{{endpoint="{_escape(endpoint)}",method="{method}",code="{status}"}} {count}')
                if status >= 400:
                    errors[endpoint] += count
            lines += ["# HELP rac_request_errors_total HTTP requests answered with a 4xx or 5xx, by endpoint.",
                      "# TYPE rac_request_errors_total counter"]
            lines += [f'rac_request_errors_total{{endpoint="{_escape(e)}"}} {n}' for e, n in sorted(errors.items())]
            lines += ["# HELP rac_request_duration_seconds Time from request to response, by endpoint.",
                      "# TYPE rac_request_duration_seconds histogram"]
            for endpoint, histogram in sorted(self._latency.items()):
                lines += histogram.lines("rac_request_duration_seconds", f'endpoint="{_escape(endpoint)}"')
            lines += ["# HELP rac_batch_texts Texts per shared predict call (micro-batch size).",
                      "# TYPE rac_batch_texts histogram"]
            lines += self._batches.lines("rac_batch_texts", "")
        lines += ["# HELP rac_index_examples Examples in the served index.", "# TYPE rac_index_examples gauge",
                  f"rac_index_examples {self._index_size()}"]
        return "\n".join(lines) + "\n"

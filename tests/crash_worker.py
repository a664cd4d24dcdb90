"""Helper process for the SIGKILL trials in ``test_reliability.py`` (not a test module).

It imports rac and loads the embedder once, prints ``ready``, then for each JSON request on stdin forks a
worker that rewrites an index folder in a loop (``rac build-index`` alternating two corpora, or load + add
+ save) until the test kills it; it prints the worker's pid, reaps it, and prints ``done``.
"""

from __future__ import annotations

import itertools
import json
import os
import sys

import numpy as np
import torch

from rac.cli import main
from rac.embedding import Embedder
from rac.formatting import RACExample
from rac.index import ExampleIndex

#: Dimension and per-cycle batch of the add + save trials.
DIMENSION, BATCH = 16, 5


def added_examples(start: int, n: int) -> tuple[list[RACExample], np.ndarray]:
    """Rows ``start .. start+n-1`` of the add trials' deterministic stream (row ``i``: text ``row i``)."""
    rows = range(start, start + n)
    vectors = np.stack([np.random.default_rng(i).normal(size=DIMENSION) for i in rows]) if n else np.zeros((0, DIMENSION))
    return [RACExample(f"row {i}", (f"l{i % 3}",), id=i) for i in rows], vectors.astype(np.float32)


def _rewrite_forever(request: dict) -> None:
    out = request["out"]
    if request["mode"] == "build":
        for corpus in itertools.cycle(request["corpora"]):
            main(["build-index", corpus, "--out", out, "--quiet"])
    while True:
        index = ExampleIndex.load(out)
        index.add(*added_examples(len(index), BATCH))
        index.save(out)


def serve() -> None:
    torch.set_num_threads(1)
    Embedder().encode(["warm up"])
    print("ready", flush=True)
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the pipe carries only our replies
            try:
                _rewrite_forever(json.loads(line))
            finally:
                os._exit(1)
        print(pid, flush=True)
        os.waitpid(pid, 0)
        print("done", flush=True)


if __name__ == "__main__":
    serve()

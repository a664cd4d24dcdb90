"""Micro-batching: concurrent ``/predict`` requests share forward passes, without sharing their fate.

Requests wait up to ``max_wait`` seconds (from the oldest one) or until ``max_batch`` texts are queued;
then each group of requests with the same options (``PredictOptions``) goes into one
``RACClassifier.predict`` call with one label list (and example list) per text. A text scores the same
alone or in a batch (pooling ignores padding), so a request's result does not depend on its company
beyond float rounding (< 1e-5). If a shared call fails, each request is retried alone, so one bad request
only fails itself.

All predictions run on the one-thread ``executor`` the server also uses for index changes; the batcher
itself lives on the event loop and is not thread-safe.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from rac.service.schema import PredictOptions, PredictRequest

#: ``(texts, labels per text, examples per text or None, options) -> one result dict per text``.
PredictFn = Callable[[list[str], list[Any], "list[Any] | None", PredictOptions], list[dict[str, Any]]]


@dataclass
class _Job:
    request: PredictRequest
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    def __init__(self, predict: PredictFn, executor: Executor, *, max_wait: float = 0.005, max_batch: int = 64,
                 on_batch: Callable[[int], None] | None = None):
        if max_wait < 0 or max_batch < 1:
            raise ValueError(f"need max_wait >= 0 and max_batch >= 1, got {max_wait}, {max_batch}")
        self._predict, self._executor = predict, executor
        self.max_wait, self.max_batch = max_wait, max_batch
        self._on_batch = on_batch or (lambda texts: None)
        self._pending: deque[tuple[float, _Job]] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Finish every queued request, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def submit(self, request: PredictRequest) -> list[dict[str, Any]]:
        """The request's results, one dict per text; raises what ``predict`` raised for it alone."""
        if self._closing:
            raise RuntimeError("the server is shutting down")
        loop = asyncio.get_running_loop()
        job = _Job(request, loop.create_future())
        self._pending.append((loop.time(), job))
        self._wake.set()
        return await job.future

    def _queued_texts(self) -> int:
        return sum(len(job.request.texts) for _, job in self._pending)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                continue
            deadline = self._pending[0][0] + self.max_wait
            while not self._closing and self._queued_texts() < self.max_batch and loop.time() < deadline:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), deadline - loop.time())
                except TimeoutError:
                    break
            batch, texts = [], 0
            while self._pending and (not batch or texts + len(self._pending[0][1].request.texts) <= self.max_batch):
                job = self._pending.popleft()[1]
                batch.append(job)
                texts += len(job.request.texts)
            groups: dict[PredictOptions, list[_Job]] = {}
            for job in batch:
                groups.setdefault(job.request.options, []).append(job)
            for group in groups.values():
                await self._run_group(group)

    async def _run_group(self, group: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        requests = [job.request for job in group]
        texts = [text for r in requests for text in r.texts]
        labels = [r.labels for r in requests for _ in r.texts]
        examples = [r.examples for r in requests for _ in r.texts] if requests[0].options.with_examples else None
        self._on_batch(len(texts))
        try:
            results = await loop.run_in_executor(self._executor, self._predict, texts, labels, examples,
                                                 requests[0].options)
        except Exception as err:
            if len(group) == 1:
                if not group[0].future.done():
                    group[0].future.set_exception(err)
                return
            for job in group:  # find the request(s) that broke the shared call
                await self._run_group([job])
            return
        start = 0
        for job in group:
            end = start + len(job.request.texts)
            if not job.future.done():  # a client that went away cancels its future
                job.future.set_result(results[start:end])
            start = end

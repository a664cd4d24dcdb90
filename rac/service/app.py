"""The ``rac serve`` HTTP API (FastAPI on uvicorn): predict, live example adds and removes, health, metrics.

One ``Service`` owns the classifier, the ``LiveIndex`` and a one-thread executor on which every model
call and index change runs (neither the model's tokenizer nor the index is shared between threads); the
event loop only parses, validates, batches (``MicroBatcher``) and answers. On SIGTERM uvicorn stops
accepting connections and waits for in-flight requests; the lifespan's exit then drains the batcher and
folds the write-ahead log into the saved index.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from rac.service.batcher import MicroBatcher
from rac.service.metrics import Metrics
from rac.service.schema import PredictOptions, RequestError, parse_examples, parse_predict
from rac.service.store import ConflictError, LiveIndex

log = logging.getLogger("rac.serve")
T = TypeVar("T")


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``rac serve`` takes; the CLI flags have the same names."""

    index: str | None = None
    model: str | None = None
    embedder: str | None = None  # only for an index folder that does not exist yet
    wal: str | None = None
    device: str | None = None
    dtype: str | None = None  # rac.precision: None / "auto" picks bfloat16 where the hardware runs it natively
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    batch_wait_ms: float = 5.0
    max_batch: int = 64
    max_texts: int = 256
    max_body_bytes: int = 1 << 20
    save_interval: float = 60.0


class Service:
    """The loaded state behind the API; build it before the server starts, so a bound port means ready."""

    def __init__(self, config: ServeConfig):
        from rac.classifier import RACClassifier

        self.config = config
        self.live = (LiveIndex(config.index, wal=config.wal, embedder=config.embedder, dtype=config.dtype)
                     if config.index else None)
        if self.live is not None:
            self.live.index.embedder.encode(["warm-up"])  # load it now rather than in the first request
        self.classifier = RACClassifier.from_pretrained(config.model, self.live.index if self.live is not None else None,
                                                        device=config.device, dtype=config.dtype)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rac-worker")
        self.metrics = Metrics(lambda: 0 if self.live is None else len(self.live))
        self.batcher = MicroBatcher(self._predict, self.executor, max_wait=config.batch_wait_ms / 1000,
                                    max_batch=config.max_batch, on_batch=self.metrics.batch)

    def _predict(self, texts: list[str], labels: list[Any], examples: list[Any] | None,
                 options: PredictOptions) -> list[dict[str, Any]]:
        results = self.classifier.predict(texts, labels, threshold=options.threshold, multi_label=options.multi_label,
                                          k=options.k, prompt=options.prompt, examples=examples)
        return [result.to_dict() for result in results]

    async def in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def info(self) -> dict[str, Any]:
        import rac

        index = None
        if self.live is not None:
            index = {"path": str(self.live.path), "size": len(self.live), "embedder": self.live.index.embedder_name,
                     "wal": str(self.live.wal.path), "unsaved_changes": self.live.pending}
        settings = {k: v for k, v in asdict(self.config).items() if k not in ("api_key", "index", "wal", "model")}
        return {"version": rac.__version__, "model": self.config.model or "rac default model",
                "dtype": self.classifier.dtype_name, "device": str(self.classifier.model.device),
                "index": index, "auth": self.config.api_key is not None, "settings": settings}


async def _json_body(request: Request, limit: int) -> Any:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise RequestError("body", f"larger than the server's limit of {limit} bytes (--max-body-bytes)", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError("body", f"larger than the server's limit of {limit} bytes (--max-body-bytes)", 413)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as err:
        raise RequestError("body", f"not valid JSON: {err}") from None


def create_app(service: Service) -> FastAPI:
    """The FastAPI app over a loaded ``Service``."""
    config = service.config

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.batcher.start()
        folder = asyncio.get_running_loop().create_task(_fold_every(config.save_interval)) if service.live is not None else None
        yield
        if folder:
            folder.cancel()
        await service.batcher.close()
        if service.live is not None and await service.in_worker(service.live.fold):
            log.info("saved %d examples to %s", len(service.live), service.live.path)
        service.executor.shutdown(wait=True)

    async def _fold_every(seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await service.in_worker(service.live.fold)
            except Exception:  # the changes stay in the log; the next fold or the shutdown retries
                log.exception("saving the index failed")

    app = FastAPI(title="rac", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable) -> Any:
        start = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            response = JSONResponse({"error": {"field": None, "message": "internal server error"}}, status_code=500)
        route = request.scope.get("route")
        service.metrics.request(getattr(route, "path", "unmatched"), request.method, response.status_code,
                                time.perf_counter() - start)
        return response

    @app.exception_handler(RequestError)
    async def request_error(request: Request, err: RequestError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return JSONResponse(err.body(), status_code=err.status, headers=headers)

    def authorize(request: Request) -> None:
        if config.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), config.api_key.encode()):
            raise RequestError("Authorization", "missing or wrong bearer token", 401)

    def live_index() -> LiveIndex:
        if service.live is None:
            raise RequestError("index", "this server has no index (start it with --index DIR)", 409)
        return service.live

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        body = parse_predict(await _json_body(request, config.max_body_bytes), config.max_texts)
        try:
            return {"results": await service.batcher.submit(body)}
        except (ValueError, TypeError) as err:  # what the classifier refuses beyond schema checks (e.g. label length)
            raise RequestError(None, str(err)) from None

    @app.post("/examples")
    async def add_examples(request: Request) -> dict[str, Any]:
        authorize(request)
        live = live_index()
        examples = parse_examples(await _json_body(request, config.max_body_bytes), config.max_texts)
        try:
            await service.in_worker(live.add, examples)
        except ConflictError as err:
            field, _, message = str(err).partition(": ")
            raise RequestError(field, message, 409) from None
        return {"added": len(examples), "ids": [e.id for e in examples], "index_size": len(live)}

    @app.delete("/examples/{example_id}")
    async def remove_example(example_id: str, request: Request) -> dict[str, Any]:
        authorize(request)
        if not await service.in_worker(live_index().remove, example_id):
            raise RequestError("id", f"no example with id {example_id!r}", 404)
        return {"removed": example_id, "index_size": len(service.live)}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return service.info()

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

    return app


def serve(config: ServeConfig, *, log_level: str = "warning") -> None:
    """Load everything, then serve until SIGTERM / SIGINT (graceful: in-flight requests finish, then a save)."""
    import uvicorn

    app = create_app(Service(config))
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=30)

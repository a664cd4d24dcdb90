"""``rac serve``: classification over HTTP with an index that learns from added examples (extra ``rac[serve]``).

``schema`` validates request bodies, ``batcher`` micro-batches predictions, ``store`` keeps the live index
and its write-ahead log, ``metrics`` counts for Prometheus, ``app`` wires them into FastAPI and uvicorn.
"""

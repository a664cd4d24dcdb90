"""Batch classification on Ray Data (extra ``rac[ray]``): ``predict_dataset`` maps an actor pool over a dataset.

Each actor loads the classifier once, from paths every worker can read (the shipped model needs none: it
is inside the package, which every node must have installed), and classifies ``batch_size`` rows per call
with ``rac.batch.classify_table``, the function ``rac predict`` runs in-process; so output rows are the
input rows plus the same prediction columns (``predicted``, ``scores``, ``example_ids``, ``error``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from rac.batch import check_columns, classify_table

if TYPE_CHECKING:
    import ray.data

    from rac.classifier import LabelSpec


def _shared_path(path: str | Path | None) -> str | None:
    """An absolute path, so actors started in another working directory find the same files."""
    return None if path is None else str(Path(path).expanduser().resolve())


class _Predictor:
    """A Ray actor's state: the classifier, loaded once, then called once per batch."""

    def __init__(self, model: str | None, index: str | None, labels: LabelSpec, text_column: str, batch_size: int,
                 threads: int, device: str | None, classifier_options: dict[str, Any], predict_options: dict[str, Any]):
        import torch

        from rac.classifier import RACClassifier

        torch.set_num_threads(threads)  # one actor per reserved CPU group; more threads would oversubscribe
        self.classifier = RACClassifier.from_pretrained(model, index, device=device, **classifier_options)
        self.labels, self.text_column, self.batch_size = labels, text_column, batch_size
        self.predict_options = predict_options

    def __call__(self, batch: pa.Table) -> pa.Table:
        return classify_table(self.classifier, batch, self.labels, text_column=self.text_column,
                              batch_size=self.batch_size, **self.predict_options)


def predict_dataset(
    dataset: ray.data.Dataset,
    labels: LabelSpec,
    *,
    model: str | Path | None = None,
    index: str | Path | None = None,
    text_column: str = "text",
    batch_size: int = 64,
    num_workers: int = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    classifier_options: dict[str, Any] | None = None,
    **predict_options: Any,
) -> ray.data.Dataset:
    """``dataset`` with the prediction columns added, computed lazily by ``num_workers`` actors.

    ``model`` / ``index``: checkpoint and index folders on storage every node can read (``None``: the shipped
    model / zero-shot). Each actor reserves ``num_cpus`` CPUs (its torch thread count) and ``num_gpus`` GPUs
    (``num_gpus > 0`` runs the model on CUDA) and classifies ``batch_size`` rows per call.
    ``classifier_options`` go to ``RACClassifier.from_pretrained`` (``dtype``, ``fusion``, ``knn_k``, ...),
    ``predict_options`` to ``RACClassifier.predict`` (``threshold``, ``multi_label``, ``k``, ``prompt``, ...).
    Rows come back in input order only when ``DataContext.get_current().execution_options.preserve_order``
    is set (``rac predict --ray`` sets it); every input column is kept either way.
    """
    import ray.data

    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_columns(dataset.columns(), text_column)
    return dataset.map_batches(
        _Predictor,
        fn_constructor_kwargs={
            "model": _shared_path(model), "index": _shared_path(index), "labels": labels, "text_column": text_column,
            "batch_size": batch_size, "threads": max(1, int(num_cpus)), "device": "cuda" if num_gpus else None,
            "classifier_options": classifier_options or {}, "predict_options": predict_options,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        udf_modifying_row_count=False,
    )


def from_table(table: pa.Table, batch_size: int, num_workers: int) -> ray.data.Dataset:
    """A dataset over an in-memory table, cut into blocks of whole batches, about four per worker, so every
    actor has work and each batch holds the same rows as ``rac.batch.predict_batches`` gives it."""
    import math

    import ray.data

    batches = max(1, math.ceil(len(table) / batch_size))
    rows = batch_size * max(1, batches // (4 * num_workers))
    return ray.data.from_arrow([table.slice(start, rows) for start in range(0, max(len(table), 1), rows)])

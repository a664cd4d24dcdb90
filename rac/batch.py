"""Classify a table of rows: every input column kept, prediction columns added, bad rows marked, not fatal.

The same function runs in-process (``rac predict --output``) and in each Ray actor (``rac.distributed``),
so both write the same rows. Added columns (``OUTPUT_SCHEMA``):

* ``predicted``: the predicted labels (a list of strings);
* ``scores``: ``{"label": score, ...}`` for every candidate label, best first, as a JSON string (label names
  are data, not schema, so every batch and every label set has the same Arrow types);
* ``example_ids``: ids of the examples the scores rest on (``RACExample.id`` as strings; null for examples
  stored without one, e.g. an index built without ``--id-col``);
* ``error``: why the row was not classified (missing, non-string or empty text), else null. Such rows keep
  their input columns and get nulls for the rest; the other rows are unaffected.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pyarrow as pa

if TYPE_CHECKING:
    from rac.classifier import LabelSpec, RACClassifier

OUTPUT_SCHEMA = pa.schema([("predicted", pa.list_(pa.string())), ("scores", pa.string()),
                           ("example_ids", pa.list_(pa.string())), ("error", pa.string())])
#: Output formats by file suffix.
WRITERS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def check_columns(columns: Iterable[str], text_column: str) -> None:
    """The input must have the text column and none of the output columns (they would be overwritten)."""
    columns = list(columns)
    if text_column not in columns:
        raise KeyError(f"no text column {text_column!r} in the input (columns: {columns})")
    taken = [name for name in OUTPUT_SCHEMA.names if name in columns]
    if taken:
        raise ValueError(f"the input already has output column(s) {taken}; rename them first")


def _text_error(text: Any) -> str | None:
    if text is None:
        return "missing text (empty cell or null)"
    if not isinstance(text, str):
        return f"text must be a string, got {type(text).__name__} {text!r}"
    return None if text.strip() else "empty text"


def classify_table(classifier: RACClassifier, table: pa.Table, labels: LabelSpec, *, text_column: str = "text",
                   batch_size: int = 64, **predict_options: Any) -> pa.Table:
    """``table`` plus the output columns; one ``classifier.predict`` call (``batch_size`` sequences per pass)."""
    check_columns(table.column_names, text_column)
    texts = table.column(text_column).to_pylist()
    errors = [_text_error(text) for text in texts]
    good = [i for i, error in enumerate(errors) if error is None]
    results = classifier.predict([texts[i] for i in good], labels, batch_size=batch_size, **predict_options) if good else []
    columns: dict[str, list[Any]] = {name: [None] * len(texts) for name in OUTPUT_SCHEMA.names}
    columns["error"] = errors
    for i, result in zip(good, results):
        columns["predicted"][i] = list(result.predicted)
        columns["scores"][i] = json.dumps(dict(result.labels), ensure_ascii=False)
        columns["example_ids"][i] = [None if e.id is None else str(e.id) for e in result.examples]
    for field in OUTPUT_SCHEMA:
        table = table.append_column(field, pa.array(columns[field.name], type=field.type))
    return table


def predict_batches(classifier: RACClassifier, table: pa.Table, labels: LabelSpec, *, text_column: str = "text",
                    batch_size: int = 64, **predict_options: Any) -> Iterator[pa.Table]:
    """``classify_table`` over consecutive slices of ``batch_size`` rows (the batches Ray hands its actors)."""
    check_columns(table.column_names, text_column)
    for start in range(0, len(table), batch_size):
        yield classify_table(classifier, table.slice(start, batch_size), labels, text_column=text_column,
                             batch_size=batch_size, **predict_options)


@contextmanager
def table_writer(path: str | Path) -> Iterator[Callable[[pa.Table], None]]:
    """A function writing batches to ``path`` (Parquet or JSONL by suffix), in order; the file appears, whole,
    only when the block ends without error (written beside it, then renamed)."""
    path = Path(path)
    kind = WRITERS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unknown output format; use one of {sorted(WRITERS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    parquet = None
    try:
        with open(tmp, "wb") as handle:
            def write(batch: pa.Table) -> None:
                nonlocal parquet
                if kind == "jsonl":
                    handle.write("".join(json.dumps(row, ensure_ascii=False, default=str) + "\n"
                                         for row in batch.to_pylist()).encode("utf-8"))
                    return
                if parquet is None:
                    import pyarrow.parquet as pq

                    parquet = pq.ParquetWriter(handle, batch.schema)
                parquet.write_table(batch)

            yield write
            if parquet is not None:
                parquet.close()
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

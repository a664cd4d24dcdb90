"""Read a labeled corpus (CSV, JSONL or Parquet) into ``RACExample`` rows, refusing bad rows loudly.

Every error names the file, the line (JSONL) or data row (CSV/Parquet, 1-based, header excluded), the
column and the offending value, so a user can fix a 100k-row file without bisecting it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rac.formatting import RACExample

#: File suffixes and the reader that handles them.
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
#: CSV cells read as missing: empty cells and explicit NaN. Words like "None"/"NA" stay text (they are real labels).
CSV_NA_VALUES = ["", "nan", "NaN", "NAN"]


class CorpusError(ValueError):
    """A corpus row that cannot be used; carries where it is so callers and tests can point at it."""

    def __init__(self, path: Path, where: str | None, column: str | None, value: Any, problem: str):
        self.path, self.where, self.column, self.value, self.problem = path, where, column, value, problem
        loc = ", ".join(p for p in (where, f"column {column!r}" if column else None) if p)
        shown = "" if value is _NO_VALUE else f" (value: {_short(value)})"
        super().__init__(f"{path}: {loc + ': ' if loc else ''}{problem}{shown}")


_NO_VALUE = object()


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def parse_labels(value: Any, label_sep: str | None = None) -> tuple[str, ...]:
    """Labels as a list, a JSON-list string (``'["a", "b"]'``) or a ``label_sep``-delimited string.

    Raises ``ValueError`` (without location; ``read_corpus`` adds it) on anything else.
    """
    if isinstance(value, np.ndarray):  # Parquet list columns come back as arrays
        value = value.tolist()
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError as err:
                raise ValueError(f"labels look like a JSON list but do not parse: {err.msg}") from None
        elif label_sep:
            value = [part for part in (p.strip() for p in stripped.split(label_sep)) if part]
        else:
            value = [stripped] if stripped else []
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"labels must be a list or a string, got {type(value).__name__}")
    labels = []
    for label in value:
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"every label must be a non-empty string, got {label!r}")
        labels.append(label.strip())
    return tuple(dict.fromkeys(labels))  # de-duplicate, keep order


def _rows(path: Path, kind: str, columns: list[str]) -> Iterator[tuple[str, dict]]:
    """Yield ``(location, row)``; checks that the needed columns exist before the first row."""
    if kind == "jsonl":
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"line {number}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise CorpusError(path, where, None, _NO_VALUE, f"malformed JSON: {err.msg} at char {err.pos}") from None
                if not isinstance(row, dict):
                    raise CorpusError(path, where, None, row, "each line must be a JSON object")
                for column in columns:
                    if column not in row:
                        raise CorpusError(path, where, column, _NO_VALUE, f"missing column (keys: {sorted(row)})")
                yield where, row
        return
    import pandas as pd

    try:
        if kind == "csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=CSV_NA_VALUES)
        else:
            frame = pd.read_parquet(path)
    except (ValueError, OSError) as err:  # pandas ParserError/EmptyDataError, pyarrow ArrowInvalid, decode errors
        raise CorpusError(path, None, None, _NO_VALUE, f"cannot read as {kind}: {err}") from None
    for column in columns:
        if column not in frame.columns:
            raise CorpusError(path, None, column, _NO_VALUE, f"missing column (columns: {list(frame.columns)})")
    for number, row in enumerate(frame[columns].to_dict(orient="records"), start=1):
        yield f"row {number}", row


def read_corpus(
    path: str | Path,
    *,
    text_col: str = "text",
    labels_col: str = "labels",
    label_sep: str | None = None,
    all_labels_col: str | None = None,
    id_col: str | None = None,
) -> list[RACExample]:
    """Load and validate a corpus; the format comes from the suffix (.csv, .jsonl/.ndjson, .parquet/.pq)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such corpus file")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise CorpusError(path, None, None, path.suffix, f"unknown corpus format; use one of {sorted(FORMATS)}")
    columns = [text_col, labels_col] + [c for c in (all_labels_col, id_col) if c]
    examples = []
    for where, row in _rows(path, kind, columns):
        text = row[text_col]
        if not isinstance(text, str):
            problem = "missing text (empty cell or NaN)" if _is_missing(text) else "text must be a string"
            raise CorpusError(path, where, text_col, text, problem)
        if not text.strip():
            raise CorpusError(path, where, text_col, text, "empty text")
        true_labels = _labels(path, where, labels_col, row[labels_col], label_sep)
        all_labels = None
        if all_labels_col and not _is_missing(row[all_labels_col]):
            all_labels = _labels(path, where, all_labels_col, row[all_labels_col], label_sep)
            missing = [label for label in true_labels if label not in all_labels]
            if missing:
                raise CorpusError(path, where, all_labels_col, row[all_labels_col], f"true labels {missing} not in all_labels")
        example_id = row[id_col] if id_col else None
        if isinstance(example_id, np.generic):
            example_id = example_id.item()
        examples.append(RACExample(text=text, true_labels=true_labels, all_labels=all_labels, id=example_id))
    if not examples:
        raise CorpusError(path, None, None, _NO_VALUE, "corpus has no rows")
    return examples


def _labels(path: Path, where: str, column: str, value: Any, label_sep: str | None) -> tuple[str, ...]:
    if _is_missing(value):
        raise CorpusError(path, where, column, value, "missing labels (empty cell or NaN)")
    try:
        labels = parse_labels(value, label_sep)
    except ValueError as err:
        raise CorpusError(path, where, column, value, str(err)) from None
    if not labels:
        raise CorpusError(path, where, column, value, "row has no labels")
    return labels

"""Read a labeled corpus (CSV, JSONL or Parquet) into ``RACExample`` rows, refusing bad rows loudly.

Every error names the file, the line (JSONL) or data row (CSV/Parquet, 1-based, header excluded), the
column and the offending value, so a user can fix a 100k-row file without bisecting it.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from rac.formatting import RACExample

if TYPE_CHECKING:
    import pandas as pd

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


def text_lines(path: Path | str, stream: BinaryIO | None = None) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of UTF-8 text at ``path`` (or read from ``stream``, named ``path``), endings kept.

    A byte-order mark at the start is dropped (as Excel writes it); bytes that are not UTF-8 are a
    ``CorpusError`` naming the line, not a bare ``UnicodeDecodeError`` from deep inside a reader.
    """
    with Path(path).open("rb") if stream is None else nullcontext(stream) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                byte = raw[err.start : err.start + 1]
                raise CorpusError(path, f"line {number}", None, raw[max(0, err.start - 20) : err.end + 20],
                                  f"not UTF-8 text: byte {byte.hex()} at byte {err.start} of the line") from None


def _rows(path: Path, kind: str, columns: list[str]) -> Iterator[tuple[str, dict]]:
    """Yield ``(location, row)``; checks that the needed columns exist before the first row."""
    if kind == "jsonl":
        first = True
        for number, line in text_lines(path):
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                hint = ""
                if first and line.lstrip()[:1] in ("[", "{"):
                    hint = " (a JSON array or a JSON document over several lines is not JSONL: write one object per line)"
                raise CorpusError(path, where, None, _NO_VALUE, f"malformed JSON: {err.msg} at char {err.pos}{hint}") from None
            first = False
            if not isinstance(row, dict):
                raise CorpusError(path, where, None, row, "each line must be a JSON object")
            for column in columns:
                if column not in row:
                    raise CorpusError(path, where, column, _NO_VALUE, f"missing column (keys: {sorted(row)})")
            yield where, row
        return
    frame = _frame(path, kind, columns)
    for number, row in enumerate(frame[columns].to_dict(orient="records"), start=1):
        yield f"row {number}", row


def _frame(path: Path, kind: str, columns: list[str]) -> pd.DataFrame:
    """A CSV (every cell a string or missing) or Parquet file as a DataFrame that has ``columns``."""
    import pandas as pd

    if kind == "csv":
        header, records = _csv_records(path)
        frame = pd.DataFrame.from_records(records, columns=header)
    else:
        try:
            frame = pd.read_parquet(path)
        except (ValueError, OSError) as err:  # pyarrow ArrowInvalid
            raise CorpusError(path, None, None, _NO_VALUE, f"cannot read as {kind}: {err}") from None
    for column in columns:
        if column not in frame.columns:
            raise CorpusError(path, None, column, _NO_VALUE, f"missing column (columns: {list(frame.columns)})")
    return frame


def _csv_records(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Header and rows of a CSV file, every cell a string (``CSV_NA_VALUES`` as NaN, missing trailing cells too).

    Python's csv module rather than pandas: pandas turns the extra leading fields of a row longer than the
    header into an index and shifts the rest silently (``hello,a,b,c`` read as text 'b'); here it is an error.
    """
    lines = (line for _, line in text_lines(path))
    reader = csv.reader(lines)
    limit = csv.field_size_limit(1 << 30)  # long documents: the default 128 KiB per cell is too small
    try:
        header = next(reader, None)
        if not header:
            raise CorpusError(path, "line 1", None, _NO_VALUE, "cannot read as csv: no header row")
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if duplicated:
            raise CorpusError(path, "line 1", None, header, f"duplicate column names {duplicated}")
        records = []
        for cells in reader:
            if not cells:  # a blank line
                continue
            if len(cells) > len(header):
                raise CorpusError(path, f"row {len(records) + 1} (line {reader.line_num})", None, cells,
                                  f"{len(cells)} fields but the header has {len(header)}; quote a field that holds a comma")
            cells += [""] * (len(header) - len(cells))
            records.append({name: math.nan if cell in CSV_NA_VALUES else cell for name, cell in zip(header, cells)})
    except csv.Error as err:
        raise CorpusError(path, f"line {reader.line_num}", None, _NO_VALUE, f"cannot read as csv: {err}") from None
    finally:
        csv.field_size_limit(limit)
    return header, records


def _format(path: Path, what: str) -> str:
    if path.is_dir():
        raise CorpusError(path, None, None, _NO_VALUE, f"is a folder, not a {what} file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what} file")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise CorpusError(path, None, None, path.suffix, f"unknown {what} format; use one of {sorted(FORMATS)}")
    return kind


def read_frame(path: str | Path, columns: list[str]) -> pd.DataFrame:
    """Every column of a CSV / JSONL / Parquet file, read as ``read_corpus`` reads it (CSV cells as strings),
    for files that are not a labeled corpus (``rac predict --input``); ``columns`` must be there."""
    import pandas as pd

    path = Path(path)
    kind = _format(path, "input")
    if kind != "jsonl":
        frame = _frame(path, kind, columns)
    else:
        frame = pd.DataFrame.from_records([row for _, row in _rows(path, kind, columns)])
    if frame.empty:
        raise CorpusError(path, None, None, _NO_VALUE, "file has no rows")
    return frame


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
    kind = _format(path, "corpus")
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

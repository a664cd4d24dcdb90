"""Candidate labels: what callers pass (a list, a dict of groups, one per text) as flat label sets, and a
tokenized label set split into chunks that each fit one pass.

Labels are the part of a model input that is never cut: a pass holds whole labels, and a label set that
does not fit is scored in several passes (``LabelSet.chunks``) while the text and its examples are cut.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Union

from rac.formatting import GLICLASS_TOKENS, RAC_TOKENS

#: Joins the levels of hierarchical labels: ``{"sentiment": ["positive"]}`` -> ``sentiment.positive``.
LABEL_SEPARATOR = "."

LabelSpec = Union[Sequence[str], Mapping[str, Any]]


def check_label(label: Any) -> str:
    """A label name as given, or a clear error for a non-string, an empty name or a model marker in it."""
    if not isinstance(label, str):
        raise TypeError(f"labels must be strings, got {type(label).__name__} {label!r}")
    if not label.strip():
        raise ValueError("labels must not be empty strings")
    marker = next((m for m in GLICLASS_TOKENS + RAC_TOKENS if m in label), None)
    if marker:
        raise ValueError(f"label {label!r} contains the model marker {marker}")
    return label


def flatten_labels(spec: Any, prefix: str = "") -> list[str]:
    """Labels of a flat list or a (nested) dict of groups, as ``group.sub.label`` (gliclass's flattening)."""
    join = (lambda name: f"{prefix}{LABEL_SEPARATOR}{name}") if prefix else (lambda name: name)
    if isinstance(spec, Mapping):
        return [label for key, value in spec.items() for label in flatten_labels(value, join(check_label(key)))]
    if isinstance(spec, str):
        return [join(check_label(spec))]
    if isinstance(spec, Sequence):
        return [join(check_label(label)) for label in spec]
    raise TypeError(f"labels must be strings, lists or dicts of groups, got {type(spec).__name__} {spec!r}")


def nest_scores(spec: Any, scores: dict[str, float], prefix: str = "") -> dict[str, Any]:
    """Scores laid out like ``spec``: ``{"sentiment": {"positive": 0.9, ...}}`` (``{label: score}`` for a list)."""
    join = (lambda name: f"{prefix}{LABEL_SEPARATOR}{name}") if prefix else (lambda name: name)
    if isinstance(spec, Mapping):
        return {key: nest_scores(value, scores, join(key)) for key, value in spec.items()}
    names = [spec] if isinstance(spec, str) else spec
    return {name: scores[join(name)] for name in names}


def parse_labels(labels: Any, n_texts: int) -> tuple[list[LabelSpec], list[tuple[str, ...]]]:
    """Per text: the label spec as given (for ``nest_scores``) and its flat label names, duplicates dropped.

    ``labels`` is one list or dict shared by all texts, or one per text. Duplicates get one warning for the
    whole call, attributed to the caller of the function that calls this one (``RACClassifier.predict``).
    """
    if isinstance(labels, str) or not isinstance(labels, (Sequence, Mapping)):
        raise TypeError(f"labels must be a list or a dict of label groups, got {type(labels).__name__}")
    if not labels:
        raise ValueError("no labels given")
    per_text = not isinstance(labels, Mapping) and all(
        isinstance(spec, Mapping) or (isinstance(spec, Sequence) and not isinstance(spec, str)) for spec in labels
    )
    if per_text and len(labels) != n_texts:
        raise ValueError(f"got {len(labels)} label lists for {n_texts} texts; pass one list per text or one shared list")
    specs = list(labels) if per_text else [labels] * n_texts
    parsed: dict[int, tuple[tuple[str, ...], list[str]]] = {}  # id(spec) -> (names, duplicates)
    for spec in specs:
        if id(spec) not in parsed:
            flat = flatten_labels(spec)
            if not flat:
                raise ValueError("no labels given")
            parsed[id(spec)] = tuple(dict.fromkeys(flat)), [name for name, n in Counter(flat).items() if n > 1]
    duplicates = sorted({name for _, dups in parsed.values() for name in dups})
    if duplicates:
        warnings.warn(f"duplicate labels ignored (each is scored once): {duplicates}", UserWarning, stacklevel=3)
    return specs, [parsed[id(spec)][0] for spec in specs]


class LabelSet:
    """One candidate label list, tokenized once: the ids of each ``<<LABEL>>name`` piece, and its chunkings."""

    def __init__(self, names: tuple[str, ...], piece_ids: list[list[int]]):
        self.names = names
        self.piece_ids = piece_ids
        self.lengths = [len(ids) for ids in piece_ids]
        self._chunks: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def chunks(self, budget: int, max_labels: int) -> list[tuple[int, int]]:
        """``[start, end)`` label ranges whose pieces fit in ``budget`` tokens, in label order (greedy), with
        at most ``max_labels`` labels each (the count spread evenly: 30 labels at 25 go 15 + 15)."""
        key = (budget, max_labels)
        if key not in self._chunks:
            too_long = [name for name, n in zip(self.names, self.lengths) if n > budget]
            if too_long:
                raise ValueError(f"label {too_long[0]!r} alone is longer than the {budget} tokens a label chunk may use")
            count = math.ceil(len(self.lengths) / math.ceil(len(self.lengths) / max_labels))
            ranges, start, used = [], 0, 0
            for i, n in enumerate(self.lengths):
                if used + n > budget or i - start == count:
                    ranges.append((start, i))
                    start, used = i, 0
                used += n
            ranges.append((start, len(self.lengths)))
            self._chunks[key] = ranges
        return self._chunks[key]

    def block_ids(self, start: int, end: int) -> list[int]:
        """Token ids of ``<<LABEL>>a<<LABEL>>b`` for labels ``start..end`` (``<<SEP>>`` not included)."""
        return [token for ids in self.piece_ids[start:end] for token in ids]

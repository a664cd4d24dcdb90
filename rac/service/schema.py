"""Validation of ``rac serve`` request bodies: every problem becomes a ``RequestError`` naming its field.

The classifier checks the same things, but its errors cannot say which field of which request broke, and
one bad request must not fail the others it is micro-batched with; so bodies are checked here, first.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from rac.formatting import GLICLASS_TOKENS, RAC_TOKENS, RACExample

MARKERS = GLICLASS_TOKENS + RAC_TOKENS


class RequestError(Exception):
    """A client error: HTTP ``status``, the offending ``field`` (a JSON path like ``texts[2]``) and why."""

    def __init__(self, field: str | None, message: str, status: int = 400):
        super().__init__(f"{field}: {message}" if field else message)
        self.field, self.message, self.status = field, message, status

    def body(self) -> dict[str, Any]:
        return {"error": {"field": self.field, "message": self.message}}


@dataclass(frozen=True)
class PredictOptions:
    """The per-call options of ``RACClassifier.predict``; requests with equal options can share a call."""

    threshold: float = 0.5
    multi_label: bool = True
    k: int = 3
    prompt: str | None = None
    with_examples: bool = False  # given examples replace retrieval for the whole call


@dataclass(frozen=True)
class PredictRequest:
    texts: list[str]
    labels: list[str] | dict[str, Any]
    options: PredictOptions
    examples: list[dict[str, Any]] | None = None


def _object(body: Any, field: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError(field, f"must be a JSON object, got {_kind(body)}")
    return body


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _string(value: Any, field: str, what: str = "text") -> str:
    if not isinstance(value, str):
        raise RequestError(field, f"{what} must be a string, got {_kind(value)}")
    if not value.strip():
        raise RequestError(field, f"empty {what}")
    return value


def _label(value: Any, field: str) -> str:
    label = _string(value, field, "label")
    marker = next((m for m in MARKERS if m in label), None)
    if marker:
        raise RequestError(field, f"label {label!r} contains the model marker {marker}")
    return label


def _labels(value: Any, field: str) -> list[str] | dict[str, Any]:
    """A non-empty list of labels, or a dict of groups whose values are label lists or nested groups."""
    if isinstance(value, list):
        if not value:
            raise RequestError(field, "no labels given")
        return [_label(item, f"{field}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        if not value:
            raise RequestError(field, "no labels given")
        return {_label(key, f"{field}.{key}"): _labels(group, f"{field}.{key}") for key, group in value.items()}
    raise RequestError(field, f"must be a list of labels or an object of label groups, got {_kind(value)}")


def _labels_of(value: Any, field: str) -> list[str]:
    if not isinstance(value, list):
        raise RequestError(field, f"must be a list of labels, got {_kind(value)}")
    return [_label(item, f"{field}[{i}]") for i, item in enumerate(value)]


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(name, f"must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _bounded_list(body: dict[str, Any], name: str, limit: int) -> list[Any]:
    if name not in body:
        raise RequestError(name, "missing")
    value = body[name]
    if not isinstance(value, list):
        raise RequestError(name, f"must be a list, got {_kind(value)}")
    if not value:
        raise RequestError(name, "empty list")
    if len(value) > limit:
        raise RequestError(name, f"too many items: {len(value)} > {limit} (the server's --max-texts)", status=413)
    return value


def parse_predict(body: Any, max_texts: int) -> PredictRequest:
    """``{"texts", "labels", "k"?, "threshold"?, "multi_label"?, "prompt"?, "examples"?}``."""
    body = _object(body, "body")
    unknown = sorted(set(body) - {"texts", "labels", "k", "threshold", "multi_label", "prompt", "examples"})
    if unknown:
        raise RequestError(unknown[0], "unknown field")
    texts = [_string(t, f"texts[{i}]") for i, t in enumerate(_bounded_list(body, "texts", max_texts))]
    if "labels" not in body:
        raise RequestError("labels", "missing")
    labels = _labels(body["labels"], "labels")
    k = body.get("k", 3)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= 32:
        raise RequestError("k", f"must be an integer in [0, 32], got {k!r}")
    multi_label = body.get("multi_label", True)
    if not isinstance(multi_label, bool):
        raise RequestError("multi_label", f"must be true or false, got {multi_label!r}")
    prompt = body.get("prompt")
    if prompt is not None:
        prompt = _string(prompt, "prompt", "prompt")
    examples = None
    if body.get("examples") is not None:
        examples = [_example(item, f"examples[{i}]").to_dict()
                    for i, item in enumerate(_bounded_list(body, "examples", max_texts))]
    options = PredictOptions(_number(body, "threshold", 0.5, 0.0, 1.0), multi_label, k, prompt, examples is not None)
    return PredictRequest(texts, labels, options, examples)


def _example(item: Any, field: str, *, with_id: bool = False) -> RACExample:
    """One ``{"text", "labels", "all_labels"?, "id"?, "metadata"?}`` (``true_labels`` accepted for ``labels``)."""
    item = _object(item, field)
    allowed = {"text", "labels", "true_labels", "all_labels"} | ({"id", "metadata"} if with_id else set())
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise RequestError(f"{field}.{unknown[0]}", "unknown field")
    text = _string(item.get("text"), f"{field}.text")
    name = "labels" if "labels" in item or "true_labels" not in item else "true_labels"
    if name not in item:
        raise RequestError(f"{field}.labels", "missing")
    true_labels = tuple(dict.fromkeys(_labels_of(item[name], f"{field}.{name}")))
    all_labels = None
    if item.get("all_labels") is not None:
        all_labels = tuple(dict.fromkeys(_labels_of(item["all_labels"], f"{field}.all_labels")))
        missing = [label for label in true_labels if label not in all_labels]
        if missing:
            raise RequestError(f"{field}.all_labels", f"does not contain the true labels {missing}")
    example_id = item.get("id")
    if with_id:
        if example_id is None:
            example_id = uuid.uuid4().hex
        elif not isinstance(example_id, str) or not example_id.strip() or "/" in example_id:
            raise RequestError(f"{field}.id", f"must be a non-empty string without '/', got {example_id!r}")
    metadata = item.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise RequestError(f"{field}.metadata", f"must be an object, got {_kind(metadata)}")
    return RACExample(text=text, true_labels=true_labels, all_labels=all_labels, id=example_id, metadata=metadata or None)


def parse_examples(body: Any, max_examples: int) -> list[RACExample]:
    """``{"examples": [{"text", "labels", "id"?, "metadata"?}, ...]}``; examples without an id get a random one."""
    body = _object(body, "body")
    unknown = sorted(set(body) - {"examples"})
    if unknown:
        raise RequestError(unknown[0], "unknown field")
    examples = [_example(item, f"examples[{i}]", with_id=True)
                for i, item in enumerate(_bounded_list(body, "examples", max_examples))]
    seen: dict[str, int] = {}
    for i, example in enumerate(examples):
        if example.id in seen:
            raise RequestError(f"examples[{i}].id", f"repeats the id of examples[{seen[example.id]}]: {example.id!r}")
        seen[example.id] = i
    return examples

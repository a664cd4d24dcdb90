"""Turn a text, its candidate labels and retrieved examples into what the uni-encoder reads.

Two formats live here, both from GLiClass:

* the label block, ``<<LABEL>>a<<LABEL>>b<<SEP>>{prompt}``, placed before the text (``prompt_first``)
  or after it, glued with no spaces exactly as ``gliclass`` 0.1.21 does, so checkpoints see the
  inputs they were trained on;
* the RAC example block, ``{text} <<EXAMPLE>> {example} <<TRUE_LABEL>> a <<FALSE_LABEL>> b <</EXAMPLE>>``,
  appended to the text.

The RAC slot is built as parts (``rac_parts``): the markers placed here are ``Marker`` objects, everything
else is data, so ``rac.inputs`` can give only the placed markers their ids; strings made from parts escape
any marker spelled out in the data (``render``, ``escape_markers``).

Deliberate deviations from the reference RAC formatter (anchor notes §2.1): false labels keep a stable
order instead of ``set()`` order, examples with no true label are kept (they carry negative evidence),
and no double space is emitted when an example has no false labels.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

LABEL_TOKEN = "<<LABEL>>"
SEP_TOKEN = "<<SEP>>"
EXAMPLE_TOKEN = "<<EXAMPLE>>"
EXAMPLE_END_TOKEN = "<</EXAMPLE>>"
TRUE_LABEL_TOKEN = "<<TRUE_LABEL>>"
FALSE_LABEL_TOKEN = "<<FALSE_LABEL>>"

#: Tokens every GLiClass checkpoint knows (ids stored in its config).
GLICLASS_TOKENS = (LABEL_TOKEN, SEP_TOKEN, EXAMPLE_TOKEN)
#: Extra RAC markers; ``rac``'s own models add them to the vocabulary, published checkpoints read them as text.
RAC_TOKENS = (TRUE_LABEL_TOKEN, FALSE_LABEL_TOKEN, EXAMPLE_END_TOKEN)

#: Default per-example budget (tokens of example text) so three long neighbours cannot crowd out the query.
DEFAULT_EXAMPLE_TOKENS = 64
#: Most false labels listed per example: with 150 candidates an example would otherwise list 149 of them,
#: filling the window with negatives the model never saw in training (items there carry 2 to 25 labels).
DEFAULT_MAX_FALSE_LABELS = 10


@dataclass(frozen=True)
class RACExample:
    """One labeled example shown to the model next to a query.

    ``all_labels`` is the label set the example was annotated against; when it is ``None`` the query's
    candidate labels stand in for it, so the false labels are the candidates the example does not carry.
    """

    text: str
    true_labels: tuple[str, ...]
    all_labels: tuple[str, ...] | None = None
    similarity: float | None = None
    id: Any = None
    metadata: dict | None = field(default=None, compare=False)

    @classmethod
    def from_dict(cls, item: dict) -> RACExample:
        """Accept the gliclass ``{"text", "true_labels", "all_labels"}`` form (``labels`` as an alias)."""
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise ValueError(f"a RAC example must be a dict with a string 'text', got {item!r}")
        true = item.get("true_labels", item.get("labels", []))
        all_labels = item.get("all_labels")
        return cls(
            text=item["text"],
            true_labels=tuple(true),
            all_labels=tuple(all_labels) if all_labels is not None else None,
            similarity=item.get("similarity"),
        )

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"text": self.text, "true_labels": list(self.true_labels)}
        if self.all_labels is not None:
            out["all_labels"] = list(self.all_labels)
        if self.similarity is not None:
            out["similarity"] = float(self.similarity)
        if self.id is not None:
            out["id"] = self.id
        if self.metadata:
            out["metadata"] = self.metadata
        return out


def false_labels(
    example: RACExample,
    candidate_labels: Sequence[str] | None = None,
    *,
    limit: int | None = None,
    first: Sequence[str] = (),
) -> list[str]:
    """Labels the example is known not to carry, in a stable order (``all_labels``, else the candidates).

    Labels in ``first`` (the other shown examples' true labels: the confusable ones) lead, so a ``limit``
    keeps the informative negatives.
    """
    pool = example.all_labels if example.all_labels is not None else (candidate_labels or ())
    allowed = set(pool) - set(example.true_labels)
    ordered = dict.fromkeys(label for label in (*first, *pool) if label in allowed)
    return list(ordered)[:limit]


def truncate_to_tokens(text: str, max_tokens: int | None, tokenizer: Any = None) -> str:
    """Cut ``text`` to ``max_tokens`` backbone tokens (whitespace words when no tokenizer is given)."""
    if max_tokens is None or max_tokens <= 0:
        return text
    if tokenizer is None:
        words = text.split()
        return text if len(words) <= max_tokens else " ".join(words[:max_tokens])
    # verbose=False: the text is cut here, so transformers' "sequence longer than the model" warning is noise
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False)
    offsets = enc["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text
    return text[: offsets[max_tokens - 1][1]]


class Marker(str):
    """A model marker placed by the formatter. Only these become marker ids: the same characters inside a
    text, a prompt or an example are data, tokenized as plain characters (``rac.inputs``)."""


#: A piece of a formatted input: a ``Marker``, or data and separators to tokenize as plain text.
Part = Union[Marker, str]

#: The first ``<<`` of any model marker spelled out in data.
_MARKER_START = re.compile("<<(?=(?:" + "|".join(re.escape(m[2:]) for m in GLICLASS_TOKENS + RAC_TOKENS) + "))")


def escape_markers(text: str) -> str:
    """``text`` with every model marker broken up (``<<SEP>>`` -> ``< <SEP>>``), for string outputs such as
    ``rac generate``'s JSONL. BERT-style tokenizers split ``<`` off as punctuation either way, so the
    escaped text gives exactly the ids of the marker's plain characters (``< < sep > >``)."""
    return _MARKER_START.sub("< <", text)


def _spaced(words: Sequence[Part]) -> list[Part]:
    """``words`` with a ``" "`` between neighbours, as ``" ".join`` would put them."""
    return [part for i, word in enumerate(words) for part in ((" ", word) if i else (word,))]


def _example_words(
    example: RACExample,
    candidate_labels: Sequence[str] | None,
    cut: Callable[[str], str] | None,
    max_false_labels: int | None,
    salient_labels: Sequence[str],
) -> list[Part]:
    words: list[Part] = [Marker(EXAMPLE_TOKEN), cut(example.text) if cut else example.text]
    for label in example.true_labels:
        words += [Marker(TRUE_LABEL_TOKEN), label]
    for label in false_labels(example, candidate_labels, limit=max_false_labels, first=salient_labels):
        words += [Marker(FALSE_LABEL_TOKEN), label]
    return [*words, Marker(EXAMPLE_END_TOKEN)]


def rac_parts(
    text: str,
    examples: Sequence[RACExample],
    candidate_labels: Sequence[str] | None = None,
    *,
    cut: Callable[[str], str] | None = None,
    max_false_labels: int | None = DEFAULT_MAX_FALSE_LABELS,
) -> list[Part]:
    """The RAC text slot as parts: the query, then one block per example,
    ``<<EXAMPLE>> text <<TRUE_LABEL>> a <<FALSE_LABEL>> b <</EXAMPLE>>``, all separated by single spaces.

    ``cut`` shortens each example's text (``rac.inputs`` cuts to model tokens). The other shown examples'
    true labels lead each example's false labels, so a ``max_false_labels`` cap keeps the confusable ones.
    """
    salient = [label for ex in examples for label in ex.true_labels]
    words: list[Part] = [text]
    for example in examples:
        words += _example_words(example, candidate_labels, cut, max_false_labels, salient)
    return _spaced(words)


def render(parts: Sequence[Part]) -> str:
    """The parts as one string, markers spelled out in data escaped (``escape_markers``)."""
    return "".join(part if isinstance(part, Marker) else escape_markers(part) for part in parts)


def _word_cut(max_tokens: int | None, tokenizer: Any) -> Callable[[str], str] | None:
    if max_tokens is None or max_tokens <= 0:
        return None
    return lambda text: truncate_to_tokens(text, max_tokens, tokenizer)


def format_example(
    example: RACExample,
    candidate_labels: Sequence[str] | None = None,
    *,
    max_example_tokens: int | None = DEFAULT_EXAMPLE_TOKENS,
    tokenizer: Any = None,
    max_false_labels: int | None = DEFAULT_MAX_FALSE_LABELS,
    salient_labels: Sequence[str] = (),
) -> str:
    """``<<EXAMPLE>> text <<TRUE_LABEL>> a <<FALSE_LABEL>> b <</EXAMPLE>>``."""
    cut = _word_cut(max_example_tokens, tokenizer)
    return render(_spaced(_example_words(example, candidate_labels, cut, max_false_labels, salient_labels)))


def append_examples(
    text: str,
    examples: Sequence[RACExample],
    candidate_labels: Sequence[str] | None = None,
    *,
    max_example_tokens: int | None = DEFAULT_EXAMPLE_TOKENS,
    tokenizer: Any = None,
    max_false_labels: int | None = DEFAULT_MAX_FALSE_LABELS,
) -> str:
    """The RAC text slot as a string (the query alone when there are no examples); see ``rac_parts``."""
    cut = _word_cut(max_example_tokens, tokenizer)
    return render(rac_parts(text, examples, candidate_labels, cut=cut, max_false_labels=max_false_labels))


def label_block(labels: Sequence[str], prompt: str | None = None, *, lowercase: bool = False) -> str:
    """``<<LABEL>>a<<LABEL>>b<<SEP>>{prompt}``, glued as gliclass 0.1.21 glues it."""
    names = (str(label).lower() if lowercase else str(label) for label in labels)
    return "".join(LABEL_TOKEN + name for name in names) + SEP_TOKEN + (prompt or "")


def build_model_input(
    text: str,
    labels: Sequence[str],
    *,
    prompt: str | None = None,
    prompt_first: bool = True,
    lowercase_labels: bool = False,
) -> str:
    """The full sequence as gliclass's string: label block then text (``prompt_first``) or text then label
    block, ``text`` inserted as it is. The reference ``rac.inputs``'s ids are tested against."""
    block = label_block(labels, prompt, lowercase=lowercase_labels)
    return block + text if prompt_first else text + block


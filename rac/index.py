"""A persistent HNSW (cosine) index over labeled examples, plus the store that gives hits back their labels.

On disk an index is a folder of three files::

    manifest.json      format version, embedder name/dimension/dtype, counts, HNSW parameters, sha256 of each data
                       file, and the sha256 of the manifest itself ("checksum")
    examples.parquet   text, true_labels, all_labels, id (JSON), metadata (JSON), deleted; row i = HNSW label i
    hnsw.bin           hnswlib graph and vectors

``save`` writes a sibling temp folder and renames it into place (``rac.storage``), so a crash mid-save never
leaves a half-written index where the old one was, and ``load`` puts back an index that a crash between the
two renames left missing. ``load`` trusts no byte it has not checked: every checksum, then the hnswlib
header, link lists and labels against the manifest, before hnswlib reads the file.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rac.corpus import CorpusError
from rac.embedding import DEFAULT_EMBEDDER, Embedder, resolve_model
from rac.formatting import RACExample
from rac.precision import DTYPES, dtype_name, resolve_dtype
from rac.storage import atomic_directory, check_replaceable, file_sha256, read_json_artifact, recover_directory

FORMAT_NAME = "rac-index"
#: Bump when the folder layout changes; ``load`` refuses folders from a newer version. 2: ``deleted`` column,
#: ``removed`` count, and a checksum over the whole manifest (1: over its "files" only).
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
EXAMPLES_FILE = "examples.parquet"
HNSW_FILE = "hnsw.bin"
DATA_FILES = (EXAMPLES_FILE, HNSW_FILE)
INDEX_FILES = (MANIFEST, *DATA_FILES)

#: HNSW defaults, tuned in benchmarks/index_build.py (p99 < 1 ms, recall@3 >= 0.95 at 100k x 384).
DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 100
DEFAULT_EF_SEARCH = 64
#: hnswlib keeps a link count in 16 bits and holds 2*M links at level 0.
MAX_M = 32767

#: ``hnswlib/hnswalg.h`` ``saveIndex``: offsetLevel0, max_elements, cur_element_count, size_data_per_element,
#: label_offset, offsetData (size_t), maxlevel (int), enterpoint_node (unsigned), maxM, maxM0, M (size_t),
#: mult (double), ef_construction (size_t); then per element its level-0 block, then its upper link lists.
HNSW_HEADER = struct.Struct("<QQQQQQiIQQQdQ")
#: Low 16 bits of a link-list word: the link count; bit 16: hnswlib's deleted mark.
_COUNT_MASK, _DELETED_BIT = 0xFFFF, 1 << 16
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: What a manifest's ``embedder.dtype`` may hold: a resolved precision, never ``auto``.
_RECORDED_DTYPES = tuple(d for d in DTYPES if d != "auto")


def _check_dtype(embedder: Embedder, dtype: str | None) -> Embedder:
    """``embedder``, unless ``dtype`` asks for another precision than it runs in (ambiguous: refused)."""
    if dtype is not None and embedder.dtype != resolve_dtype(dtype, embedder.model.device):
        raise ValueError(f"dtype={dtype!r} differs from the given {embedder!r}; pass one or the other")
    return embedder


def _normalize(vectors: np.ndarray, dimension: int) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dimension:
        raise ValueError(f"vectors must have shape (n, {dimension}), got {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or infinite values")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("vectors contain an all-zero row (no direction, cosine undefined)")
    return np.ascontiguousarray(vectors / norms)


def _is_count(value: Any, least: int) -> bool:
    return type(value) is int and value >= least


def check_hnsw_parameters(M: Any, ef_construction: Any, ef_search: Any) -> None:
    """``ValueError`` unless ``M`` is in [2, 32767] and both beam widths are integers >= 1."""
    if not (_is_count(M, 2) and M <= MAX_M):
        raise ValueError(f"M must be an integer in [2, {MAX_M}], got {M!r}")
    for name, value in (("ef_construction", ef_construction), ("ef_search", ef_search)):
        if not _is_count(value, 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _json_text(value: Any, what: str) -> str | None:
    """``value`` as canonical JSON (``None`` stays ``None``): ids and metadata are stored, and compared, as JSON."""
    if value is None:
        return None
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} {value!r} is not JSON-serialisable ({err})") from None


def _is_strings(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value)


class _ReadWriteLock:
    """Shared reads, exclusive writes. A waiting writer holds back new readers (a stream of searches cannot
    starve ``add``), and a thread that is reading may read again (``reading()`` around ``search``)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self._depth = threading.local()

    @contextmanager
    def read(self) -> Iterator[None]:
        depth = getattr(self._depth, "value", 0)
        if not depth:
            with self._condition:
                while self._writing or self._writers_waiting:
                    self._condition.wait()
                self._readers += 1
        self._depth.value = depth + 1
        try:
            yield
        finally:
            self._depth.value = depth
            if not depth:
                with self._condition:
                    self._readers -= 1
                    self._condition.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        if getattr(self._depth, "value", 0):
            raise RuntimeError("cannot change the index while this thread is reading it (inside reading())")
        with self._condition:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._condition.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._condition:
                self._writing = False
                self._condition.notify_all()


class ExampleIndex:
    """Cosine HNSW over example embeddings; HNSW label ``i`` is the ``i``-th example added (``example(i)``).

    Thread safety: any method may be called from any number of threads at once. Queries (``search``,
    ``example``, ``vectors``, ``ids_for_text``, ``label_space``, ``examples``) and ``save`` share a
    read lock; ``add``, ``remove`` and setting ``ef_search`` take it alone, so a query sees the index before or
    after a change, never during one (hnswlib's resize and its graph are not safe to read while they change).
    ``reading()`` holds the read side across several calls, for answers from one state. ``add`` embeds its
    texts before it takes the lock.

    Removal is a tombstone: ``remove`` marks the vectors deleted in hnswlib, so search never returns them, and
    drops their text, labels and metadata from the store at once; the vectors keep their slot in the graph
    (memory and ``hnsw.bin``) until the index is rebuilt from its live examples, e.g. with ``rac build-index``.
    """

    def __init__(
        self,
        *,
        embedder_name: str,
        dimension: int,
        M: int = DEFAULT_M,
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
        ef_search: int = DEFAULT_EF_SEARCH,
        embedder: Embedder | None = None,
        num_threads: int = 1,
        embedder_dtype: str | None = None,
    ):
        """An empty index; use ``build`` or ``load``. ``embedder`` is loaded lazily from its name when needed.

        ``embedder_dtype`` is the precision of the embedder the vectors come from (recorded in the manifest;
        ``None`` when vectors were given without an embedder).
        """
        import hnswlib

        check_hnsw_parameters(M, ef_construction, ef_search)
        if not _is_count(dimension, 1):
            raise ValueError(f"dimension must be an integer >= 1, got {dimension!r}")
        if embedder is not None and (embedder.name != embedder_name or embedder.dimension != dimension):
            raise ValueError(f"embedder {embedder!r} does not match index embedder {embedder_name!r} ({dimension} dims)")
        self.embedder_name, self.dimension = embedder_name, dimension
        self.M, self.ef_construction, self._ef_search = M, ef_construction, ef_search
        self.num_threads = num_threads
        self.embedder_dtype = embedder_dtype
        self._embedder = embedder
        self._query_dtype: str | None = None  # precision of an embedder loaded lazily (``load(dtype=...)``)
        #: Where ``embedder_name`` was read from (``load``): such a name loads local files only.
        self._manifest_path: Path | None = None
        self._allow_download = False
        self._lock = _ReadWriteLock()
        self._examples: list[RACExample | None] = []  # None: removed
        self._live = 0
        self._ids_by_text: dict[str, list[int]] = {}
        self._rows_by_id: dict[str, list[int]] = {}
        #: Per label: sum of its live examples' unit vectors and their count (prototypes for ``rac.evidence``).
        self._label_sums: dict[str, np.ndarray] = {}
        self._label_counts: dict[str, int] = {}
        #: Bumped by every add and remove, so caches of derived statistics know when to refresh.
        self.version = 0
        self._hnsw = hnswlib.Index(space="cosine", dim=self.dimension)
        self._hnsw.init_index(max_elements=16, ef_construction=self.ef_construction, M=self.M, random_seed=100)
        self._hnsw.set_ef(self._ef_search)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]  # locks do not pickle; a copy gets its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=_ReadWriteLock())

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        examples: list[RACExample],
        embedder: Embedder | None = None,
        *,
        vectors: np.ndarray | None = None,
        M: int = DEFAULT_M,
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
        ef_search: int = DEFAULT_EF_SEARCH,
        show_progress: bool | None = None,
        num_threads: int = 1,
        dtype: str | None = None,
    ) -> ExampleIndex:
        """Index ``examples``, embedding them unless ``vectors`` (one row each) are given.

        With ``vectors`` and no embedder the index is labeled with the default embedder's name (loaded only
        if a text query needs it). ``num_threads=1`` keeps the graph, hence retrieval, reproducible.
        ``dtype``: precision of the default embedder loaded here (``rac.precision``; default auto); an
        ``embedder`` passed in keeps its own, and a different ``dtype`` beside it is an error.
        """
        if vectors is not None and embedder is None:
            name, dimension = resolve_model(None)[0], int(np.asarray(vectors).shape[-1])
        else:
            embedder = _check_dtype(embedder or Embedder(dtype=dtype), dtype)
            name, dimension = embedder.name, embedder.dimension
        index = cls(
            embedder_name=name, dimension=dimension, M=M, ef_construction=ef_construction,
            ef_search=ef_search, embedder=embedder, num_threads=num_threads,
            embedder_dtype=None if embedder is None else dtype_name(embedder.dtype),
        )
        index.add(examples, vectors, show_progress=show_progress)
        return index

    @property
    def embedder(self) -> Embedder:
        """The embedder the index was built with (loaded on first use).

        A name read from a manifest loads from local files only unless ``load(..., allow_download=True)``, and
        a folder named by a manifest is never loaded: the caller must pass it (``load(path, embedder=...)``).
        """
        if self._embedder is None:
            name, source = self.embedder_name, self._manifest_path
            if source is not None and name != DEFAULT_EMBEDDER and _names_a_folder(name):
                raise ValueError(
                    f"{source}: the index was built with the embedder folder {name!r}; a folder named by a file is "
                    f"not loaded implicitly: pass it yourself (embedder={name!r}, or --embedder)"
                )
            try:
                embedder = Embedder(name, local_files_only=source is not None and not self._allow_download,
                                    dtype=self._query_dtype)
            except ValueError as err:
                if source is None or self._allow_download:
                    raise
                raise ValueError(
                    f"{source}: the index's embedder {name!r} is not in the local cache, and a name read from a file "
                    f"is not downloaded: pass allow_download=True, or the embedder itself (embedder=..., --embedder) "
                    f"({err})"
                ) from None
            if embedder.dimension != self.dimension:
                raise ValueError(f"embedder {name!r} gives {embedder.dimension}-d vectors, index holds {self.dimension}-d")
            self._embedder = embedder
        return self._embedder

    @property
    def ef_search(self) -> int:
        """HNSW query beam width (>= 1); a search for more than ``ef_search`` neighbours widens it to ``k``."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        check_hnsw_parameters(self.M, self.ef_construction, value)
        with self._lock.write():
            self._hnsw.set_ef(value)
            self._ef_search = value

    def add(self, examples: list[RACExample], vectors: np.ndarray | None = None, *, show_progress: bool | None = None) -> None:
        """Append examples (incremental: the existing graph is extended, not rebuilt); all or none are added."""
        examples = list(examples)
        keys = []
        for position, example in enumerate(examples):
            if not isinstance(example, RACExample) or not isinstance(example.text, str) or not example.text.strip():
                raise ValueError(f"example {position} must be a RACExample with non-empty text, got {example!r}")
            if not _is_strings(example.true_labels) or not (example.all_labels is None or _is_strings(example.all_labels)):
                raise ValueError(f"example {position}: labels must be strings, got {example.true_labels!r} / {example.all_labels!r}")
            if example.metadata is not None and not isinstance(example.metadata, dict):
                raise ValueError(f"example {position}: metadata must be a dict, got {example.metadata!r}")
            _json_text(example.metadata, f"example {position}: metadata")
            keys.append(_json_text(example.id, f"example {position}: id"))
        if vectors is None:
            vectors = self.embedder.encode([e.text for e in examples], show_progress=show_progress)
        if len(vectors) != len(examples):
            raise ValueError(f"got {len(vectors)} vectors for {len(examples)} examples")
        if not examples:
            return
        vectors = _normalize(vectors, self.dimension)
        with self._lock.write():
            start = len(self._examples)
            needed = start + len(examples)
            if needed > self._hnsw.get_max_elements():
                self._hnsw.resize_index(max(needed, 2 * self._hnsw.get_max_elements()))
            self._hnsw.add_items(vectors, np.arange(start, needed), num_threads=self.num_threads)
            for row, (example, key) in enumerate(zip(examples, keys), start=start):
                self._store(row, replace(example, similarity=None), key)
            self._count_labels(examples, vectors, +1)

    def _count_labels(self, examples: Sequence[RACExample], vectors: np.ndarray, sign: int) -> None:
        """Add (``sign=+1``) or take away (``-1``) examples from the per-label sums and counts (write lock held)."""
        for example, vector in zip(examples, vectors):
            for label in set(example.true_labels):
                if label not in self._label_sums:
                    self._label_sums[label] = np.zeros(self.dimension, dtype=np.float64)
                    self._label_counts[label] = 0
                self._label_sums[label] += sign * vector
                self._label_counts[label] += sign
                if self._label_counts[label] == 0:
                    del self._label_sums[label], self._label_counts[label]
        self.version += 1

    def label_prototypes(self) -> tuple[list[str], np.ndarray, np.ndarray, int]:
        """``(labels, unit prototype rows, example counts, version)`` over the live examples: each label's
        mean example embedding, kept up to date by ``add`` and ``remove`` (no pass over the store)."""
        with self._lock.read():
            names = sorted(self._label_sums)
            sums = np.stack([self._label_sums[n] for n in names]) if names else np.zeros((0, self.dimension))
            counts = np.array([self._label_counts[n] for n in names], dtype=np.int64)
            version = self.version
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return names, (sums / np.where(norms == 0, 1.0, norms)).astype(np.float32), counts, version

    def _store(self, row: int, example: RACExample, key: str | None) -> None:
        """Append ``example`` as HNSW label ``row`` (under the write lock, or while loading)."""
        self._examples.append(example)
        self._live += 1
        self._ids_by_text.setdefault(example.text, []).append(row)
        if key is not None:
            self._rows_by_id.setdefault(key, []).append(row)

    def remove(self, ids: Iterable[Any]) -> int:
        """Remove every example whose ``id`` is one of ``ids`` (ids compare as JSON); returns how many went.

        All or none: an id no live example has raises ``KeyError`` naming it. See the class docstring for
        what removal keeps (a tombstone in the graph until a rebuild).
        """
        if isinstance(ids, (str, bytes, dict)) or not isinstance(ids, Iterable):
            raise TypeError(f"remove takes a list of example ids, got {ids!r}")
        wanted = {_json_text(value, "id"): value for value in ids}
        with self._lock.write():
            missing = [value for key, value in wanted.items() if key not in self._rows_by_id]
            if missing:
                raise KeyError(f"no example with id {missing[0]!r} in the index" + (f" (nor {missing[1:5]!r})" if missing[1:] else ""))
            removed = 0
            for key in wanted:
                for row in self._rows_by_id.pop(key):
                    self._count_labels([self._examples[row]], np.asarray(self._hnsw.get_items([row]), dtype=np.float32), -1)
                    self._hnsw.mark_deleted(row)
                    same_text = self._ids_by_text[self._examples[row].text]
                    same_text.remove(row)
                    if not same_text:
                        del self._ids_by_text[self._examples[row].text]
                    self._examples[row] = None
                    removed += 1
            self._live -= removed
        return removed

    # -- queries ------------------------------------------------------------------------------------

    def reading(self) -> AbstractContextManager[None]:
        """Context manager holding the read side: calls inside it see one state (no ``add``/``remove`` between)."""
        return self._lock.read()

    def __len__(self) -> int:
        """Live examples (removed ones do not count)."""
        return self._live

    def __repr__(self) -> str:
        return (f"ExampleIndex({len(self)} examples, embedder={self.embedder_name!r}, dtype={self.embedder_dtype!r}, "
                f"M={self.M}, ef={self.ef_search})")

    @property
    def examples(self) -> list[RACExample]:
        """A copy of the live examples in HNSW-label order (after a removal, position ``i`` is not label ``i``)."""
        with self._lock.read():
            return [example for example in self._examples if example is not None]

    def live_ids(self) -> list[int]:
        """HNSW labels of the live examples, ascending."""
        with self._lock.read():
            return [i for i, example in enumerate(self._examples) if example is not None]

    def _live_example(self, i: Any) -> RACExample:
        example = self._examples[int(i)] if 0 <= int(i) < len(self._examples) else None
        if example is None:
            raise KeyError(f"no live example with HNSW label {i} (removed, or never added)")
        return example

    def example(self, i: int) -> RACExample:
        """The stored example behind HNSW label ``i``; ``KeyError`` if it was removed."""
        with self._lock.read():
            return self._live_example(i)

    def ids_for_text(self, text: str) -> list[int]:
        """Labels of live examples whose text equals ``text`` exactly (used to drop self-matches)."""
        with self._lock.read():
            return list(self._ids_by_text.get(text, ()))

    def vectors(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """Stored unit vectors for ``ids`` (saves re-embedding texts that are already indexed)."""
        ids = [int(i) for i in ids]
        if not ids:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock.read():
            for i in ids:
                self._live_example(i)
            return np.asarray(self._hnsw.get_items(ids), dtype=np.float32).reshape(len(ids), self.dimension)

    def label_space(self) -> list[str]:
        """Sorted unique labels over every live example's true and all labels (the pool for negatives)."""
        labels: set[str] = set()
        for example in self.examples:
            labels.update(example.true_labels)
            labels.update(example.all_labels or ())
        return sorted(labels)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(ids, cosine similarities)``, each ``(n, k)``; missing slots are id -1, similarity -inf."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        vectors = _normalize(vectors, self.dimension) if len(vectors) else vectors.reshape(0, self.dimension)
        ids = np.full((len(vectors), k), -1, dtype=np.int64)
        sims = np.full((len(vectors), k), -np.inf, dtype=np.float32)
        with self._lock.read():
            found = min(int(k), self._live)
            if found == 0 or len(vectors) == 0:
                return ids, sims
            try:  # hnswlib widens its beam to k itself (searchKnn uses max(ef, k))
                labels, distances = self._hnsw.knn_query(vectors, k=found, num_threads=self.num_threads)
            except RuntimeError:  # fewer than k live nodes reachable (removals, or k near the size): exact search
                labels, distances = self._exact_search(vectors, found)
        ids[:, :found] = labels
        sims[:, :found] = 1.0 - distances
        return ids, sims

    def _exact_search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        live = np.array([i for i, example in enumerate(self._examples) if example is not None])
        similarities = vectors @ np.asarray(self._hnsw.get_items(live), dtype=np.float32).T
        order = np.argsort(-similarities, axis=1, kind="stable")[:, :k]
        return live[order], 1.0 - np.take_along_axis(similarities, order, axis=1)

    # -- persistence --------------------------------------------------------------------------------

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the index folder atomically (temp folder, then rename).

        It replaces a rac index there (one holding only the three index files); any other file or folder is
        an error unless ``overwrite=True``.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        with self._lock.read(), atomic_directory(path, kind="rac index", recognise=_is_index_folder, overwrite=overwrite) as tmp:
            rows = self._examples
            table = pa.table(
                {
                    "text": [None if e is None else e.text for e in rows],
                    "true_labels": [[] if e is None else list(e.true_labels) for e in rows],
                    "all_labels": [None if e is None or e.all_labels is None else list(e.all_labels) for e in rows],
                    "id": [None if e is None else _json_text(e.id, "id") for e in rows],
                    "metadata": [None if e is None or not e.metadata else _json_text(e.metadata, "metadata") for e in rows],
                    "deleted": [e is None for e in rows],
                },
                schema=pa.schema(
                    [("text", pa.string()), ("true_labels", pa.list_(pa.string())), ("all_labels", pa.list_(pa.string())),
                     ("id", pa.string()), ("metadata", pa.string()), ("deleted", pa.bool_())]
                ),
            )
            pq.write_table(table, tmp / EXAMPLES_FILE)
            self._hnsw.save_index(str(tmp / HNSW_FILE))
            manifest = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "embedder": {"name": self.embedder_name, "dimension": self.dimension, "dtype": self.embedder_dtype},
                "count": len(rows),
                "removed": len(rows) - self._live,
                "hnsw": {"space": "cosine", "M": self.M, "ef_construction": self.ef_construction, "ef_search": self.ef_search},
                "files": {name: file_sha256(tmp / name) for name in DATA_FILES},
            }
            manifest["checksum"] = _manifest_checksum(manifest)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(
        cls, path: str | Path, embedder: Embedder | str | None = None, *, allow_download: bool = False,
        dtype: str | None = None,
    ) -> ExampleIndex:
        """Read a saved index; ``embedder`` must be the one it was built with (default: the manifest's).

        The manifest's embedder name loads from local files only unless ``allow_download=True``. A folder that
        an interrupted save left missing is first restored from its intact copy (``rac.storage``).
        ``dtype``: precision of a query embedder loaded here (``rac.precision``; default auto). The manifest's
        ``embedder.dtype`` says what the stored vectors were built in (float32 when absent: older indexes had
        no other).
        """
        import hnswlib
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.exists():
            recover_directory(path, _is_complete)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such index folder")
        manifest, deleted = verify_index(path)
        name, dimension = manifest["embedder"]["name"], manifest["embedder"]["dimension"]
        if isinstance(embedder, str):
            embedder = Embedder(embedder, dtype=dtype)
        if embedder is not None:
            _check_dtype(embedder, dtype)
        if embedder is not None and embedder.name != name:
            raise ValueError(
                f"{path / MANIFEST}: index was built with embedder {name!r}, cannot query it with {embedder.name!r}; "
                "rebuild the index or pass the same embedder"
            )
        if embedder is not None and embedder.dimension != dimension:
            raise ValueError(f"{path / MANIFEST}: index holds {dimension}-d vectors, embedder {name!r} gives {embedder.dimension}-d")
        hnsw = manifest["hnsw"]
        index = cls(
            embedder_name=name, dimension=dimension, M=hnsw["M"], ef_construction=hnsw["ef_construction"],
            ef_search=hnsw["ef_search"], embedder=embedder, embedder_dtype=manifest["embedder"].get("dtype", "float32"),
        )
        index._manifest_path, index._allow_download, index._query_dtype = path / MANIFEST, allow_download, dtype
        try:
            rows = pq.read_table(path / EXAMPLES_FILE).to_pylist()
        except Exception as err:  # a checksum-valid but unreadable file means a writer bug; still say where
            raise ValueError(f"{path / EXAMPLES_FILE}: cannot read the example store: {err}") from None
        if len(rows) != manifest["count"]:
            raise ValueError(f"{path / EXAMPLES_FILE}: {len(rows)} rows, manifest count {manifest['count']}")
        for i, row in enumerate(rows):
            example = _stored_example(path / EXAMPLES_FILE, i, row)
            if (example is None) != bool(deleted[i]):
                raise ValueError(f"{path}: example {i} is {'removed' if example is None else 'live'} in "
                                 f"{EXAMPLES_FILE} but not in {HNSW_FILE}")
            if example is None:
                index._examples.append(None)
            else:
                index._store(i, example, _json_text(example.id, "id"))
        index._hnsw = hnswlib.Index(space="cosine", dim=dimension)  # load_index wants an uninitialised one
        index._hnsw.load_index(str(path / HNSW_FILE), max_elements=max(len(rows), 16))
        index._hnsw.set_ef(index.ef_search)
        live = [i for i, example in enumerate(index._examples) if example is not None]
        if live:
            vectors = np.asarray(index._hnsw.get_items(live), dtype=np.float32).reshape(len(live), dimension)
            index._count_labels([index._examples[i] for i in live], vectors, +1)
        return index


def _names_a_folder(name: str) -> bool:
    path = Path(name).expanduser()
    return path.is_absolute() or path.exists()


def _is_index_folder(folder: Path) -> bool:
    """Whether ``folder`` is a rac index (any version, damaged or not): what ``save`` may replace."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT_NAME


def _is_complete(folder: Path) -> bool:
    try:
        verify_index(folder)
    except (OSError, ValueError):
        return False
    return True


def _stored_example(file_path: Path, i: int, row: dict[str, Any]) -> RACExample | None:
    """Row ``i`` of the example store, checked (``None``: a removed example)."""
    if row.get("deleted"):
        return None
    missing = [column for column in ("text", "true_labels", "all_labels", "id", "metadata") if column not in row]
    if missing:
        raise CorpusError(file_path, f"example {i}", missing[0], row, "column missing from the example store")

    def bad(column: str, problem: str) -> CorpusError:
        return CorpusError(file_path, f"example {i}", column, row[column], problem)

    if not isinstance(row["text"], str) or not row["text"].strip():
        raise bad("text", "text must be a non-empty string")
    if not _is_strings(row["true_labels"]) or not (row["all_labels"] is None or _is_strings(row["all_labels"])):
        raise bad("true_labels" if not _is_strings(row["true_labels"]) else "all_labels", "labels must be lists of strings")
    decoded = {}
    for column in ("id", "metadata"):
        try:
            decoded[column] = None if row[column] is None else json.loads(row[column])
        except (TypeError, ValueError) as err:
            raise bad(column, f"not JSON ({err})") from None
    if decoded["metadata"] is not None and not isinstance(decoded["metadata"], dict):
        raise bad("metadata", "metadata must be a JSON object")
    return RACExample(
        text=row["text"], true_labels=tuple(row["true_labels"]),
        all_labels=None if row["all_labels"] is None else tuple(row["all_labels"]), **decoded,
    )


def _manifest_checksum(manifest: dict[str, Any]) -> str:
    """The manifest's own sha256: over every other field (format 1: over "files" only)."""
    covered = manifest["files"] if manifest["format_version"] == 1 else {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(covered, sort_keys=True).encode()).hexdigest()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Parse and validate ``manifest.json``, its own checksum included; refuses a newer format with an upgrade hint."""
    file_path = Path(path) / MANIFEST
    manifest = read_json_artifact(file_path, FORMAT_NAME, "rac index manifest")
    version = manifest.get("format_version")
    if type(version) is not int:
        raise ValueError(f"{file_path}: format_version missing or not an integer: {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{file_path}: index format version {version} is newer than this rac supports ({FORMAT_VERSION}); upgrade rac"
        )
    try:
        name, dimension = manifest["embedder"]["name"], manifest["embedder"]["dimension"]
        count, removed, hnsw = manifest["count"], manifest["removed"] if version > 1 else 0, manifest["hnsw"]
        files, checksum = manifest["files"], manifest["checksum"]
        check_hnsw_parameters(hnsw["M"], hnsw["ef_construction"], hnsw["ef_search"])
        space = hnsw["space"]
    except (KeyError, TypeError) as err:
        raise ValueError(f"{file_path}: manifest field missing or invalid: {err!r}") from None
    except ValueError as err:
        raise ValueError(f"{file_path}: hnsw: {err}") from None
    checks = [
        (isinstance(name, str) and name, f"embedder.name must be a non-empty string, got {name!r}"),
        (_is_count(dimension, 1), f"embedder.dimension must be an integer >= 1, got {dimension!r}"),
        (manifest["embedder"].get("dtype") in (None, *_RECORDED_DTYPES),
         f"embedder.dtype must be one of {list(_RECORDED_DTYPES)} or null, got {manifest['embedder'].get('dtype')!r}"),
        (_is_count(count, 0), f"count must be an integer >= 0, got {count!r}"),
        (_is_count(removed, 0) and _is_count(count, 0) and removed <= count, f"removed must be an integer in [0, count], got {removed!r}"),
        (space == "cosine", f"hnsw.space must be 'cosine', got {space!r}"),
        (isinstance(files, dict) and sorted(files) == sorted(DATA_FILES)
         and all(isinstance(v, str) and _SHA256.fullmatch(v) for v in files.values()),
         f"files must map exactly {list(DATA_FILES)} to sha256 digests, got {files!r}"),
    ]
    problems = [problem for ok, problem in checks if not ok]
    if problems:
        raise ValueError(f"{file_path}: invalid manifest: {'; '.join(problems)}")
    if checksum != _manifest_checksum(manifest):
        raise ValueError(f"{file_path}: manifest checksum does not match its content (the manifest was edited or damaged)")
    return manifest


def verify_index(path: str | Path) -> tuple[dict[str, Any], np.ndarray]:
    """Check an index folder without loading it: ``(manifest, deleted flag per HNSW label)`` or ``ValueError``.

    The manifest naming exactly the two data files, every checksum, and ``hnsw.bin``'s header and structure against the manifest
    (element count, dimension, M, cosine unit vectors, labels, every link inside the graph): what hnswlib would
    otherwise read unchecked, out of bounds on a damaged or hand-edited file.
    """
    path = Path(path)
    manifest = read_manifest(path)
    for file_name, digest in manifest["files"].items():
        if not (path / file_name).is_file():
            raise FileNotFoundError(f"{path / file_name}: index file missing")
        if file_sha256(path / file_name) != digest:
            raise ValueError(f"{path / file_name}: index file is corrupt (sha256 does not match {MANIFEST})")
    hnsw = manifest["hnsw"]
    deleted = _check_hnsw_file(path / HNSW_FILE, count=manifest["count"], dimension=manifest["embedder"]["dimension"],
                               M=hnsw["M"], ef_construction=hnsw["ef_construction"])
    if int(deleted.sum()) != manifest.get("removed", 0):
        raise ValueError(f"{path / HNSW_FILE}: {int(deleted.sum())} removed examples, manifest says {manifest.get('removed', 0)}")
    return manifest, deleted


def _check_hnsw_file(file_path: Path, *, count: int, dimension: int, M: int, ef_construction: int) -> np.ndarray:
    """Validate an hnswlib ``saveIndex`` file against the manifest; the deleted flag of each element."""

    def bad(problem: str) -> ValueError:
        return ValueError(f"{file_path}: corrupt or not this manifest's index: {problem}")

    size = file_path.stat().st_size
    if size < HNSW_HEADER.size:
        raise bad(f"{size} bytes, shorter than the hnswlib header")
    with file_path.open("rb") as handle:
        (offset_level0, _, stored, per_element, label_offset, offset_data, max_level, entry, max_m, max_m0, m, _,
         ef_c) = HNSW_HEADER.unpack(handle.read(HNSW_HEADER.size))
        links0 = 4 + 4 * 2 * M  # a count word and maxM0 = 2M neighbour ids
        expected = {
            "element count": (stored, count), "dimension": ((label_offset - offset_data) / 4, dimension),
            "M": (m, M), "maxM": (max_m, M), "maxM0": (max_m0, 2 * M), "ef_construction": (ef_c, max(ef_construction, M)),
            "offsetLevel0": (offset_level0, 0), "offsetData": (offset_data, links0),
            "size_data_per_element": (per_element, label_offset + 8),
        }
        wrong = [f"{field} {got:g} in the file, {want} expected" for field, (got, want) in expected.items() if got != want]
        if wrong:
            raise bad("; ".join(wrong))
        body = HNSW_HEADER.size + count * per_element
        if size < body:
            raise bad(f"{size} bytes, shorter than {count} elements")
        handle.seek(body)
        tail = handle.read()
    if count == 0:
        if max_level != -1 or tail:
            raise bad("an empty index with a graph")
        return np.zeros(0, dtype=bool)
    level0 = np.memmap(file_path, dtype=np.uint8, mode="r", offset=HNSW_HEADER.size, shape=(count, per_element))
    words = np.ascontiguousarray(level0[:, :links0]).view("<u4")
    sizes = words[:, 0] & _COUNT_MASK
    if (sizes > 2 * M).any():
        raise bad("a level-0 link list longer than 2M")
    if (words[:, 1:][np.arange(2 * M) < sizes[:, None]] >= count).any():
        raise bad("a level-0 link to an element that does not exist")
    labels = np.ascontiguousarray(level0[:, label_offset:]).view("<u8").ravel()
    if not np.array_equal(labels, np.arange(count)):
        raise bad("labels are not 0..count-1 in order")
    vectors = level0[:, offset_data:label_offset].view("<f4")
    norms = np.einsum("ij,ij->i", vectors, vectors)
    if not (np.abs(norms - 1.0) < 1e-3).all():
        raise bad("vectors are not unit-length (not a cosine index, or NaN)")
    levels, lists, position = np.zeros(count, dtype=np.int64), [], 0
    per_level = 4 + 4 * M
    for element in range(count):
        if position + 4 > len(tail):
            raise bad("truncated upper-level link lists")
        (length,) = struct.unpack_from("<I", tail, position)
        position += 4
        if length % per_level or position + length > len(tail):
            raise bad(f"element {element}: upper-level link list of {length} bytes")
        if length:
            levels[element] = length // per_level
            lists.append((element, np.frombuffer(tail, dtype="<u4", count=length // 4, offset=position)))
        position += length
    if position != len(tail):
        raise bad(f"{len(tail) - position} bytes after the last link list")
    if entry >= count or max_level != levels.max() or levels[entry] != max_level:
        raise bad(f"entry point {entry} at level {max_level} is not a top-level element")
    for element, block in lists:
        for level, links in enumerate(block.reshape(-1, 1 + M), start=1):
            neighbours = links[1 : 1 + (links[0] & _COUNT_MASK)]
            if (links[0] & _COUNT_MASK) > M or (neighbours >= count).any() or (levels[neighbours] < level).any():
                raise bad(f"element {element}: a level-{level} link outside the graph")
    return (words[:, 0] & _DELETED_BIT) != 0


def build_index(
    corpus: str | Path | list[RACExample],
    out: str | Path | None = None,
    *,
    text_col: str = "text",
    labels_col: str = "labels",
    label_sep: str | None = None,
    all_labels_col: str | None = None,
    id_col: str | None = None,
    embedder: str | Embedder | None = None,
    M: int = DEFAULT_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    ef_search: int = DEFAULT_EF_SEARCH,
    show_progress: bool | None = None,
    overwrite: bool = False,
    dtype: str | None = None,
) -> ExampleIndex:
    """Corpus file (or examples) to index, saved to ``out`` when given; the corpus is fully validated first.

    ``out`` is checked before anything is embedded: it must be missing, empty or a rac index (``save``).
    ``dtype``: the embedder's precision (``rac.precision``; default auto), recorded in the manifest.
    """
    from rac.corpus import read_corpus

    if out is not None:
        check_replaceable(Path(out), kind="rac index", recognise=_is_index_folder, files=INDEX_FILES, overwrite=overwrite)
    check_hnsw_parameters(M, ef_construction, ef_search)
    if not isinstance(corpus, list):
        corpus = read_corpus(corpus, text_col=text_col, labels_col=labels_col, label_sep=label_sep,
                             all_labels_col=all_labels_col, id_col=id_col)
    if not isinstance(embedder, Embedder):
        embedder = Embedder(embedder, dtype=dtype)
    index = ExampleIndex.build(corpus, embedder, M=M, ef_construction=ef_construction, ef_search=ef_search,
                               show_progress=show_progress, dtype=dtype)
    if out is not None:
        index.save(out, overwrite=overwrite)
    return index

"""A persistent HNSW (cosine) index over labeled examples, plus the store that gives hits back their labels.

On disk an index is a folder::

    manifest.json      format version, embedder name/dimension, count, HNSW parameters, sha256 of each file
    examples.parquet   text, true_labels, all_labels, id (JSON), metadata (JSON); row i = HNSW label i
    hnsw.bin           hnswlib graph and vectors

``save`` writes a sibling temp folder and renames it into place, so a crash mid-save never leaves a
half-written index where the old one was. ``load`` verifies every checksum before trusting a byte.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rac.embedding import Embedder, resolve_model
from rac.formatting import RACExample
from rac.storage import atomic_directory, file_sha256

FORMAT_NAME = "rac-index"
#: Bump when the folder layout changes; ``load`` refuses folders from a newer version.
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EXAMPLES_FILE = "examples.parquet"
HNSW_FILE = "hnsw.bin"

#: HNSW defaults, tuned in benchmarks/index_build.py (p99 < 1 ms, recall@3 >= 0.95 at 100k x 384).
DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 100
DEFAULT_EF_SEARCH = 64


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


class ExampleIndex:
    """Cosine HNSW over example embeddings; HNSW label ``i`` is ``examples[i]``."""

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
    ):
        """An empty index; use ``build`` or ``load``. ``embedder`` is loaded lazily from its name when needed."""
        import hnswlib

        if embedder is not None and (embedder.name != embedder_name or embedder.dimension != dimension):
            raise ValueError(f"embedder {embedder!r} does not match index embedder {embedder_name!r} ({dimension} dims)")
        self.embedder_name, self.dimension = embedder_name, int(dimension)
        self.M, self.ef_construction, self.ef_search = int(M), int(ef_construction), int(ef_search)
        self.num_threads = num_threads
        self._embedder = embedder
        self.examples: list[RACExample] = []
        self._ids_by_text: dict[str, list[int]] = {}
        self._hnsw = hnswlib.Index(space="cosine", dim=self.dimension)
        self._hnsw.init_index(max_elements=16, ef_construction=self.ef_construction, M=self.M, random_seed=100)
        self._hnsw.set_ef(self.ef_search)

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
    ) -> ExampleIndex:
        """Index ``examples``, embedding them unless ``vectors`` (one row each) are given.

        With ``vectors`` and no embedder the index is labeled with the default embedder's name (loaded only
        if a text query needs it). ``num_threads=1`` keeps the graph, hence retrieval, reproducible.
        """
        if vectors is not None and embedder is None:
            name, dimension = resolve_model(None)[0], int(np.asarray(vectors).shape[-1])
        else:
            embedder = embedder or Embedder()
            name, dimension = embedder.name, embedder.dimension
        index = cls(
            embedder_name=name, dimension=dimension, M=M, ef_construction=ef_construction,
            ef_search=ef_search, embedder=embedder, num_threads=num_threads,
        )
        index.add(examples, vectors, show_progress=show_progress)
        return index

    @property
    def embedder(self) -> Embedder:
        """The embedder the index was built with (loaded on first use)."""
        if self._embedder is None:
            embedder = Embedder(self.embedder_name)
            if embedder.dimension != self.dimension:
                raise ValueError(
                    f"embedder {self.embedder_name!r} gives {embedder.dimension}-d vectors, index holds {self.dimension}-d"
                )
            self._embedder = embedder
        return self._embedder

    def add(self, examples: list[RACExample], vectors: np.ndarray | None = None, *, show_progress: bool | None = None) -> None:
        """Append examples (incremental: the existing graph is extended, not rebuilt)."""
        examples = list(examples)
        for position, example in enumerate(examples):
            if not isinstance(example, RACExample) or not isinstance(example.text, str) or not example.text.strip():
                raise ValueError(f"example {position} must be a RACExample with non-empty text, got {example!r}")
        if vectors is None:
            vectors = self.embedder.encode([e.text for e in examples], show_progress=show_progress)
        if len(vectors) != len(examples):
            raise ValueError(f"got {len(vectors)} vectors for {len(examples)} examples")
        if not examples:
            return
        vectors = _normalize(vectors, self.dimension)
        start = len(self.examples)
        needed = start + len(examples)
        if needed > self._hnsw.get_max_elements():
            self._hnsw.resize_index(max(needed, 2 * self._hnsw.get_max_elements()))
        self._hnsw.add_items(vectors, np.arange(start, needed), num_threads=self.num_threads)
        for offset, example in enumerate(examples):
            self.examples.append(replace(example, similarity=None))
            self._ids_by_text.setdefault(example.text, []).append(start + offset)

    # -- queries ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.examples)

    def __repr__(self) -> str:
        return f"ExampleIndex({len(self)} examples, embedder={self.embedder_name!r}, M={self.M}, ef={self.ef_search})"

    def example(self, i: int) -> RACExample:
        """The stored example behind HNSW label ``i``."""
        return self.examples[int(i)]

    def ids_for_text(self, text: str) -> list[int]:
        """Ids of stored examples whose text equals ``text`` exactly (used to drop self-matches)."""
        return list(self._ids_by_text.get(text, ()))

    def vectors(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """Stored unit vectors for ``ids`` (saves re-embedding texts that are already indexed)."""
        ids = [int(i) for i in ids]
        if not ids:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.asarray(self._hnsw.get_items(ids), dtype=np.float32).reshape(len(ids), self.dimension)

    def label_space(self) -> list[str]:
        """Sorted unique labels over every example's true and all labels (the pool for negatives)."""
        labels: set[str] = set()
        for example in self.examples:
            labels.update(example.true_labels)
            labels.update(example.all_labels or ())
        return sorted(labels)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(ids, cosine similarities)``, each ``(n, k)``; missing slots are id -1, similarity -inf."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        vectors = _normalize(vectors, self.dimension) if len(vectors) else vectors.reshape(0, self.dimension)
        ids = np.full((len(vectors), k), -1, dtype=np.int64)
        sims = np.full((len(vectors), k), -np.inf, dtype=np.float32)
        found = min(k, len(self))
        if found == 0 or len(vectors) == 0:
            return ids, sims
        self._hnsw.set_ef(max(self.ef_search, found))
        labels, distances = self._hnsw.knn_query(vectors, k=found, num_threads=self.num_threads)
        ids[:, :found] = labels
        sims[:, :found] = 1.0 - distances
        return ids, sims

    # -- persistence --------------------------------------------------------------------------------

    def manifest(self, files: dict[str, str]) -> dict[str, Any]:
        """The ``manifest.json`` content for this index given the sha256 of each data file."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "embedder": {"name": self.embedder_name, "dimension": self.dimension},
            "count": len(self),
            "hnsw": {"space": "cosine", "M": self.M, "ef_construction": self.ef_construction, "ef_search": self.ef_search},
            "files": files,
            "checksum": hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest(),
        }

    def save(self, path: str | Path) -> Path:
        """Write the index folder atomically (temp folder, then rename); replaces an older index there."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        if path.exists() and not (path / MANIFEST).is_file() and (not path.is_dir() or any(path.iterdir())):
            raise ValueError(f"{path}: exists and is not a rac index (no {MANIFEST}); refusing to overwrite it")
        with atomic_directory(path) as tmp:
            table = pa.table(
                {
                    "text": [e.text for e in self.examples],
                    "true_labels": [list(e.true_labels) for e in self.examples],
                    "all_labels": [None if e.all_labels is None else list(e.all_labels) for e in self.examples],
                    "id": [None if e.id is None else json.dumps(e.id) for e in self.examples],
                    "metadata": [json.dumps(e.metadata) if e.metadata else None for e in self.examples],
                },
                schema=pa.schema(
                    [("text", pa.string()), ("true_labels", pa.list_(pa.string())), ("all_labels", pa.list_(pa.string())),
                     ("id", pa.string()), ("metadata", pa.string())]
                ),
            )
            pq.write_table(table, tmp / EXAMPLES_FILE)
            self._hnsw.save_index(str(tmp / HNSW_FILE))
            files = {name: file_sha256(tmp / name) for name in (EXAMPLES_FILE, HNSW_FILE)}
            (tmp / MANIFEST).write_text(json.dumps(self.manifest(files), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path, embedder: Embedder | str | None = None) -> ExampleIndex:
        """Read a saved index; ``embedder`` must be the one it was built with (default: the manifest's)."""
        import hnswlib
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such index folder")
        manifest = read_manifest(path)
        name, dimension = manifest["embedder"]["name"], manifest["embedder"]["dimension"]
        if isinstance(embedder, str):
            embedder = Embedder(embedder)
        if embedder is not None and embedder.name != name:
            raise ValueError(
                f"{path / MANIFEST}: index was built with embedder {name!r}, cannot query it with {embedder.name!r}; "
                "rebuild the index or pass the same embedder"
            )
        if embedder is not None and embedder.dimension != dimension:
            raise ValueError(f"{path / MANIFEST}: index holds {dimension}-d vectors, embedder {name!r} gives {embedder.dimension}-d")
        for file_name, digest in manifest["files"].items():
            file_path = path / file_name
            if not file_path.is_file():
                raise FileNotFoundError(f"{file_path}: index file missing")
            if file_sha256(file_path) != digest:
                raise ValueError(f"{file_path}: index file is corrupt (sha256 does not match {MANIFEST})")
        hnsw = manifest["hnsw"]
        index = cls(
            embedder_name=name, dimension=dimension, M=hnsw["M"], ef_construction=hnsw["ef_construction"],
            ef_search=hnsw["ef_search"], embedder=embedder,
        )
        count = manifest["count"]
        try:
            rows = pq.read_table(path / EXAMPLES_FILE).to_pylist()
            index._hnsw = hnswlib.Index(space="cosine", dim=dimension)  # load_index wants an uninitialised one
            index._hnsw.load_index(str(path / HNSW_FILE), max_elements=max(count, 16))
        except Exception as err:  # a checksum-valid but unreadable file means a writer bug; still say where
            raise ValueError(f"{path}: cannot read index data: {err}") from None
        if len(rows) != count or index._hnsw.get_current_count() != count:
            raise ValueError(f"{path}: manifest count {count} != {len(rows)} stored examples / {index._hnsw.get_current_count()} vectors")
        index._hnsw.set_ef(index.ef_search)
        for i, row in enumerate(rows):
            index.examples.append(
                RACExample(
                    text=row["text"],
                    true_labels=tuple(row["true_labels"]),
                    all_labels=None if row["all_labels"] is None else tuple(row["all_labels"]),
                    id=None if row["id"] is None else json.loads(row["id"]),
                    metadata=None if row["metadata"] is None else json.loads(row["metadata"]),
                )
            )
            index._ids_by_text.setdefault(row["text"], []).append(i)
        return index


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Parse and validate ``manifest.json``; refuses a newer format version with an upgrade hint."""
    file_path = Path(path) / MANIFEST
    if not file_path.is_file():
        raise FileNotFoundError(f"{file_path}: index manifest missing")
    try:
        manifest = json.loads(file_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file_path}: corrupt manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{file_path}: not a rac index manifest (format != {FORMAT_NAME!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise ValueError(f"{file_path}: format_version missing or not an integer: {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{file_path}: index format version {version} is newer than this rac supports ({FORMAT_VERSION}); upgrade rac"
        )
    try:
        _ = (manifest["embedder"]["name"], int(manifest["embedder"]["dimension"]), int(manifest["count"]),
             {k: int(manifest["hnsw"][k]) for k in ("M", "ef_construction", "ef_search")}, dict(manifest["files"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{file_path}: manifest field missing or invalid: {err!r}") from None
    return manifest


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
) -> ExampleIndex:
    """Corpus file (or examples) to index, saved to ``out`` when given; the corpus is fully validated first."""
    from rac.corpus import read_corpus

    if not isinstance(corpus, list):
        corpus = read_corpus(corpus, text_col=text_col, labels_col=labels_col, label_sep=label_sep,
                             all_labels_col=all_labels_col, id_col=id_col)
    if not isinstance(embedder, Embedder):
        embedder = Embedder(embedder)
    index = ExampleIndex.build(corpus, embedder, M=M, ef_construction=ef_construction, ef_search=ef_search,
                               show_progress=show_progress)
    if out is not None:
        index.save(out)
    return index

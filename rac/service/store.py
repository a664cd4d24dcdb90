"""``LiveIndex``: the served example index, changed by clients while it serves, and never losing a change.

Every add or remove is appended to a write-ahead log (``rac.wal``, fsynced) before it is applied and
acknowledged; on start the log is replayed over the saved folder, and ``fold`` saves the index atomically
(``ExampleIndex.save``: temp folder, then rename) and only then empties the log. Replay is idempotent (an
add whose id is present, a remove whose id is absent, are skipped), so a crash between the save and the
truncation only replays changes that are already in the folder.

Every example has a string id (clients may choose it; otherwise a random one), unique in the index: it is
what ``remove`` names. Not thread-safe: the server calls every method, and runs every prediction, on one
worker thread, which also keeps the index's embedder (a tokenizer) on one thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rac.embedding import Embedder
from rac.formatting import RACExample
from rac.index import MANIFEST, ExampleIndex
from rac.wal import WriteAheadLog


class ConflictError(ValueError):
    """An added example reuses the id of one already in the index."""


def _record(example: RACExample) -> dict[str, Any]:
    return {"text": example.text, "labels": list(example.true_labels), "id": example.id,
            "all_labels": None if example.all_labels is None else list(example.all_labels),
            "metadata": example.metadata}


def _example(record: dict[str, Any]) -> RACExample:
    all_labels = record.get("all_labels")
    return RACExample(text=record["text"], true_labels=tuple(record["labels"]), id=record["id"],
                      all_labels=None if all_labels is None else tuple(all_labels), metadata=record.get("metadata"))


class LiveIndex:
    """The index at ``path`` (started empty, with ``embedder``, when the folder does not exist yet) plus its
    write-ahead log at ``wal`` (default: ``<path>.wal`` beside the folder, which saves replace whole);
    ``dtype`` is the query embedder's precision (``rac.precision``)."""

    def __init__(self, path: str | Path, *, wal: str | Path | None = None, embedder: str | None = None,
                 dtype: str | None = None):
        self.path = Path(path)
        self.wal = WriteAheadLog(wal if wal is not None else self.path.with_name(self.path.name + ".wal"))
        if self.path.exists() and not (self.path / MANIFEST).is_file():
            if not self.path.is_dir() or any(self.path.iterdir()):
                raise ValueError(f"{self.path}: exists and is not a rac index (no {MANIFEST})")
            self.index = ExampleIndex.build([], Embedder(embedder, dtype=dtype))
        else:
            try:  # a missing folder may be a save killed between its renames: load puts its copy back
                self.index = ExampleIndex.load(self.path, embedder, dtype=dtype)
            except FileNotFoundError:
                self.index = ExampleIndex.build([], Embedder(embedder, dtype=dtype))
        self._ids = {str(example.id): example.id for example in self.index.examples if example.id is not None}
        records = self.wal.replay()
        for record in records:
            self._apply(record)
        #: Changes applied since the last fold (those a crash would make the log replay).
        self.pending = len(records)

    def __len__(self) -> int:
        return len(self.index)

    def add(self, examples: list[RACExample]) -> None:
        """Log (fsync), then index ``examples``; all or none: any id already present raises ``ConflictError``."""
        for i, example in enumerate(examples):
            if str(example.id) in self._ids:
                raise ConflictError(f"examples[{i}].id: {example.id!r} is already in the index; DELETE it first")
        vectors = self.index.embedder.encode([e.text for e in examples])  # before the log: a failure logs nothing
        self.wal.append([{"op": "add", "examples": [_record(e) for e in examples]}])
        self._insert(examples, vectors)
        self.pending += 1

    def remove(self, example_id: str) -> bool:
        """Log, then remove the example with this id; ``False`` (nothing logged) when there is none."""
        if example_id not in self._ids:
            return False
        self.wal.append([{"op": "remove", "id": example_id}])
        self._delete(example_id)
        self.pending += 1
        return True

    def fold(self) -> bool:
        """Save the index atomically and empty the log, when there are changes; ``True`` if it saved."""
        if not self.pending:
            return False
        self.index.save(self.path)
        self.wal.truncate()
        self.pending = 0
        return True

    def _apply(self, record: dict[str, Any]) -> None:
        if record.get("op") == "add":
            examples = [_example(r) for r in record["examples"] if str(r["id"]) not in self._ids]
            if examples:
                self._insert(examples, None)
        elif record.get("op") == "remove":
            if str(record["id"]) in self._ids:
                self._delete(str(record["id"]))
        else:
            raise ValueError(f"{self.wal.path}: unknown record {record!r}")

    def _insert(self, examples: list[RACExample], vectors: Any) -> None:
        self.index.add(examples, vectors)
        self._ids.update((str(e.id), e.id) for e in examples)

    def _delete(self, example_id: str) -> None:
        self.index.remove([self._ids.pop(example_id)])

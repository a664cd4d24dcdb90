"""A write-ahead log: changes are on disk (fsynced) before they are acknowledged, and replayed after a crash.

One record per line, ``<crc32 hex> <compact JSON>\\n``, appended with a single ``write`` and an ``fsync``.
A crash can only tear the record being written, which was never acknowledged: ``replay`` drops a torn or
checksum-failing *last* line and cuts the file back to the last whole record, so later appends start on a
clean line. A bad record anywhere else is corruption of acknowledged data and stops ``replay`` with the line
number, rather than silently losing what follows it.

Not thread-safe: one owner appends, replays and truncates (``rac.service.store.LiveIndex`` does so from
its single worker thread).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rac.storage import fsync_folder


def _encode(record: dict[str, Any]) -> bytes:
    data = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(data), data)


def _decode(line: bytes) -> dict[str, Any] | None:
    """The record of one whole line, or ``None`` when its checksum or JSON is bad."""
    crc, _, data = line.rstrip(b"\n").partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(data):
            return None
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


class WriteAheadLog:
    """Append-only JSON-lines log at ``path`` (created, with its folder, on the first append)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Write ``records`` and fsync; when this returns they survive a crash or power loss."""
        payload = b"".join(_encode(record) for record in records)
        if not payload:
            return
        created = not self.path.exists()
        if created:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = 0
            while written < len(payload):
                written += os.write(fd, payload[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_folder(self.path.parent)

    def replay(self) -> list[dict[str, Any]]:
        """Every acknowledged record, oldest first; repairs a torn tail left by a crash mid-append."""
        if not self.path.exists():
            return []
        lines = self.path.read_bytes().splitlines(keepends=True)
        records, good_bytes = [], 0
        for number, line in enumerate(lines, 1):
            record = _decode(line) if line.endswith(b"\n") else None
            if record is None:
                if number < len(lines):
                    raise ValueError(f"{self.path} line {number}: corrupt record (checksum or JSON); refusing to "
                                     "replay past it. Move the file aside to start from the saved index.")
                with self.path.open("r+b") as handle:  # torn last record: never acknowledged, cut it off
                    handle.truncate(good_bytes)
                    os.fsync(handle.fileno())
                break
            records.append(record)
            good_bytes += len(line)
        return records

    def truncate(self) -> None:
        """Empty the log, once what it holds is saved elsewhere (a crash mid-way leaves it whole or empty)."""
        if not self.path.exists():
            return
        with self.path.open("r+b") as handle:
            handle.truncate(0)
            os.fsync(handle.fileno())

"""Crash-safe folder writes and their recovery, and file checksums, shared by the index, the model and training.

A write fills ``.NAME.tmp-<pid>-<hex>`` beside the target, then swaps it in with two renames: the old target
becomes ``.NAME.old-<pid>-<hex>``, the staging folder becomes the target, and the old copy is deleted. A
process killed between the two renames leaves no target; ``recover_directory`` renames the interrupted
swap's copy back into place. The next write to the same target deletes what dead processes left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

#: Staging and retired folders of writes running in this process (a leftover of this pid is one not in here).
_ACTIVE: set[Path] = set()
_ACTIVE_LOCK = threading.Lock()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json_artifact(path: Path, format_name: str, what: str) -> dict:
    """A JSON file rac wrote (``{"format": format_name, ...}``); missing, unparsable or another kind of file
    is an error naming it and saying what was expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: corrupt {what}, not JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != format_name:
        raise ValueError(f"{path}: not a {what} (format != {format_name!r})")
    return data


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _relative_files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir() or p.is_symlink() or not any(p.iterdir())}


def check_replaceable(
    target: Path,
    *,
    kind: str,
    recognise: Callable[[Path], bool] | None = None,
    files: Collection[str] | None = None,
    overwrite: bool = False,
) -> None:
    """Refuse to replace ``target`` unless it is missing, an empty folder, or a ``kind`` folder holding only ``files``.

    ``recognise`` says whether a folder is a ``kind``; ``files`` (when known) are what the new one will hold, so a
    file a user added to the folder is never deleted silently. ``overwrite=True`` replaces whatever is there.
    """
    if overwrite or not os.path.lexists(target):
        return
    hint = "; pass overwrite=True (--overwrite) to replace it anyway"
    if target.is_symlink() or not target.is_dir():
        raise ValueError(f"{target}: exists and is not a folder; refusing to replace it with a {kind}{hint}")
    if not any(target.iterdir()):
        return
    if recognise is not None and not recognise(target):
        raise ValueError(f"{target}: exists and is not a {kind}; refusing to replace it{hint}")
    extra = sorted(_relative_files(target) - set(files)) if files is not None else []
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise ValueError(f"{target}: holds files that are not part of a {kind} ({shown}); refusing to delete them{hint}")


_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?:(?P<pid>\d+)-)?[0-9a-z_]+$")


def _alive(pid: int | None, path: Path) -> bool:
    """Whether the writer that owns ``path`` may still be running (then its folder is not ours to touch)."""
    if pid is None:  # written by a rac that did not record its pid: a leftover
        return False
    if pid == os.getpid():
        with _ACTIVE_LOCK:
            return path in _ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def leftovers(target: Path) -> list[tuple[str, Path, int | None, bool]]:
    """``(kind, folder, pid, owner alive)`` for each ``.NAME.tmp-*`` / ``.NAME.old-*`` beside ``target``, newest first."""
    target = Path(target)
    found = []
    if target.parent.is_dir():
        for entry in target.parent.iterdir():
            match = _LEFTOVER.match(entry.name)
            if match and match["name"] == target.name:
                try:
                    mtime = entry.lstat().st_mtime_ns
                except FileNotFoundError:  # another writer cleaned it up meanwhile
                    continue
                pid = int(match["pid"]) if match["pid"] else None
                found.append((mtime, match["kind"], entry, pid, _alive(pid, entry)))
    return [item[1:] for item in sorted(found, key=lambda item: item[0], reverse=True)]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fsync_folder(folder: Path) -> None:
    """Make the folder's entries (a file created or renamed in it) durable, not only the files' bytes."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextmanager
def atomic_directory(
    target: str | Path,
    *,
    kind: str = "folder",
    recognise: Callable[[Path], bool] | None = None,
    overwrite: bool = False,
) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; when the block succeeds it takes ``target``'s place.

    An existing target is replaced only as ``check_replaceable`` allows (checked before the block, and after it
    against the files the block wrote). Files are fsynced and the swap is two renames, so a crash leaves the old
    folder or the new one complete, never a half-written one; on error the staging is removed. Leftovers of dead
    writers to the same target are deleted first.
    """
    target = Path(target)
    check_replaceable(target, kind=kind, recognise=recognise, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    for _, stale, _, alive in leftovers(target):
        if not alive:
            _remove(stale)
    pid = os.getpid()
    with _ACTIVE_LOCK:
        prefix = f".{target.name}.tmp-{pid}-"
        staging = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
        retired = staging.with_name(f".{target.name}.old-{pid}-{staging.name[len(prefix):]}")
        _ACTIVE.update((staging, retired))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); the result is an ordinary folder
    try:
        yield staging
        check_replaceable(target, kind=kind, recognise=recognise, files=_relative_files(staging), overwrite=overwrite)
        for file in staging.rglob("*"):
            if file.is_file():
                with file.open("rb") as handle:
                    os.fsync(handle.fileno())
        fsync_folder(staging)
        if os.path.lexists(target):
            os.replace(target, retired)
            try:
                os.replace(staging, target)
            except BaseException:
                os.replace(retired, target)  # this process is alive to undo the first rename
                raise
            fsync_folder(target.parent)
            _remove(retired)
        else:
            os.replace(staging, target)
            fsync_folder(target.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        with _ACTIVE_LOCK:
            _ACTIVE.difference_update((staging, retired))


def recover_directory(target: str | Path, complete: Callable[[Path], bool]) -> Path | None:
    """Put back a ``target`` that a write killed between its two renames left missing; the copy used, or ``None``.

    The sign of that crash is a dead writer's ``.old-*`` folder: its ``.tmp-*`` folder, when ``complete`` accepts
    it, is the new version and goes in place, else the old one does. Raises ``FileNotFoundError`` naming what
    to do when a copy exists but cannot be used (its writer is still running, or the rename fails).
    """
    target = Path(target)
    if os.path.lexists(target):
        return None
    found = leftovers(target)
    swapping = [pid for kind, _, pid, alive in found if kind == "old" and alive]
    if swapping:
        raise FileNotFoundError(f"{target}: missing while process {swapping[0]} replaces it; retry")
    dead = [(kind, path, pid) for kind, path, pid, alive in found if not alive]
    old = [(path, pid) for kind, path, pid in dead if kind == "old"]
    if not old:
        spare = next((path for kind, path, _ in dead if kind == "tmp" and complete(path)), None)
        if spare is not None:
            raise FileNotFoundError(f"{target}: no such folder; an unfinished write left a complete copy in {spare}: "
                                    f"rename it to {target.name} to use it")
        return None
    retired, pid = old[0]
    candidates = [path for kind, path, owner in dead if kind == "tmp" and owner == pid] + [retired]
    for candidate in candidates:
        if not complete(candidate):
            continue
        try:
            os.replace(candidate, target)
        except OSError as err:
            if os.path.lexists(target):  # another process restored it first
                return candidate
            raise FileNotFoundError(f"{target}: missing after an interrupted write; {candidate} holds a complete copy, "
                                    f"rename it to {target.name} (could not: {err})") from None
        warnings.warn(f"{target}: restored from {candidate.name}, left by a write that was interrupted", stacklevel=3)
        return candidate
    raise FileNotFoundError(f"{target}: missing after an interrupted write, and no complete copy is left "
                            f"({', '.join(path.name for _, path, _ in dead)})")

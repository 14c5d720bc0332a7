"""Crash-safe files: a file someone relies on is either its old content or its new content, never half of one.

Each write goes to a temporary file in the same folder (so the rename stays on one filesystem), is flushed and
fsynced, then renamed over the target (`os.replace`, atomic on POSIX and Windows), and the folder is fsynced so
that the rename itself survives a power cut. A process killed mid-write leaves only a temporary named
`.<name>.tmp-<pid>`, which `remove_stale_temporaries` deletes (the trainer does on start and resume).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

TMP_MARK = ".tmp-"


def temporary_path(path: Path) -> Path:
    """Where a write of `path` is staged: same folder, hidden, named after the target and this process."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path to write `path`'s new content to (by any library that takes a file name); on a
    clean exit it is fsynced and renamed over `path`; on an exception it is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # as a plain open() would create it (some writers make files 0600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        f.write(data)
        f.flush()


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(path: str | Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` writes the new file (e.g. `lambda p: save_file(state, str(p))`); then the atomic rename."""
    with atomic_path(path) as tmp:
        write(tmp)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries a killed writer left in `folder` (not recursive); returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.name.startswith(".") and TMP_MARK in p.name and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import, before any other thread could create a file while the umask is briefly 0.
_UMASK = _read_umask()


def _umask() -> int:
    return _UMASK


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":  # Windows cannot open a folder for fsync; its rename is durable enough
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""What a reader read: every file and folder its result depends on, with its size and modification time, so that the
label cache (`data/cache.py`) knows when the result is stale; and the image sizes it probed, so that an image whose
file has not changed is never probed again.

Readers call `note_input` for what they read or looked for (a label file that is missing is an input too: its
appearing changes the result) and `SplitRecords.probe` goes through `probe_once`. Both do nothing outside
`recording()`, which only the cache uses: the readers keep their signatures, and `predict` (which lists folders
with the same walk) records nothing.
"""

from __future__ import annotations

import contextlib
import os
import time
from array import array
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path

import numpy as np

__all__ = ["ABSENT", "RACY", "InputLog", "note_input", "probe_once", "recording"]

ABSENT = -1  # the size of an input that did not exist (a label file looked for, an image not there)
RACY = -2  # the time of an input changed too recently to be told from a later change (see InputLog.arrays)
# Files modified this close to the read may change again within the file system's time resolution (a few ms on
# ext4 and tmpfs, 2 s on FAT and some network file systems) without their time changing: git's "racily clean"
# entries. Such an input is never trusted: the next run reads it again.
RACY_NS = 2_000_000_000


class InputLog:
    """The inputs of one read, compactly (a folder string once, names as bytes), and the probes of the last one."""

    def __init__(self, known: dict[str, tuple[int, int, int, int]] | None = None) -> None:
        self.known = known or {}  # path -> (size, mtime_ns, width, height) of images probed by the last read
        self.started_ns = time.time_ns()
        self.dirs: dict[str, int] = {}
        self.dir_ids = array("i")
        self.blob = bytearray()
        self.ends = array("q")
        self.sizes = array("q")
        self.mtimes = array("q")
        self.widths = array("i")
        self.heights = array("i")

    def note(self, path: str, st: os.stat_result | None, wh: tuple[int, int] = (0, 0)) -> None:
        folder, name = os.path.split(path)
        self.dir_ids.append(self.dirs.setdefault(folder, len(self.dirs)))
        self.blob += name.encode()
        self.ends.append(len(self.blob))
        self.sizes.append(st.st_size if st is not None else ABSENT)
        self.mtimes.append(st.st_mtime_ns if st is not None else 0)
        self.widths.append(wh[0])
        self.heights.append(wh[1])

    def arrays(self) -> dict[str, np.ndarray]:
        """The inputs as arrays (`dep_*`) for the cache file; a time within RACY_NS of the read's start is RACY."""
        mtimes = np.array(self.mtimes, np.int64)
        mtimes[mtimes >= self.started_ns - RACY_NS] = RACY
        return {
            "dep_dir": np.array(self.dir_ids, np.int32),
            "dep_blob": np.frombuffer(bytes(self.blob), np.uint8),
            "dep_end": np.array(self.ends, np.int64),
            "dep_size": np.array(self.sizes, np.int64),
            "dep_mtime": mtimes,
            "dep_wh": np.stack([np.array(self.widths, np.int32), np.array(self.heights, np.int32)], 1),
        }


_CURRENT: ContextVar[InputLog | None] = ContextVar("hydradet_input_log", default=None)


@contextlib.contextmanager
def recording(log: InputLog) -> Iterator[InputLog]:
    """Within: `note_input` and `probe_once` record into `log`."""
    token = _CURRENT.set(log)
    try:
        yield log
    finally:
        _CURRENT.reset(token)


def note_input(path: str | Path) -> None:
    """`path` (a file or folder, present or not) is an input of the read being recorded, if any."""
    log = _CURRENT.get()
    if log is not None:
        log.note(str(path), _stat(path))


def probe_once(path: Path, probe: Callable[[Path], tuple[int, int]]) -> tuple[int, int]:
    """probe(path) -> (width, height), or the last read's answer when the file's size and time are unchanged.
    Whatever probe raises is raised (the file is recorded first, so that its repair is noticed)."""
    log = _CURRENT.get()
    if log is None:
        return probe(path)
    key, st = str(path), _stat(path)
    last = log.known.get(key)
    if st is not None and last is not None and last[:2] == (st.st_size, st.st_mtime_ns):
        log.note(key, st, last[2:])
        return last[2], last[3]
    try:
        wh = probe(path)
    except Exception:
        log.note(key, st)
        raise
    log.note(key, st, wh)
    return wh


def _stat(path: str | Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:  # missing, a dangling link, or unreadable: all "not there" for a reader
        return None

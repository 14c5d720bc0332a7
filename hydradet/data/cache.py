"""The label cache: a split's records as read, kept on disk and used again while none of its inputs has changed, as
Ultralytics keeps `labels.cache` beside a dataset's labels.

Reading a COCO-sized split costs a JSON parse and a probe of every image's header (~50 s for 118k images on 2
cores, issue 20); with the cache, a run stats each input (the annotation files, images, label files, folders
listed) and loads a few arrays (~2 s). The records are the reader's output exactly, with what it skipped and
warned about, so summaries and `data check` say the same. A changed input (its size or modification time) makes
the next run read the split again, and there every image whose file did not change keeps its probed size:
an image header is probed once per dataset, not once per run.

Where: `$HYDRADET_CACHE_DIR`, else `$XDG_CACHE_HOME/hydradet`, else `~/.cache/hydradet`, in `labels/`: never in
the data folder, which may be read-only or shared. One `.npz` per split (numpy arrays only, loaded without
pickle), named after the split's file and a hash of what identifies the read: the split's resolved path, the
reader's settings and the reader's code (so a reader that changes never reuses another's records). Written
crash-safe (`files.py`); a cache that cannot be written or read is said once and the run goes on without it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hydradet.data import inputs
from hydradet.data.records import SplitRecords
from hydradet.data.table import RecordTable
from hydradet.files import atomic_path

__all__ = ["CACHE_ENV", "cache_dir", "cache_file", "read_cached"]

CACHE_ENV = "HYDRADET_CACHE_DIR"
# The modules whose code decides what a read gives: their source is part of every cache file's key.
_READER_MODULES = ("records", "table", "inputs", "walk", "coco", "yolo", "voc", "csv_labels", "cache")
_META_FIELDS = ("class_names", "skipped", "warnings", "examples", "looked_in", "hints")


def cache_dir() -> Path:
    """Where the label caches are (the folder is made when one is written)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hydradet"


def cache_file(split_path: Path, identity: dict[str, Any]) -> tuple[Path, str]:
    """(the cache file of a split, the key it must hold). identity: what besides the split's path and the
    reader's code decides what the read gives (format, split name, reader settings)."""
    key = json.dumps([_code_hash(), str(Path(split_path).resolve()), identity], sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "labels" / f"{Path(split_path).name[:60]}-{digest}.npz", key


def read_cached(split_path: Path, identity: dict[str, Any], read: Callable[[], SplitRecords]) -> SplitRecords:
    """The split as `read()` gives it: from the cache file when every input is as it was, else read (probing only
    the images that changed) and cached. Raises what `read` raises (nothing is cached then)."""
    path, key = cache_file(split_path, identity)
    stale = _load(path, key)
    if stale is not None and _unchanged(stale):
        return _records(stale)
    with inputs.recording(inputs.InputLog(_probes(stale) if stale is not None else {})) as log:
        out = read()
    _save(path, key, out, log)
    return out


def _load(path: Path, key: str) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        if json.loads(arrays["meta"].tobytes())["key"] != key:  # a hash collision, or another version's file
            return None
        return arrays
    except Exception as e:  # a file cut short, or not ours: read the data again, and say why once
        _warn(f"label cache {path} unreadable ({type(e).__name__}: {e}); reading the data again")
        return None


def _inputs(a: dict[str, np.ndarray]) -> Iterator[tuple[str, int, int, int, int]]:
    """Every input as recorded: its path, size, time and probed width and height (one at a time: a million
    paths are never all strings at once)."""
    dirs = json.loads(a["meta"].tobytes())["dep_dirs"]
    blob, ends = a["dep_blob"].tobytes(), a["dep_end"].tolist()
    columns = (a["dep_dir"].tolist(), a["dep_size"].tolist(), a["dep_mtime"].tolist(), *a["dep_wh"].T.tolist())
    start = 0
    for end, d, size, mtime, w, h in zip(ends, *columns, strict=True):
        yield os.path.join(dirs[d], blob[start:end].decode()), size, mtime, w, h
        start = end


def _unchanged(a: dict[str, np.ndarray]) -> bool:
    """Whether every input has the size and time it had (one stat each; a missing one still missing)."""
    for p, size, mtime, _, _ in _inputs(a):
        try:
            st = os.stat(p)
        except OSError:
            if size != inputs.ABSENT:
                return False
            continue
        if size != st.st_size or mtime != st.st_mtime_ns:  # RACY never equals a time
            return False
    return True


def _probes(a: dict[str, np.ndarray]) -> dict[str, tuple[int, int, int, int]]:
    """path -> (size, mtime_ns, width, height) of the images the last read probed, for `inputs.probe_once`."""
    return {p: (size, mtime, w, h) for p, size, mtime, w, h in _inputs(a) if w > 0 and mtime != inputs.RACY}


def _records(a: dict[str, np.ndarray]) -> SplitRecords:
    meta = json.loads(a["meta"].tobytes())
    table = RecordTable.from_arrays(a, meta["names"], meta["dirs"], meta["heads"])
    return SplitRecords(table, **{k: meta[k] for k in _META_FIELDS})


def _save(path: Path, key: str, out: SplitRecords, log: inputs.InputLog) -> None:
    table = out.records if isinstance(out.records, RecordTable) else RecordTable(out.records)
    meta = {"key": key, "names": table.names, "dirs": table.dirs, "heads": table.heads, "dep_dirs": list(log.dirs)}
    meta |= {k: getattr(out, k) for k in _META_FIELDS}
    arrays = {**table.to_arrays(), **log.arrays(), "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    try:
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            np.savez(f, **arrays)
    except OSError as e:
        _warn(f"label cache not written to {path} ({e}); set {CACHE_ENV} to a writable folder to keep one")


@functools.cache
def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


@functools.cache
def _code_hash() -> str:
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in _READER_MODULES:
        digest.update((here / f"{name}.py").read_bytes())
    return digest.hexdigest()[:16]

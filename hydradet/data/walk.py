"""The files under a folder, following symbolic links to folders and files, with a link loop refused.

Python 3.11's `Path.rglob` lists a linked file but never enters a linked folder, so the images under
`images/train/more -> /pool` were missed while their labels were found and counted as orphans (the bug that
ultralytics#14672 and #5036 report). `os.walk(followlinks=True)` enters them but loops forever on a link to a
folder above it. So this small walk: `os.scandir` (d_type, no stat per file), one `os.stat` per folder to know
its identity, and a loop (a folder whose identity is one of its own ancestors') refused naming the link.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from hydradet.data.inputs import note_input
from hydradet.errors import DataError

__all__ = ["walk_files"]


def walk_files(root: Path, suffixes: Collection[str] | None = None) -> list[Path]:
    """Every file under `root` (recursively, through linked folders; linked files as their link's path), whose
    lower-cased suffix is in `suffixes` (all files when None), sorted by path.

    A dangling link is listed as a file (its reader then counts it as missing). Raises DataError naming the link
    when a linked folder leads back to one of the folders above it (a loop would never end)."""
    found: list[Path] = []
    stack: list[tuple[str, tuple[tuple[int, int], ...]]] = [(str(root), (_identity(root),))]
    while stack:
        folder, ancestors = stack.pop()
        note_input(folder)  # a file added or removed changes the folder's time: the label cache sees it
        try:
            entries = list(os.scandir(folder))
        except (NotADirectoryError, FileNotFoundError, PermissionError):
            continue  # vanished or unreadable meanwhile: what it held cannot be read either way
        for entry in entries:
            if entry.is_dir():  # follows links
                ident = _identity(Path(entry.path))
                if ident in ancestors:
                    raise DataError(
                        f"{entry.path}: a symbolic link loop (it leads back to {os.path.realpath(entry.path)}, "
                        "a folder above it); remove the link or point it at a folder outside this one"
                    )
                stack.append((entry.path, (*ancestors, ident)))
            elif suffixes is None or os.path.splitext(entry.name)[1].lower() in suffixes:
                found.append(Path(entry.path))
    return sorted(found)


def _identity(folder: Path) -> tuple[int, int]:
    st = os.stat(folder)
    return st.st_dev, st.st_ino

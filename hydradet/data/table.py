"""A split's records held as a few numpy arrays, not as one Python object per image.

A list of `ImageRecord`s costs ~1.5-2 KB per image in objects (a Path, two small arrays, a list of class-name
strings, a dict, the dataclass), ~11 KB per image measured over a whole run at COCO scale (issue 20): 118k images
cost ~1.3 GB before the first step, and every DataLoader worker touching those objects' reference counts copies
their pages. Here an image costs its file name (its folder once per folder), three offsets and its boxes as
float32 with an int32 class id: ~200 bytes for COCO's ~8 boxes per image; workers share the arrays untouched.

`RecordTable` is a Sequence of ImageRecord: `table[i]` builds the image's record on demand (a copy: nothing a
consumer does to it reaches the table), so code written for a list keeps working; the counts that summaries need
over all images (`box_counts`, `count_boxes`, `images_without`) are vectorised here instead.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

import numpy as np

__all__ = ["ImageRecord", "RecordTable"]

_CHUNK = 4096  # records appended are packed into arrays this many at a time (bounds the Python objects pending)


@dataclass
class ImageRecord:
    """One image as a reader found it (and as `RecordTable[i]` gives it back)."""

    path: Path
    boxes: np.ndarray  # (N, 4) float32 xyxy in pixels of the image as a viewer shows it
    classes: list[str]  # the source's class name of each box
    width: int = 0  # 0 = unknown until the image is opened
    height: int = 0
    # Ignore regions (COCO iscrowd, VOC difficult): neither positives nor negatives in training, and crowd
    # regions in evaluation (a detection on them is neither rewarded nor punished).
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    ignore_classes: list[str] = field(default_factory=list)
    # Image-level heads (csv sources): head -> class id (classify) or value (regress).
    image_labels: dict[str, float] = field(default_factory=dict)


class RecordTable(Sequence[ImageRecord]):
    """The records of one split. Build by `append` (a reader) or `from_arrays` (the label cache); read by index."""

    def __init__(self, records: Iterable[ImageRecord] = ()) -> None:
        self.names: list[str] = []  # class names met, in order; box classes are indices into it
        self._name_id: dict[str, int] = {}
        self.dirs: list[str] = []  # image folders, once each
        self._dir_id: dict[str, int] = {}
        self.heads: list[str] = []  # image-level heads met (csv sources)
        self.arrays: dict[str, np.ndarray] = _empty()
        self._pending: list[ImageRecord] = []
        for r in records:
            self.append(r)

    # ------------------------------------------------------------ building
    def append(self, record: ImageRecord) -> None:
        """Add one image's record (packed with the next _CHUNK)."""
        self._pending.append(record)
        if len(self._pending) >= _CHUNK:
            self._pack()

    def _pack(self) -> None:
        if not self._pending:
            return
        recs, self._pending = self._pending, []
        for r in recs:
            for c in (*r.classes, *r.ignore_classes):
                if c not in self._name_id:
                    self._name_id[c] = len(self.names)
                    self.names.append(c)
            for h in r.image_labels:
                if h not in self.heads:
                    self.heads.append(h)
        folders, files = zip(*(os.path.split(str(r.path)) for r in recs), strict=True)
        for d in folders:
            if d not in self._dir_id:
                self._dir_id[d] = len(self.dirs)
                self.dirs.append(d)
        a = self.arrays
        names = [f.encode() for f in files]
        new = {
            "name_blob": np.frombuffer(b"".join(names), np.uint8),
            "name_end": np.cumsum([len(n) for n in names], dtype=np.int64),
            "dir": np.array([self._dir_id[d] for d in folders], np.int32),
            "size": np.array([(r.width, r.height) for r in recs], np.int32).reshape(-1, 2),
            "box_end": np.cumsum([len(r.boxes) for r in recs], dtype=np.int64),
            "boxes": np.concatenate([np.asarray(r.boxes, np.float32).reshape(-1, 4) for r in recs]),
            "cls": np.array([self._name_id[c] for r in recs for c in r.classes], np.int32),
            "ign_end": np.cumsum([len(r.ignore_classes) for r in recs], dtype=np.int64),
            "ign": np.concatenate([np.asarray(r.ignore, np.float32).reshape(-1, 4) for r in recs]),
            "ign_cls": np.array([self._name_id[c] for r in recs for c in r.ignore_classes], np.int32),
            "labels": np.array([[r.image_labels.get(h, np.nan) for h in self.heads] for r in recs], np.float64).reshape(
                len(recs), len(self.heads)
            ),
        }
        for end in ("name_end", "box_end", "ign_end"):  # offsets continue from what is there
            new[end] += a[end][-1] if len(a[end]) else 0
        if a["labels"].shape[1] < len(self.heads):  # a head first met in this chunk: NaN for the earlier images
            pad = np.full((len(a["labels"]), len(self.heads) - a["labels"].shape[1]), np.nan)
            a["labels"] = np.concatenate([a["labels"], pad], 1)
        self.arrays = {k: np.concatenate([a[k], new[k]]) for k in a}

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], names: list[str], dirs: list[str], heads: list[str]
    ) -> RecordTable:
        """A table as `to_arrays` gave it (the label cache): no per-image work."""
        table = cls()
        table.arrays = {k: arrays[k] for k in _empty()}
        table.names, table.dirs, table.heads = list(names), list(dirs), list(heads)
        table._name_id = {n: i for i, n in enumerate(table.names)}
        table._dir_id = {d: i for i, d in enumerate(table.dirs)}
        return table

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays that hold every record (with `names`, `dirs` and `heads`, all of the table)."""
        self._pack()
        return dict(self.arrays)

    # ------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.arrays["dir"]) + len(self._pending)

    @overload
    def __getitem__(self, i: int) -> ImageRecord: ...
    @overload
    def __getitem__(self, i: slice) -> list[ImageRecord]: ...
    def __getitem__(self, i: int | slice) -> ImageRecord | list[ImageRecord]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        self._pack()
        a, n = self.arrays, len(self)
        if not -n <= i < n:
            raise IndexError(f"record {i} of {n}")
        i = int(i) % n
        b0, b1 = _span(a["box_end"], i)
        g0, g1 = _span(a["ign_end"], i)
        n0, n1 = _span(a["name_end"], i)
        labels = a["labels"][i]
        return ImageRecord(
            path=Path(os.path.join(self.dirs[a["dir"][i]], a["name_blob"][n0:n1].tobytes().decode())),
            boxes=a["boxes"][b0:b1].copy(),
            classes=[self.names[c] for c in a["cls"][b0:b1]],
            width=int(a["size"][i, 0]),
            height=int(a["size"][i, 1]),
            ignore=a["ign"][g0:g1].copy(),
            ignore_classes=[self.names[c] for c in a["ign_cls"][g0:g1]],
            image_labels={h: float(v) for h, v in zip(self.heads, labels, strict=True) if not np.isnan(v)},
        )

    def __iter__(self) -> Iterator[ImageRecord]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"RecordTable({len(self)} images, {len(self.box_classes())} boxes)"

    # ------------------------------------------------------------ counts over all images, vectorised
    def box_classes(self) -> np.ndarray:
        """(M,) int32: every box's class, an index into `names`, image after image."""
        self._pack()
        return self.arrays["cls"]

    def box_counts(self) -> dict[str, int]:
        """class name -> boxes of it (classes without any box left out)."""
        counts = np.bincount(self.box_classes(), minlength=len(self.names))
        return {n: int(c) for n, c in zip(self.names, counts, strict=True) if c}

    def count_boxes(self, classes: Collection[str], ignore: bool = False) -> int:
        """Boxes (ignore regions when `ignore`) whose class is one of `classes`."""
        ids = self._ids(classes)
        return int(np.isin(self.arrays["ign_cls" if ignore else "cls"], ids).sum())

    def images_without(self, classes: Collection[str] | None = None) -> int:
        """Images with no box of `classes` (of any class when None)."""
        self._pack()
        cls, ends = self.arrays["cls"], self.arrays["box_end"]
        hit = np.ones(len(cls), bool) if classes is None else np.isin(cls, self._ids(classes))
        hits = np.concatenate([[0], np.cumsum(hit)])  # hits among the first k boxes
        starts = np.concatenate([[0], ends[:-1]])
        return int((hits[ends] == hits[starts]).sum())

    def boxes_of(self, classes: Collection[str]) -> tuple[np.ndarray, np.ndarray]:
        """The boxes of `classes` over all images: (K, 4) float32 xyxy, and (K, 2) int32 their images' (w, h)."""
        self._pack()
        a = self.arrays
        keep = np.isin(a["cls"], self._ids(classes))
        image = np.repeat(np.arange(len(a["dir"])), np.diff(np.concatenate([[0], a["box_end"]])))
        return a["boxes"][keep], a["size"][image[keep]]

    def label_values(self, head: str) -> np.ndarray:
        """The image-level head's labels of the images that have one, in order (class ids or values)."""
        self._pack()
        if head not in self.heads:
            return np.zeros(0)
        column = self.arrays["labels"][:, self.heads.index(head)]
        return column[~np.isnan(column)]

    def count_labels(self, head: str) -> int:
        """Images with a label for the image-level head `head`."""
        self._pack()
        return int((~np.isnan(self.arrays["labels"][:, self.heads.index(head)])).sum()) if head in self.heads else 0

    def _ids(self, classes: Collection[str]) -> np.ndarray:
        self._pack()
        return np.array([self._name_id[c] for c in classes if c in self._name_id], np.int32)


def _span(ends: np.ndarray, i: int) -> tuple[int, int]:
    return (int(ends[i - 1]) if i else 0), int(ends[i])


def _empty() -> dict[str, np.ndarray]:
    return {
        "name_blob": np.zeros(0, np.uint8),
        "name_end": np.zeros(0, np.int64),
        "dir": np.zeros(0, np.int32),
        "size": np.zeros((0, 2), np.int32),
        "box_end": np.zeros(0, np.int64),
        "boxes": np.zeros((0, 4), np.float32),
        "cls": np.zeros(0, np.int32),
        "ign_end": np.zeros(0, np.int64),
        "ign": np.zeros((0, 4), np.float32),
        "ign_cls": np.zeros(0, np.int32),
        "labels": np.zeros((0, 0), np.float64),
    }

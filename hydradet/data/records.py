"""What every format reader produces: one ImageRecord per image (held in a RecordTable, data/table.py), boxes in
pixels with source class names.

Also the checks every reader shares, so that a bad file gets the same treatment whatever its format: each
image is probed once per dataset (`probe_image`: header only, cheap; the label cache keeps its answer while the
file is unchanged), exact duplicate label rows removed (`drop_duplicates`), bad boxes clipped or dropped
(`clean_boxes`), and everything left out or changed is counted by reason with the first few places named
(`SplitRecords.skip` / `warn`), for the summary printed at start and for `hydradet data check`. Readers call
`note_input` for each file or folder they read or look for, so that the label cache knows when to read again.

Boxes refer to the picture as a viewer shows it, i.e. with the EXIF orientation applied, as in the
Ultralytics and COCO tools: `probe_image` returns that size and `image.load_image` decodes that picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

from hydradet.data.inputs import note_input, probe_once
from hydradet.data.table import ImageRecord, RecordTable
from hydradet.errors import DataError

__all__ = [
    "BOX_CLIPPED",
    "BOX_DROPPED",
    "DUPLICATE_ROW",
    "IMAGE_CORRUPT",
    "IMAGE_EMPTY",
    "IMAGE_MISSING",
    "IMAGE_TRUNCATED",
    "LABEL_IN_PIXELS",
    "LABEL_MISSING",
    "LABEL_ORPHAN",
    "NORMALISED_TOLERANCE",
    "POLYGON_AS_BOX",
    "ROW_NOT_NORMALISED",
    "SIZE_MISMATCH",
    "SIZE_UNROTATED",
    "SIZE_WRONG",
    "BadImage",
    "DataError",
    "ImageRecord",
    "SplitRecords",
    "clean_boxes",
    "drop_duplicates",
    "exif_boxes",
    "exif_orientation",
    "is_resize",
    "note_input",
    "probe_image",
    "to_file_size",
    "xywh_to_xyxy",
]

# Reasons, worded as the summary prints them. Tests and `data check` refer to these names.
IMAGE_MISSING = "image file missing"
IMAGE_EMPTY = "image file empty (0 bytes)"
IMAGE_TRUNCATED = "image file truncated"
IMAGE_CORRUPT = "image file corrupt or not an image"
LABEL_MISSING = "label file missing (image kept as background)"
LABEL_ORPHAN = "label file matching no image (not read)"
# A normalised format (YOLO) with coordinates beyond 1: almost always pixels. Named as such, not as the zero-size
# boxes they become once multiplied by the image size again.
ROW_NOT_NORMALISED = "YOLO labels must be normalised to 0-1; a row beyond 1 (dropped)"
LABEL_IN_PIXELS = "YOLO labels must be normalised to 0-1; a label file wholly beyond 1, in pixels? (its image left out)"
POLYGON_AS_BOX = "segment polygon line (read as its bounding box, as Ultralytics does)"
BOX_DROPPED = "box with zero/negative size or NaN (dropped)"
DUPLICATE_ROW = "duplicate label row (same class and box as an earlier one; removed, as Ultralytics does)"
BOX_CLIPPED = "box partly outside the image (clipped to it)"
SIZE_MISMATCH = "image size in the annotations differs from the file (boxes rescaled to the file)"
SIZE_WRONG = (
    "image size in the annotations differs from the file in aspect ratio (not a resize: the stated size is "
    "ignored, boxes kept in the file's pixels)"
)
SIZE_UNROTATED = "annotations made on the unrotated pixels of an EXIF-rotated image (boxes rotated to the view)"

MAX_EXAMPLES = 5  # places named per reason: enough to find the pattern, short enough to read
# A normalised coordinate up to this far beyond 1 is float rounding or a box edge on the border (clipped, counted);
# further is a row in pixels (ROW_NOT_NORMALISED). 1% of a side; a pixel row's values are nearly all far above 2.
NORMALISED_TOLERANCE = 0.01
CLIP_TOLERANCE = 1.0  # pixels; float rounding in exported boxes is not worth a warning
# A stated size with the file's aspect ratio within this (relative) is a uniform resize: rounding a resized
# side to whole pixels moves the ratio by well under 1% for images over ~100 px.
RESIZE_ASPECT_TOLERANCE = 0.01


@dataclass
class SplitRecords:
    """One split (train or val) of one source, as read from disk. `records` is a RecordTable (data/table.py: a
    sequence of ImageRecord held as arrays); a list given is packed into one."""

    records: RecordTable
    class_names: list[str]  # the source's vocabulary, in its own order
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count of images or boxes left out
    warnings: dict[str, int] = field(default_factory=dict)  # reason -> count of things kept but changed
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> first few places (file[:line])
    # Where the reader looked for the images and labels, worded for a person ("labels: /d/labels/train/*.txt
    # (...)"), and what it noticed that may explain lost labels: for the totals check and `data check`.
    looked_in: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.records, RecordTable):
            self.records = RecordTable(self.records)

    def skip(self, reason: str, n: int = 1, where: object = None) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n
        self._note(reason, where)

    def warn(self, reason: str, n: int = 1, where: object = None) -> None:
        self.warnings[reason] = self.warnings.get(reason, 0) + n
        self._note(reason, where)

    def _note(self, reason: str, where: object) -> None:
        places = self.examples.setdefault(reason, [])
        for w in where if isinstance(where, list) else [where]:
            if w is not None and len(places) < MAX_EXAMPLES and str(w) not in places:
                places.append(str(w))

    def probe(self, path: Path) -> tuple[int, int] | None:
        """probe_image (once per dataset: its answer is kept by the label cache while the file is unchanged), with
        a bad image counted as skipped instead of raised."""
        try:
            return probe_once(path, probe_image)
        except BadImage as e:
            self.skip(e.reason, where=f"{path}{f' ({e.detail})' if e.detail else ''}")
            return None

    def box_counts(self) -> dict[str, int]:
        """class name -> boxes, for every class of the source (0 for those without a box) and any other met."""
        return dict.fromkeys(self.class_names, 0) | self.records.box_counts()


class BadImage(Exception):
    """An image file that cannot be used; `reason` is one of the IMAGE_* reasons."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


_ORIENTATION = ExifTags.Base.Orientation
_SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations that turn the picture by 90 degrees


def probe_image(path: Path) -> tuple[int, int]:
    """(width, height) of the picture as a viewer shows it (EXIF orientation applied), or BadImage.

    Cheap on purpose, as it runs on every image before training: the header, PNG chunk checksums (which
    catch truncation without decompressing) and a JPEG's last two bytes. That measured 0.08-0.23 ms per
    640x640 JPEG against 2.4 ms for a full decode, i.e. seconds rather than minutes for 100k images. What
    slips through (damaged pixel data in a file that ends well) fails at load time, where SourceDataset
    replaces the sample with another of its source and counts it in results.csv.
    """
    try:
        if path.stat().st_size == 0:
            raise BadImage(IMAGE_EMPTY)
    except FileNotFoundError:
        raise BadImage(IMAGE_MISSING) from None
    try:
        with Image.open(path) as im:
            (w, h), fmt = im.size, im.format
            orientation = _orientation(im)
        if fmt == "PNG":
            with Image.open(path) as im:
                im.verify()  # must come straight after open
    except BadImage:
        raise
    except Exception as e:  # PIL signals a bad file with many exception types; all mean "cannot use it"
        reason = IMAGE_TRUNCATED if isinstance(e, EOFError) or "truncated" in str(e).lower() else IMAGE_CORRUPT
        raise BadImage(reason, f"{type(e).__name__}: {e}") from None
    if fmt in ("JPEG", "MPO") and not _jpeg_ends_well(path):
        # Usually a cut-off file, but some cameras append data after the end marker: only a decode can tell.
        try:
            with Image.open(path) as im:
                im.load()
        except Exception as e:  # as above
            raise BadImage(IMAGE_TRUNCATED, f"{type(e).__name__}: {e}") from None
    if not w or not h:
        raise BadImage(IMAGE_CORRUPT, f"size {w}x{h}")
    return (h, w) if orientation in _SWAPS_SIDES else (w, h)


def _orientation(im: Image.Image) -> int:
    if im.format == "PNG":
        # PNG's getexif() decodes the whole image when no eXIf chunk precedes the pixels; writers put it first.
        if "exif" not in im.info:
            return 1
        exif = Image.Exif()
        exif.load(im.info["exif"])
        return int(exif.get(_ORIENTATION, 1))
    return int(im.getexif().get(_ORIENTATION, 1))


def _jpeg_ends_well(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-2, 2)
        return f.read(2) == b"\xff\xd9"


def exif_orientation(path: Path) -> int:
    with Image.open(path) as im:
        return _orientation(im)


def exif_boxes(boxes: np.ndarray, orientation: int, raw_w: int, raw_h: int) -> np.ndarray:
    """Boxes on the stored (unrotated) pixels -> boxes on the picture as shown, for EXIF orientation 1..8."""
    x0, y0, x1, y1 = boxes.T
    w, h = raw_w, raw_h
    # Where a point (x, y) of the stored pixels lands, per PIL's exif_transpose method for the orientation.
    corners = {
        2: (w - x1, y0, w - x0, y1),
        3: (w - x1, h - y1, w - x0, h - y0),
        4: (x0, h - y1, x1, h - y0),
        5: (y0, x0, y1, x1),
        6: (h - y1, x0, h - y0, x1),
        7: (h - y1, w - x1, h - y0, w - x0),
        8: (y0, w - x1, y1, w - x0),
    }.get(orientation)
    return boxes if corners is None else np.stack(corners, 1).astype(np.float32)


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1) if len(b) else np.zeros((0, 4), np.float32)


def clean_boxes(
    boxes: np.ndarray, classes: list[str], w: int, h: int, out: SplitRecords, where: object = None
) -> tuple[np.ndarray, list[str]]:
    """Drop (and count) boxes that are NaN/inf or empty; clip the rest to the image (counted as a warning).

    where: the place to name in the report: one for all boxes, or a list with one per box (file:line).
    """
    per_box = where if isinstance(where, list) else [where] * len(boxes)
    finite = np.isfinite(boxes).all(1)
    if w and h:
        limits = np.array([w, h, w, h], np.float32)
        with np.errstate(invalid="ignore"):
            outside = finite & ((boxes < -CLIP_TOLERANCE) | (boxes > limits + CLIP_TOLERANCE)).any(1)
        boxes = boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    else:
        outside = np.zeros(len(boxes), bool)
    with np.errstate(invalid="ignore"):
        ok = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if (~ok).any():
        out.skip(BOX_DROPPED, int((~ok).sum()), [p for p, k in zip(per_box, ok, strict=True) if not k])
    if (outside & ok).any():
        out.warn(BOX_CLIPPED, int((outside & ok).sum()), [p for p, k in zip(per_box, outside & ok, strict=True) if k])
    return boxes[ok], [c for c, k in zip(classes, ok, strict=True) if k]


def drop_duplicates(
    keys: np.ndarray, out: SplitRecords, file: object, rows: list[object], what: str = "line"
) -> np.ndarray:
    """Which of a file's label rows to keep, (N,) bool: all but exact repeats of an earlier row, counted as
    DUPLICATE_ROW with one example per file naming the repeats ("FILE: 2 rows (lines 3, 4)").

    keys: (N, K) numbers that make a row what it is (class, then the box as written): equal keys are the same
    label. Exact equality: a box moved by a hair is another object (overlaps are for NMS, not for a reader). A
    duplicated ground truth is an object no detection can match twice, so it halves AP. rows: each row's name
    within the file, after `what` ("line" 3, "annotation id" 7, "object" 2)."""
    keep = np.ones(len(keys), bool)
    if len(keys) < 2:
        return keep
    seen: set[tuple[float, ...]] = set()
    for j, key in enumerate(map(tuple, keys.tolist())):
        keep[j] = key not in seen
        seen.add(key)
    n = int((~keep).sum())
    if n:
        named = [str(r) for r, k in zip(rows, keep, strict=True) if not k]
        shown = ", ".join(named[:MAX_EXAMPLES]) + (", ..." if n > MAX_EXAMPLES else "")
        out.skip(DUPLICATE_ROW, n, where=f"{file}: {n} row{'s' * (n > 1)} ({what}{'s' * (n > 1)} {shown})")
    return keep


def to_file_size(
    boxes: np.ndarray, annotated: tuple[int, int], size: tuple[int, int], path: Path, out: SplitRecords
) -> np.ndarray:
    """Boxes annotated for an image of size `annotated` (w, h; 0 = unknown) -> boxes on the file's `size`.

    The file's size wins (a warning, counted). When `annotated` is the stored size of an EXIF-rotated file, the
    annotator saw the unrotated pixels: the boxes are rotated to the view. When it has the file's aspect ratio
    (`is_resize`), the image was resized after annotation: the boxes are scaled with it. Otherwise the stated
    size is simply wrong (a typo, a copied <size> block) and the boxes, drawn on these pixels, are kept.
    """
    if not all(annotated) or annotated == size:
        return boxes
    orientation = exif_orientation(path)
    if annotated == size[::-1] and orientation in (5, 6, 7, 8):
        out.warn(
            SIZE_UNROTATED, where=f"{path} (annotated {annotated[0]}x{annotated[1]}, EXIF orientation {orientation})"
        )
        return exif_boxes(boxes, orientation, *annotated)
    where = f"{path} (annotated {annotated[0]}x{annotated[1]}, file {size[0]}x{size[1]})"
    if not is_resize(annotated, size):
        out.warn(SIZE_WRONG, where=where)
        return boxes
    out.warn(SIZE_MISMATCH, where=where)
    return boxes * np.array([size[0] / annotated[0], size[1] / annotated[1]] * 2, np.float32)


def is_resize(stated: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether an image of `size` (w, h pixels) can be a uniform resize of one of `stated` (w, h): the same
    aspect ratio within RESIZE_ASPECT_TOLERANCE (relative)."""
    return abs((stated[0] / stated[1]) / (size[0] / size[1]) - 1) <= RESIZE_ASPECT_TOLERANCE

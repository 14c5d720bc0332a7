"""Ultralytics YOLO reader: a data YAML (path, train/val, names) or a bare images folder.

Labels are found the Ultralytics way: the last `images` folder in an image's path replaced by `labels`, the
extension by `.txt`; each line `class cx cy w h`, normalised to the image size. A missing label file means
a background image (counted); an empty one is a background image too. A line `class x1 y1 ... xn yn` (a segment
polygon, Ultralytics' segment format) is read as the polygon's bounding box, and counted. Label files that match
no image are counted, and when labels are missing the reader looks for them nearby and says where they are.
A row whose centre or size is beyond 1 is in pixels, not normalised: dropped and named with its value; a file of
such rows only leaves its image out. A row repeating an earlier one exactly is removed and counted.

"The image size" is the size of the picture as a viewer shows it, with the EXIF orientation applied
(`probe_image`), as Ultralytics does (its `exif_size`): a phone photo stored 4032x3024 with orientation 6
is labelled, and trained on, as 3024x4032.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hydradet.data.records import (
    LABEL_IN_PIXELS,
    LABEL_MISSING,
    LABEL_ORPHAN,
    NORMALISED_TOLERANCE,
    POLYGON_AS_BOX,
    ROW_NOT_NORMALISED,
    DataError,
    ImageRecord,
    SplitRecords,
    clean_boxes,
    drop_duplicates,
    note_input,
)
from hydradet.data.walk import walk_files
from hydradet.errors import read_text, read_yaml

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
NOT_LABELS = {"classes.txt"}  # written beside the labels by LabelImg: the class names, not an image's label


def read_yolo(path: Path, split: str) -> SplitRecords:
    """path: a data YAML (its `split` entry is used) or a folder of images."""
    if path.is_dir():
        names = _names_from_sibling_yaml(path)
        return _read_images(_list_images([path], path), names, [path])
    note_input(path)
    data = read_yaml(path, DataError)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a YAML mapping with `path`, `train`, `val` and `names`")
    if "names" not in data:
        raise DataError(f"{path}: key `names` is missing; list the class names, e.g. `names: [person, dog]`")
    names = _parse_names(data["names"], path)
    root = Path(data.get("path") or ".")
    root = root if root.is_absolute() else (path.parent / root)
    entry = data.get(split)
    if entry is None:
        raise DataError(f"{path}: key `{split}` is missing; it should name the {split} images folder or list")
    entries = [root / e for e in (entry if isinstance(entry, list) else [entry])]
    return _read_images(_list_images(entries, path), names, entries)


def _parse_names(names: object, path: Path) -> list[str]:
    if isinstance(names, list):
        return [str(n) for n in names]
    if isinstance(names, dict):
        # "0": person as well as 0: person (a YAML written as JSON, whose keys are always strings).
        names = {int(k) if isinstance(k, str) and k.strip().isdigit() else k: v for k, v in names.items()}
        ids = sorted(names, key=lambda k: (0, k, "") if isinstance(k, int) else (1, 0, str(k)))  # ints first
        if ids != list(range(len(ids))):
            raise DataError(f"{path}: `names` ids must be 0..{len(ids) - 1} without gaps, got {ids}")
        return [str(names[i]) for i in ids]
    raise DataError(f"{path}: `names` must be a list or a {{id: name}} mapping")


def _names_from_sibling_yaml(folder: Path) -> list[str]:
    note_input(folder.parent)
    note_input(folder.parent.parent)
    for cand in [*folder.parent.glob("*.yaml"), *folder.parent.parent.glob("*.yaml")]:
        note_input(cand)
        data = read_yaml(cand, DataError)
        if isinstance(data, dict) and "names" in data:
            return _parse_names(data["names"], cand)
    raise DataError(f"{folder}: no data YAML with `names` found beside it; give the data YAML as the split path")


def _list_images(entries: list[Path], origin: Path) -> list[Path]:
    images: list[Path] = []
    for e in entries:
        if e.is_dir():
            images += walk_files(e, IMAGE_SUFFIXES)  # through linked folders too
        elif e.suffix == ".txt" and e.is_file():  # a list of image paths, relative to the list's folder
            note_input(e)
            lines = [ln.strip() for ln in read_text(e, DataError).splitlines() if ln.strip()]
            images += [p if p.is_absolute() else e.parent / p for p in map(Path, lines)]
        else:
            raise DataError(f"{origin}: {e} is neither an images folder nor a .txt list of images")
    return images


def label_path(image: Path) -> Path:
    parts = list(image.parts)
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        parts[i] = "labels"
    return Path(*parts).with_suffix(".txt")


def find_label(image: Path) -> Path:
    """`label_path(image)`; for an image reached through a link (to it or a folder above it) whose label is not
    there, the label beside the real file (`images/train/e.jpg -> /other/images/e.jpg` labelled in
    /other/labels/e.txt), if that exists."""
    lbl = label_path(image)
    note_input(lbl)  # also when missing: a label file that appears changes the image's boxes
    if lbl.is_file():
        return lbl
    real = Path(os.path.realpath(image))
    beside_real = label_path(real) if real != Path(os.path.abspath(image)) else lbl
    if beside_real == lbl:
        return lbl
    note_input(beside_real)
    return beside_real if beside_real.is_file() else lbl


def _read_images(images: list[Path], names: list[str], entries: list[Path]) -> SplitRecords:
    """entries: the split's image folders and .txt lists, as the data YAML names them."""
    out = SplitRecords(records=[], class_names=names)
    missing_label: Path | None = None
    for img in images:
        size = out.probe(img)
        if size is None:
            continue
        lbl = find_label(img)
        if not lbl.is_file():
            out.skip(LABEL_MISSING, where=lbl)
            missing_label = missing_label or img
            label = LabelRows(np.zeros((0, 5), np.float32), [], [], [])
        else:
            label = _usable_rows(_parse_label_file(lbl, len(names)), lbl, out)
            if label is None:
                continue
        if label.polygons:
            out.warn(POLYGON_AS_BOX, len(label.polygons), [f"{lbl}:{n}" for n in label.polygons])
        (w, h), rows = size, label.rows
        cx, cy, bw, bh = (rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h)
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)
        classes = [names[int(c)] for c in rows[:, 0]]
        boxes, classes = clean_boxes(boxes, classes, w, h, out, [f"{lbl}:{n}" for n in label.lines])
        out.records.append(ImageRecord(img, boxes, classes, w, h))
    pairs = _label_folders(images, entries)
    orphans = _orphan_labels(pairs, set(entries))
    if orphans:
        out.skip(LABEL_ORPHAN, len(orphans), orphans)
    folders = [f"{lbl_dir}{'/**' if deep else ''}/*.txt" for _, lbl_dir, deep in pairs]
    more = f" and {len(folders) - 3} more folders" if len(folders) > 3 else ""
    out.looked_in = [
        f"images: {', '.join(map(str, entries))} ({len(images)} image files found)",
        f"labels: {', '.join(folders[:3]) or 'none'}{more} (each image's path with the last `images` folder "
        "replaced by `labels`, and .txt)",
    ]
    if missing_label is not None:
        out.hints += _labels_elsewhere(missing_label)
    return out


def _label_folders(images: list[Path], entries: list[Path]) -> list[tuple[Path, Path, bool]]:
    """(image folder, its label folder, recursive) for each folder entry, and each folder of listed images."""
    pairs = [(e, label_path(e / "x").parent, True) for e in entries if e.is_dir()]
    listed = [e for e in entries if not e.is_dir()]
    if listed:
        pairs += [(d, label_path(d / "x").parent, False) for d in dict.fromkeys(p.parent for p in images)]
    return pairs


def _orphan_labels(pairs: list[tuple[Path, Path, bool]], entries: set[Path]) -> list[Path]:
    """Label files in the split's label folders whose image file does not exist (under any image suffix)."""
    orphans: list[Path] = []
    for img_dir, lbl_dir, deep in pairs:
        note_input(lbl_dir)
        if not lbl_dir.is_dir():
            continue
        found = walk_files(lbl_dir, {".txt"}) if deep else lbl_dir.glob("*.txt")
        labels = sorted(p for p in found if p.name not in NOT_LABELS and p not in entries)
        if not labels:
            continue
        note_input(img_dir)
        files = walk_files(img_dir) if deep else img_dir.glob("*")
        stems = {p.with_suffix("") for p in files if p.suffix.lower() in IMAGE_SUFFIXES}
        orphans += [p for p in labels if img_dir / p.relative_to(lbl_dir).with_suffix("") not in stems]
    return list(dict.fromkeys(orphans))


def _labels_elsewhere(image: Path) -> list[str]:
    """Where `image`'s label file is, when not where the reader looks: a `<stem>.txt` in a folder beside one of the
    image's folders (up to three levels up), e.g. `Labels/` or `annotations/` instead of `labels/`."""
    expected = label_path(image)
    for up in range(1, 4):
        if len(image.parts) <= up + 1:
            break
        base, rest = image.parents[up], image.relative_to(image.parents[up])
        try:
            siblings = sorted(d for d in base.iterdir() if d.is_dir() and d != base / rest.parts[0])
        except OSError:  # a folder we may not list: no hint from there
            continue
        for d in siblings[:100]:  # a bounded look, not a search of the disk
            for cand in (d.joinpath(*rest.parts[1:]).with_suffix(".txt"), d / f"{image.stem}.txt"):
                if cand.is_file() and cand != expected:
                    return [
                        f"{image}'s label is at {cand}, but the reader looks for {expected} (the last `images` "
                        f"folder in the image's path replaced by `labels`, as Ultralytics does; names are "
                        f"case-sensitive): move or rename {d} so that the labels are at {expected.parent}"
                    ]
    return []


class LabelRows(NamedTuple):
    """A label file as read: rows `class cx cy w h` (N, 5) float32, each row's line number, the numbers of the
    lines that were segment polygons, and (line, first value) of the rows whose centre or size is beyond
    1 + NORMALISED_TOLERANCE."""

    rows: np.ndarray
    lines: list[int]
    polygons: list[int]
    beyond: list[tuple[int, float]]


def _usable_rows(label: LabelRows, lbl: Path, out: SplitRecords) -> LabelRows | None:
    """The rows to train on: rows beyond 1 (pixels?) dropped and named, then exact duplicates; None (its image
    left out, the file named) when every row is beyond 1: a file in pixels, whose image would otherwise be
    trained as a background with all its objects unlabelled."""
    if label.beyond and len(label.beyond) == len(label.lines):
        n, v = label.beyond[0]
        out.skip(LABEL_IN_PIXELS, where=f"{lbl} (all {len(label.lines)} rows; line {n} has {v})")
        return None
    keep = np.ones(len(label.lines), bool)
    if label.beyond:
        out.skip(ROW_NOT_NORMALISED, len(label.beyond), [f"{lbl}:{n} has {v} (pixels?)" for n, v in label.beyond])
        keep &= ~np.isin(label.lines, [n for n, _ in label.beyond])
    keep[keep] = drop_duplicates(label.rows[keep], out, lbl, [n for n, k in zip(label.lines, keep, strict=True) if k])
    lines = [n for n, k in zip(label.lines, keep, strict=True) if k]
    return LabelRows(label.rows[keep], lines, [n for n in label.polygons if n in lines], [])


def _parse_label_file(lbl: Path, num_classes: int) -> LabelRows:
    """Rows `class cx cy w h`, their line numbers, the numbers of the lines that were segment polygons
    (`class x1 y1 ... xn yn`, n >= 3, read as their bounding box), and the rows beyond 1 + NORMALISED_TOLERANCE
    with their first such value. NaN/inf parse here and are dropped by clean_boxes. Raises DataError naming the
    file and line for a line of another shape, a word that is not a number, or a class id out of range."""
    rows, line_numbers, polygons, beyond = [], [], [], []
    for n, line in enumerate(read_text(lbl, DataError).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        polygon = len(fields) >= 7 and len(fields) % 2 == 1
        if len(fields) != 5 and not polygon:
            raise DataError(
                f"{lbl}:{n}: expected `class cx cy w h` (5 numbers) or a segment polygon `class x1 y1 x2 y2 x3 y3 "
                f"...` (an odd count, at least 7), got {len(fields)} fields; fix or remove the line"
            )
        try:
            vals = [float(f) for f in fields]
        except ValueError:
            raise DataError(f"{lbl}:{n}: not a number in {line.strip()!r}") from None
        if not vals[0].is_integer() or not 0 <= vals[0] < num_classes:
            raise DataError(f"{lbl}:{n}: class id {fields[0]} out of range 0..{num_classes - 1}; fix it or `names`")
        if polygon:  # its bounding box, as Ultralytics' segments2boxes; NaN stays NaN (dropped, counted)
            xs, ys = np.array(vals[1::2]), np.array(vals[2::2])
            x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
            vals = [vals[0], (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
            polygons.append(n)
        # The box's centre or size beyond 1 (a polygon's vertex may be outside the image; its box's centre not).
        # inf is not pixels: clean_boxes drops it as not finite.
        big = next((v for v in vals[1:] if 1 + NORMALISED_TOLERANCE < v < math.inf), None)
        if big is not None:
            beyond.append((n, float(big)))
        rows.append(vals)
        line_numbers.append(n)
    return LabelRows(np.array(rows, np.float32).reshape(-1, 5), line_numbers, polygons, beyond)

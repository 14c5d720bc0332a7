"""Ultralytics YOLO reader: a data YAML (path, train/val, names) or a bare images folder.

Labels are found the Ultralytics way: the last `images` folder in an image's path replaced by `labels`, the
extension by `.txt`; each line `class cx cy w h`, normalised to the image size. A missing label file means
a background image (counted); an empty one is a background image too.

"The image size" is the size of the picture as a viewer shows it, with the EXIF orientation applied
(`probe_image`), as Ultralytics does (its `exif_size`): a phone photo stored 4032x3024 with orientation 6
is labelled, and trained on, as 3024x4032.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hydradet.data.records import LABEL_MISSING, DataError, ImageRecord, SplitRecords, clean_boxes
from hydradet.errors import read_yaml

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def read_yolo(path: Path, split: str) -> SplitRecords:
    """path: a data YAML (its `split` entry is used) or a folder of images."""
    if path.is_dir():
        names = _names_from_sibling_yaml(path)
        return _read_images(_list_images([path], path), names)
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
    entries = entry if isinstance(entry, list) else [entry]
    return _read_images(_list_images([root / e for e in entries], path), names)


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
    for cand in [*folder.parent.glob("*.yaml"), *folder.parent.parent.glob("*.yaml")]:
        data = read_yaml(cand, DataError)
        if isinstance(data, dict) and "names" in data:
            return _parse_names(data["names"], cand)
    raise DataError(f"{folder}: no data YAML with `names` found beside it; give the data YAML as the split path")


def _list_images(entries: list[Path], origin: Path) -> list[Path]:
    images: list[Path] = []
    for e in entries:
        if e.is_dir():
            images += sorted(p for p in e.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif e.suffix == ".txt" and e.is_file():  # a list of image paths, relative to the list's folder
            lines = [ln.strip() for ln in e.read_text().splitlines() if ln.strip()]
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


def _read_images(images: list[Path], names: list[str]) -> SplitRecords:
    out = SplitRecords(records=[], class_names=names)
    for img in images:
        size = out.probe(img)
        if size is None:
            continue
        lbl = label_path(img)
        if not lbl.is_file():
            out.skip(LABEL_MISSING, where=lbl)
            rows, lines = np.zeros((0, 5), np.float32), []
        else:
            rows, lines = _parse_label_file(lbl, len(names))
        w, h = size
        cx, cy, bw, bh = (rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h)
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)
        classes = [names[int(c)] for c in rows[:, 0]]
        boxes, classes = clean_boxes(boxes, classes, w, h, out, [f"{lbl}:{n}" for n in lines])
        out.records.append(ImageRecord(img, boxes, classes, w, h))
    return out


def _parse_label_file(lbl: Path, num_classes: int) -> tuple[np.ndarray, list[int]]:
    """Rows `class cx cy w h` and their line numbers. NaN/inf parse here and are dropped by clean_boxes."""
    rows, line_numbers = [], []
    try:
        text = lbl.read_text()
    except UnicodeDecodeError as e:
        raise DataError(f"{lbl}: byte {e.start} is not text; a label file holds lines `class cx cy w h`") from None
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            hint = " (a segment polygon? only boxes are read)" if len(fields) > 5 and len(fields) % 2 else ""
            raise DataError(f"{lbl}:{n}: expected `class cx cy w h` (5 numbers), got {len(fields)} fields{hint}")
        try:
            vals = [float(f) for f in fields]
        except ValueError:
            raise DataError(f"{lbl}:{n}: not a number in {line.strip()!r}") from None
        if not vals[0].is_integer() or not 0 <= vals[0] < num_classes:
            raise DataError(f"{lbl}:{n}: class id {fields[0]} out of range 0..{num_classes - 1}; fix it or `names`")
        rows.append(vals)
        line_numbers.append(n)
    return np.array(rows, np.float32).reshape(-1, 5), line_numbers

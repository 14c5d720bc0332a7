"""COCO JSON reader: `images`, `annotations` (bbox [x, y, w, h] in pixels), `categories`.

Structural problems (duplicate ids, annotations of unknown images or categories, malformed entries) are
errors naming the file, the id and the fix: they mean the file is not what its writer meant, and guessing
would train on wrong labels. Problems of single images or boxes are skipped or fixed and counted.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from hydradet.data.records import (
    IMAGE_MISSING,
    DataError,
    ImageRecord,
    SplitRecords,
    clean_boxes,
    drop_duplicates,
    note_input,
    to_file_size,
    xywh_to_xyxy,
)
from hydradet.errors import read_text


def load_coco_json(json_path: Path) -> dict[str, Any]:
    """The parsed file, checked to be a COCO instances file with unique ids and consistent references."""
    text = read_text(json_path, DataError)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{json_path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise DataError(f"{json_path}: expected a JSON object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{json_path}: key `{key}` is missing or not a list; is this a COCO instances file?")
    for key, needed in (("images", ("id", "file_name")), ("categories", ("id", "name")), ("annotations", ("id",))):
        for n, entry in enumerate(data[key]):
            missing = [k for k in needed if not isinstance(entry, dict) or k not in entry]
            if missing:
                raise DataError(f"{json_path}: `{key}[{n}]` lacks {missing}; each entry needs {list(needed)}")
        dup = [i for i, c in Counter(e["id"] for e in data[key]).items() if c > 1]
        if dup:
            raise DataError(f"{json_path}: `{key}` has duplicate ids {sorted(dup, key=str)[:5]}; ids must be unique")
    names = Counter(c["name"] for c in data["categories"])
    if any(c > 1 for c in names.values()):
        dup = [n for n, c in names.items() if c > 1]
        raise DataError(f"{json_path}: `categories` repeat names {dup}; classes are matched by name, make them unique")
    images = {img["id"] for img in data["images"]}
    cats = {c["id"] for c in data["categories"]}
    for ann in data["annotations"]:
        if ann.get("image_id") not in images:
            raise DataError(
                f"{json_path}: annotation id {ann['id']} names unknown image_id {ann.get('image_id')}; "
                "add the image to `images` or remove the annotation"
            )
        if ann.get("category_id") not in cats:
            raise DataError(
                f"{json_path}: annotation id {ann['id']} has unknown category_id {ann.get('category_id')}; "
                f"known: {sorted(cats, key=str)}"
            )
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise DataError(f"{json_path}: annotation id {ann['id']} has bbox {bbox!r}; expected [x, y, width, height]")
    return data


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _find(file_name: str, roots: list[Path]) -> Path | None:
    """The first root holding `file_name`; the places before it are inputs too (an image put there moves it)."""
    for r in roots:
        if (r / file_name).exists():
            return r / file_name
        note_input(r / file_name)
    return None


def read_coco(json_path: Path, images_dir: Path | None = None) -> SplitRecords:
    """Images are found at images_dir/file_name, else beside the JSON, else in the JSON's images/ folder.

    Each image is probed (header only). When the image's `width`/`height` in the JSON differ from the file,
    the file wins and boxes are rescaled (a warning, counted), except when they are the file's stored size
    before an EXIF rotation: then the annotator saw the unrotated pixels and boxes are rotated to the view.
    """
    note_input(json_path)
    data = load_coco_json(json_path)
    cat_names = {c["id"]: c["name"] for c in data["categories"]}
    cat_index = {cid: i for i, cid in enumerate(cat_names)}
    roots = [images_dir] if images_dir else [json_path.parent, json_path.parent / "images"]
    out = SplitRecords(records=[], class_names=list(cat_names.values()))
    out.looked_in = [
        f"annotations: {json_path} ({len(data['images'])} images, {len(data['annotations'])} annotations)",
        f"images: each `file_name` in {' or '.join(map(str, roots))}",
    ]

    by_image: dict[Any, list[dict]] = {img["id"]: [] for img in data["images"]}
    crowds: dict[Any, list[dict]] = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        (crowds if ann.get("iscrowd", 0) else by_image)[ann["image_id"]].append(ann)

    for img in data["images"]:
        path = _find(img["file_name"], roots)
        if path is None:  # name every folder looked in: the fix is usually the source's `images` key
            out.skip(IMAGE_MISSING, where=f"{img['file_name']} (looked in {', '.join(map(str, roots))})")
            continue
        size = out.probe(path)
        if size is None:
            continue
        anns, crowd = by_image[img["id"]], crowds[img["id"]]
        keys = np.array([[cat_index[a["category_id"]], *a["bbox"]] for a in anns], np.float64).reshape(-1, 5)
        keep = drop_duplicates(keys, out, f"{json_path} ({img['file_name']})", [a["id"] for a in anns], "annotation id")
        anns = [a for a, k in zip(anns, keep, strict=True) if k]
        # Objects and crowd regions are brought to the file's size together: one image, one size warning.
        both = xywh_to_xyxy(np.array([a["bbox"] for a in anns + crowd], np.float32).reshape(-1, 4))
        both = to_file_size(both, (int(img.get("width") or 0), int(img.get("height") or 0)), size, path, out)
        boxes, ignore = both[: len(anns)], both[len(anns) :]
        where = [f"{json_path}: annotation id {a['id']} ({img['file_name']})" for a in anns]
        classes = [cat_names[a["category_id"]] for a in anns]
        boxes, classes = clean_boxes(boxes, classes, *size, out, where)
        record = ImageRecord(path, boxes, classes, *size)
        record.ignore, record.ignore_classes = ignore, [cat_names[a["category_id"]] for a in crowd]
        out.records.append(record)
    return out

"""COCO JSON reader: `images`, `annotations` (bbox [x, y, w, h] in pixels), `categories`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hydradet.data.records import DataError, ImageRecord, SplitRecords, clean_boxes, xywh_to_xyxy


def read_coco(json_path: Path, images_dir: Path | None = None) -> SplitRecords:
    """Images are found at images_dir/file_name, else beside the JSON, else in the JSON's images/ folder."""
    try:
        data = json.loads(json_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{json_path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{json_path}: key `{key}` is missing or not a list; is this a COCO instances file?")

    cat_names = {c["id"]: c["name"] for c in data["categories"]}
    roots = [images_dir] if images_dir else [json_path.parent, json_path.parent / "images"]
    out = SplitRecords(records=[], class_names=list(cat_names.values()))

    by_image: dict[int, list[dict]] = {img["id"]: [] for img in data["images"]}
    if len(by_image) != len(data["images"]):
        raise DataError(f"{json_path}: `images` has duplicate ids; each image needs a unique `id`")
    for ann in data["annotations"]:
        if ann.get("image_id") not in by_image:
            raise DataError(f"{json_path}: annotation id {ann.get('id')} names unknown image_id {ann.get('image_id')}")
        if ann.get("category_id") not in cat_names:
            raise DataError(
                f"{json_path}: annotation id {ann.get('id')} has unknown category_id {ann.get('category_id')}; "
                f"known: {sorted(cat_names)}"
            )
        if ann.get("iscrowd", 0):
            out.skip("iscrowd annotation (not used as a box)")
            continue
        by_image[ann["image_id"]].append(ann)

    for img in data["images"]:
        path = next((r / img["file_name"] for r in roots if (r / img["file_name"]).is_file()), None)
        if path is None:
            out.skip("image file missing")
            continue
        anns = by_image[img["id"]]
        xywh = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        boxes = xywh_to_xyxy(xywh)
        classes = [cat_names[a["category_id"]] for a in anns]
        w, h = int(img.get("width") or 0), int(img.get("height") or 0)
        boxes, classes = clean_boxes(boxes, classes, w, h, out)
        out.records.append(ImageRecord(path, boxes, classes, w, h))
    return out

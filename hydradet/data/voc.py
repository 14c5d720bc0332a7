"""Pascal VOC reader: one XML per image (`filename`, `size`, `object/{name, difficult, bndbox}`).

A split is a VOC root folder (all of `Annotations/*.xml`, images in `JPEGImages/`) or an image-set list such as
`ImageSets/Main/train.txt` (one image id per line; the root is three folders up, as in the VOC layout).
VOC boxes are 1-based inclusive pixel indices; like torchvision and Detectron2 we shift xmin/ymin by -1 so that
a box covers [xmin - 1, xmax) in 0-based continuous pixels.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

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
)
from hydradet.errors import decode_text, read_text

# An XML declaration's encoding (`<?xml version="1.0" encoding="ISO-8859-1"?>`): a file that states one is read
# in it, as any XML parser would; every other file must be UTF-8, like all text inputs.
_DECLARED_ENCODING = re.compile(rb"^(?:\xef\xbb\xbf)?<\?xml[^>]*?encoding=[\"']([A-Za-z0-9._-]+)[\"']")


def read_voc(path: Path) -> SplitRecords:
    root, xml_files = _annotation_files(path)
    parsed = [_parse(x) for x in xml_files]
    names = sorted({obj[0] for _, _, _, objs in parsed for obj in objs})
    out = SplitRecords(records=[], class_names=names)
    found = f"listed in {path}" if path.is_file() else "found"
    out.looked_in = [
        f"annotations: {root / 'Annotations'}/*.xml ({len(xml_files)} {found})",
        f"images: {root / 'JPEGImages'}/<filename> (each XML's <filename>)",
    ]
    for xml_path, (filename, w, h, objects) in zip(xml_files, parsed, strict=True):
        image = root / "JPEGImages" / filename
        if not image.exists():
            note_input(image)
            out.skip(IMAGE_MISSING, where=f"{image} (named in {xml_path})")
            if not out.hints:
                out.hints += _image_elsewhere(image, root)
            continue
        size = out.probe(image)
        if size is None:
            continue
        keys = np.array([[names.index(o[0]), o[1], *o[2]] for o in objects], np.float64).reshape(-1, 6)
        keep = drop_duplicates(keys, out, xml_path, list(range(1, len(objects) + 1)), "object")
        objects = [o for o, k in zip(objects, keep, strict=True) if k]
        # `difficult` objects are ignore regions: neither positives nor negatives, as the VOC protocol scores them.
        kept, difficult = [o for o in objects if not o[1]], [o for o in objects if o[1]]
        both = np.array([o[2] for o in kept + difficult], np.float32).reshape(-1, 4)
        both = to_file_size(both, (w, h), size, image, out)  # together: one image, one size warning
        boxes, classes = clean_boxes(both[: len(kept)], [o[0] for o in kept], *size, out, str(xml_path))
        record = ImageRecord(image, boxes, classes, *size)
        record.ignore, record.ignore_classes = both[len(kept) :], [o[0] for o in difficult]
        out.records.append(record)
    return out


def _image_elsewhere(image: Path, root: Path) -> list[str]:
    """Where a missing image is, when near: another extension in JPEGImages/, or another folder of the root
    (Penn-Fudan ships PNGImages/)."""
    near = sorted(image.parent.glob(f"{image.stem}.*")) if image.parent.is_dir() else []
    for folder in sorted(d for d in root.iterdir() if d.is_dir() and d != image.parent):
        near += sorted(folder.glob(f"{image.stem}.*"))
    for cand in near:
        if cand.suffix.lower() != ".xml":
            return [
                f"{image} is named in the annotations, but {cand} exists: the reader takes each <filename> in "
                f"{root / 'JPEGImages'}; move the images there, or correct the <filename>s"
            ]
    return []


def _annotation_files(path: Path) -> tuple[Path, list[Path]]:
    if path.is_dir():
        if not (path / "Annotations").is_dir():
            raise DataError(f"{path}: no Annotations/ folder; give a VOC root (Annotations/, JPEGImages/) or a list")
        note_input(path / "Annotations")
        files = sorted((path / "Annotations").glob("*.xml"))
        if not files:  # the classes come from the XML files: without any, no class of the config could match
            raise DataError(f"{path / 'Annotations'}: no .xml files; a VOC split needs one annotation file per image")
        return path, files
    root = path.parent.parent.parent  # ROOT/ImageSets/Main/train.txt
    note_input(path)
    ids = [ln.split()[0] for ln in read_text(path, DataError).splitlines() if ln.strip()]
    if not ids:
        raise DataError(f"{path}: lists no image id; an image-set list has one id (an XML's name) per line")
    files = [root / "Annotations" / f"{i}.xml" for i in ids]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} listed ids have no annotation file, e.g. {missing[0]}")
    return root, files


def _parse(xml_path: Path) -> tuple[str, int, int, list[tuple[str, bool, list[float]]]]:
    note_input(xml_path)
    data = xml_path.read_bytes()
    declared = _DECLARED_ENCODING.match(data)
    utf8 = declared is None or declared.group(1).lower().replace(b"_", b"-") in (b"utf-8", b"utf8")
    try:
        ann = ET.fromstring(decode_text(data, xml_path, DataError) if utf8 else data)
    except ET.ParseError as e:
        line, col = e.position
        raise DataError(f"{xml_path}:{line}:{col}: not valid XML ({e})") from None
    filename = ann.findtext("filename")
    if not filename:
        raise DataError(f"{xml_path}: <filename> is missing")
    w, h = int(float(ann.findtext("size/width") or 0)), int(float(ann.findtext("size/height") or 0))
    objects = []
    for i, obj in enumerate(ann.iter("object"), 1):
        name, box = obj.findtext("name"), obj.find("bndbox")
        if not name or box is None:
            raise DataError(f"{xml_path}: <object> #{i} needs <name> and <bndbox>")
        try:
            x0, y0, x1, y1 = (float(box.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise DataError(f"{xml_path}: <object> #{i} ({name}) has a non-numeric <bndbox> value") from None
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        objects.append((name.strip(), difficult, [x0 - 1, y0 - 1, x1, y1]))
    return filename, w, h, objects

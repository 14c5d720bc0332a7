"""A corpus of broken files, generated here: every case gets its exact error (file, line or key, and the fix)
or its exact count, and a training run over the recoverable ones completes, including an image that breaks
on disk after the scan (replaced by another sample and counted in results.csv)."""

from __future__ import annotations

import csv
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from hydradet.config import load_config
from hydradet.data import records as R
from hydradet.data.coco import read_coco
from hydradet.data.dataset import SourceDataset, load_image
from hydradet.data.yolo import read_yolo
from hydradet.errors import ConfigError, DataError

RED = (230, 20, 20)
HEADS = {"pets": {"task": "detect", "classes": ["cat", "dog"]}}
FAST = [
    "model.backbone=shufflenet_v2_x0_5",
    "model.backbone_weights=null",
    "model.imgsz=96",
    "model.neck_width=16",
    "train.workers=0",
]


# ---------------------------------------------------------------- files
def _png_bytes(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = b"\x89PNG\r\n\x1a\n"
    for kind, data in chunks:
        out += struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return out


def png_rgb16(path: Path, rgb16: np.ndarray) -> None:
    """A 16-bit RGB PNG (PIL cannot write one)."""
    h, w, _ = rgb16.shape
    rows = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(_png_bytes([(b"IHDR", ihdr), (b"IDAT", zlib.compress(rows)), (b"IEND", b"")]))


def png_bad_pixels(path: Path) -> None:
    """A PNG whose header and checksums are fine but whose pixel data is garbage: only a decode finds it."""
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), np.uint8)).save(path)
    data, pos, chunks = path.read_bytes(), 8, []
    while pos < len(data):
        (n,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + n]
        chunks.append((kind, body[:4] + bytes(b ^ 0x55 for b in body[4:]) if kind == b"IDAT" else body))
        pos += 12 + n
    path.write_bytes(_png_bytes(chunks))


def painted(size: tuple[int, int], box: tuple[int, int, int, int], mode: str = "RGB") -> Image.Image:
    arr = np.full((size[1], size[0], 3), 128, np.uint8)
    arr[box[1] : box[3], box[0] : box[2]] = RED
    return Image.fromarray(arr).convert(mode) if mode != "RGB" else Image.fromarray(arr)


def save_oriented(im: Image.Image, path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[R.ExifTags.Base.Orientation] = orientation
    im.save(path, exif=exif.tobytes(), **({"quality": 95, "subsampling": 0} if path.suffix == ".jpg" else {}))


def red_box(image: torch.Tensor) -> list[int]:
    """The bounding box of the red pixels of a (3, H, W) image."""
    r, g, b = image.int()
    ys, xs = torch.nonzero((r > 180) & (g < 80) & (b < 80), as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def write_coco_corpus(root: Path) -> Path:
    """8 usable images (odd modes, EXIF, wrong sizes, bad boxes) and 5 broken ones, as one COCO source."""
    img = root / "images"
    img.mkdir(parents=True)
    painted((64, 48), (8, 8, 40, 40), "L").save(img / "gray.png")
    palette = Image.fromarray((np.asarray(painted((64, 48), (8, 8, 40, 40)))[..., 1] < 50).astype(np.uint8), "P")
    palette.putpalette([128, 128, 128, *RED])
    palette.save(img / "palette.png", transparency=0)
    painted((64, 48), (8, 8, 40, 40), "RGBA").save(img / "rgba.png")
    Image.fromarray(np.full((48, 64), 51400, np.uint16)).save(img / "gray16.png")
    png_rgb16(img / "rgb16.png", np.full((48, 64, 3), 40000, np.uint16))
    save_oriented(painted((64, 40), (8, 4, 30, 20)), img / "rotated.jpg", 6)  # annotated on the stored pixels
    painted((64, 48), (8, 8, 40, 40)).save(img / "resized.jpg")  # annotated at 128x96
    painted((64, 48), (8, 8, 40, 40)).save(img / "boxes.jpg")
    (img / "empty.jpg").write_bytes(b"")
    full = (img / "boxes.jpg").read_bytes()
    (img / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (img / "corrupt.jpg").write_bytes(np.random.default_rng(1).bytes(300))
    png = (img / "gray.png").read_bytes()
    (img / "truncated.png").write_bytes(png[: len(png) - 30])
    names = ["gray.png", "palette.png", "rgba.png", "gray16.png", "rgb16.png", "rotated.jpg", "resized.jpg"]
    names += ["boxes.jpg", "missing.jpg", "empty.jpg", "truncated.jpg", "corrupt.jpg", "truncated.png"]
    sizes = {"resized.jpg": (128, 96), "rotated.jpg": (64, 40)}
    bboxes = {n: [[8, 8, 32, 32]] for n in names}
    bboxes["resized.jpg"] = [[16, 16, 64, 64]]
    bboxes["rotated.jpg"] = [[8, 4, 22, 16]]
    nan, inf = float("nan"), float("inf")
    # kept, clipped, zero width, negative height, NaN, inf: two kept (one clipped), four dropped
    bboxes["boxes.jpg"] = [
        [8, 8, 32, 32],
        [50, 30, 40, 40],
        [8, 8, 0, 10],
        [8, 8, 10, -5],
        [nan, 8, 4, 4],
        [8, 8, inf, 4],
    ]
    images, anns = [], []
    for i, name in enumerate(names, 1):
        w, h = sizes.get(name, (64, 48))
        images.append({"id": i, "file_name": name, "width": w, "height": h})
        for b in bboxes[name]:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "bbox": b, "iscrowd": 0})
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}))
    return path


COCO_SKIPPED = {R.IMAGE_MISSING: 1, R.IMAGE_EMPTY: 1, R.IMAGE_TRUNCATED: 2, R.IMAGE_CORRUPT: 1, R.BOX_DROPPED: 4}
COCO_WARNINGS = {R.SIZE_UNROTATED: 1, R.SIZE_MISMATCH: 1, R.BOX_CLIPPED: 1}


def write_yolo_corpus(root: Path) -> Path:
    """8 usable images (empty and missing labels, bad boxes, EXIF, odd modes) and 2 broken ones."""
    img, lbl = root / "images" / "train", root / "labels" / "train"
    img.mkdir(parents=True)
    lbl.mkdir(parents=True)
    for name in ("empty_label", "no_label", "bad_boxes", "plain"):
        painted((64, 48), (16, 12, 48, 36)).save(img / f"{name}.jpg")
    painted((64, 48), (16, 12, 48, 36), "L").save(img / "gray.jpg")
    painted((64, 48), (16, 12, 48, 36), "CMYK").save(img / "cmyk.jpg", quality=95)
    painted((64, 48), (16, 12, 48, 36), "LA").save(img / "la.png")
    save_oriented(painted((64, 40), (8, 4, 30, 20)), img / "rotated.jpg", 6)
    (img / "empty.jpg").write_bytes(b"")
    (img / "corrupt.png").write_text("not an image")
    good = "1 0.5 0.5 0.5 0.5\n"
    for name in ("plain", "gray", "cmyk", "la", "corrupt", "empty"):
        (lbl / f"{name}.txt").write_text(good)
    (lbl / "empty_label.txt").write_text("")
    # ok, partly outside (clipped), zero width, negative width, NaN, inf
    (lbl / "bad_boxes.txt").write_text(
        good + "0 0.9 0.5 0.4 0.2\n0 .5 .5 0 .2\n0 .5 .5 -.1 .2\n0 nan .5 .1 .1\n0 .5 .5 inf .1\n"
    )
    # The label of what a viewer shows: the stored 64x40 picture turned to 40x64; red at x 20..36, y 8..30.
    (lbl / "rotated.txt").write_text(f"0 {28 / 40} {19 / 64} {16 / 40} {22 / 64}\n")
    path = root / "data.yaml"
    path.write_text("path: .\ntrain: images/train\nval: images/train\nnames: [cat, dog]\n")
    return path


YOLO_SKIPPED = {R.IMAGE_EMPTY: 1, R.IMAGE_CORRUPT: 1, R.LABEL_MISSING: 1, R.BOX_DROPPED: 4}
YOLO_WARNINGS = {R.BOX_CLIPPED: 1}


def corpus_config(root: Path, *overrides: str):
    coco, yolo = write_coco_corpus(root / "coco"), write_yolo_corpus(root / "yolo")
    sources = {
        "coco": {"format": "coco", "train": str(coco), "val": str(coco), "labels": {"pets": {"cat": "cat"}}},
        "yolo": {"format": "yolo", "train": str(yolo), "labels": {"pets": {"cat": "cat", "dog": "dog"}}},
    }
    return load_config({"heads": HEADS, "sources": sources}, [*FAST, f"project={root / 'runs'}", *overrides])


# ---------------------------------------------------------------- the scan: exact counts and places
def test_coco_corpus_counts_every_skip_and_warning(tmp_path):
    data = read_coco(write_coco_corpus(tmp_path))
    assert len(data.records) == 8
    assert data.skipped == COCO_SKIPPED and data.warnings == COCO_WARNINGS
    assert data.examples[R.IMAGE_MISSING] == [f"missing.jpg (looked in {tmp_path}, {tmp_path / 'images'})"]
    assert [p.split(" (")[0] for p in data.examples[R.IMAGE_TRUNCATED]] == [
        str(tmp_path / "images" / n) for n in ("truncated.jpg", "truncated.png")
    ]
    dropped = data.examples[R.BOX_DROPPED]
    assert [p.split(": ")[1] for p in dropped] == [f"annotation id {i} (boxes.jpg)" for i in (10, 11, 12, 13)]
    by_name = {r.path.name: r for r in data.records}
    assert by_name["boxes.jpg"].boxes.tolist() == [[8, 8, 40, 40], [50, 30, 64, 48]]  # the second clipped
    assert by_name["resized.jpg"].boxes.tolist() == [[8, 8, 40, 40]]  # rescaled from 128x96: the file wins
    assert (by_name["resized.jpg"].width, by_name["resized.jpg"].height) == (64, 48)


def test_yolo_corpus_counts_every_skip_and_warning(tmp_path):
    data = read_yolo(write_yolo_corpus(tmp_path), "train")
    assert len(data.records) == 8
    assert data.skipped == YOLO_SKIPPED and data.warnings == YOLO_WARNINGS
    lbl = tmp_path / "labels" / "train"
    assert data.examples[R.BOX_DROPPED] == [f"{lbl / 'bad_boxes.txt'}:{n}" for n in (3, 4, 5, 6)]
    assert data.examples[R.BOX_CLIPPED] == [f"{lbl / 'bad_boxes.txt'}:2"]
    assert data.examples[R.LABEL_MISSING] == [str(lbl / "no_label.txt")]
    by_name = {r.path.stem: r for r in data.records}
    assert len(by_name["empty_label"].boxes) == 0 and len(by_name["no_label"].boxes) == 0  # backgrounds, kept


@pytest.mark.parametrize("orientation", range(1, 9))
def test_yolo_labels_refer_to_the_picture_a_viewer_shows(tmp_path, orientation):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    stored = painted((64, 40), (8, 4, 30, 20))
    save_oriented(stored, tmp_path / "images" / "a.jpg", orientation)
    view = ImageOps.exif_transpose(Image.open(tmp_path / "images" / "a.jpg"))
    x0, y0, x1, y1 = red_box(torch.from_numpy(np.asarray(view).copy()).permute(2, 0, 1))
    vw, vh = view.size
    label = f"0 {(x0 + x1) / 2 / vw} {(y0 + y1) / 2 / vh} {(x1 - x0) / vw} {(y1 - y0) / vh}\n"
    (tmp_path / "labels" / "a.txt").write_text(label)
    (tmp_path / "d.yaml").write_text("path: .\ntrain: images\nnames: [cat]\n")
    (rec,) = read_yolo(tmp_path / "d.yaml", "train").records
    assert (rec.width, rec.height) == (vw, vh) == ((40, 64) if orientation >= 5 else (64, 40))
    assert np.allclose(rec.boxes[0], red_box(load_image(rec.path)), atol=1)


@pytest.mark.parametrize("orientation", range(2, 9))
def test_boxes_on_stored_pixels_follow_each_exif_orientation(tmp_path, orientation):
    save_oriented(painted((64, 40), (8, 4, 30, 20)), tmp_path / "a.png", orientation)
    moved = R.exif_boxes(np.array([[8, 4, 30, 20]], np.float32), orientation, 64, 40)
    assert moved[0].tolist() == red_box(load_image(tmp_path / "a.png"))


def test_coco_annotated_on_the_stored_pixels_of_a_rotated_jpeg_is_rotated_to_the_view(tmp_path):
    data = read_coco(write_coco_corpus(tmp_path))
    rec = next(r for r in data.records if r.path.name == "rotated.jpg")
    assert (rec.width, rec.height) == (40, 64)
    assert np.allclose(rec.boxes[0], red_box(load_image(rec.path)), atol=2)
    assert "EXIF orientation 6" in data.examples[R.SIZE_UNROTATED][0]


MODES = {  # file -> (a background pixel as loaded, whether the red box is still red)
    "coco/images/gray.png": ((128, 128, 128), False),
    "coco/images/palette.png": ((114, 114, 114), True),  # index 0 is transparent: the letterbox grey shows
    "coco/images/rgba.png": ((128, 128, 128), True),
    "coco/images/gray16.png": ((200, 200, 200), False),  # 51400 / 257: scaled, where convert() clips to 255
    "coco/images/rgb16.png": ((156, 156, 156), False),  # 40000 >> 8: PIL reads 16-bit RGB as its high bytes
    "yolo/images/train/gray.jpg": ((128, 128, 128), False),
    "yolo/images/train/cmyk.jpg": ((128, 128, 128), True),
    "yolo/images/train/la.png": ((128, 128, 128), False),
}


@pytest.mark.parametrize("name", list(MODES))
def test_grayscale_palette_alpha_cmyk_and_16_bit_images_load_as_8_bit_rgb(tmp_path, name):
    write_coco_corpus(tmp_path / "coco")
    write_yolo_corpus(tmp_path / "yolo")
    background, red = MODES[name]
    image = load_image(tmp_path / name)
    assert image.shape == (3, 48, 64) and image.dtype == torch.uint8
    assert (image[:, 44, 60].int() - torch.tensor(background)).abs().max() <= 2  # JPEG: within 2 levels
    if red:
        assert red_box(image)[:2] in ([8, 8], [16, 12])


# ---------------------------------------------------------------- errors before training
def _coco(tmp_path: Path, images=None, anns=None, cats=None, text: str | None = None) -> Path:
    images = [{"id": 1, "file_name": "a.jpg"}] if images is None else images
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]}] if anns is None else anns
    cats = [{"id": 1, "name": "cat"}] if cats is None else cats
    path = tmp_path / "x.json"
    path.write_text(
        text if text is not None else json.dumps({"images": images, "annotations": anns, "categories": cats})
    )
    return path


ANN = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]}
COCO_ERRORS = {
    "duplicate image ids": (
        {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}]},
        r"x\.json: `images` has duplicate ids \[1\]; ids must be unique",
    ),
    "duplicate annotation ids": (
        {"anns": [{"id": 5, **ANN}, {"id": 5, **ANN}]},
        r"`annotations` has duplicate ids \[5\]",
    ),
    "duplicate category ids": ({"cats": [{"id": 1, "name": "cat"}, {"id": 1, "name": "dog"}]}, r"`categories` has dup"),
    "repeated category names": (
        {"cats": [{"id": 1, "name": "cat"}, {"id": 2, "name": "cat"}]},
        r"repeat names \['cat'\]",
    ),
    "annotation of unknown image": (
        {"anns": [{"id": 7, **ANN, "image_id": 2}]},
        r"annotation id 7 names unknown image_id 2; add the image",
    ),
    "unknown category id": (
        {"anns": [{"id": 7, **ANN, "category_id": 3}]},
        r"annotation id 7 has unknown category_id 3",
    ),
    "bad bbox": (
        {"anns": [{"id": 7, **ANN, "bbox": [1, 2, 3]}]},
        r"annotation id 7 has bbox \[1, 2, 3\]; expected \[x, y,",
    ),
    "image without file_name": ({"images": [{"id": 1}]}, r"`images\[0\]` lacks \['file_name'\]"),
    "malformed JSON": ({"text": '{"images": [\n  {"id": 1,}\n]}'}, r"x\.json:2:\d+: not valid JSON"),
    "not COCO": ({"text": "[1, 2]"}, r"expected a JSON object with images, annotations, categories"),
}


@pytest.mark.parametrize("case", list(COCO_ERRORS))
def test_coco_structural_problems_are_errors_naming_file_id_and_fix(tmp_path, case):
    kwargs, message = COCO_ERRORS[case]
    with pytest.raises(DataError, match=message):
        read_coco(_coco(tmp_path, **kwargs))


YOLO_ERRORS = {
    "class id out of range": ("0 .5 .5 .1 .1\n2 .5 .5 .1 .1\n", r"a\.txt:2: class id 2 out of range 0\.\.1; fix it or"),
    "class id not an integer": ("1.5 .5 .5 .1 .1\n", r"a\.txt:1: class id 1\.5 out of range"),
    "too few fields": ("\n0 .5 .5 .1\n", r"a\.txt:2: expected `class cx cy w h` \(5 numbers\) or a segment polygon"),
    # 6 fields: a box with a confidence (a prediction file), or a polygon missing a coordinate: neither is a label
    "six fields": ("0 .5 .5 .1 .1 .9\n", r"a\.txt:1: .*\(an odd count, at least 7\), got 6 fields; fix or remove"),
    "polygon of two points": ("0 .1 .1 .2 .2\n0 .1 .1 .2 .1 .2\n", r"a\.txt:2: .* got 6 fields"),
    "not a number": ("0 .5 x .1 .1\n", r"a\.txt:1: not a number in '0 \.5 x \.1 \.1'"),
}


@pytest.mark.parametrize("case", list(YOLO_ERRORS))
def test_yolo_label_problems_are_errors_naming_file_and_line(tmp_path, case):
    text, message = YOLO_ERRORS[case]
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels" / "a.txt").write_text(text)
    (tmp_path / "d.yaml").write_text("path: .\ntrain: images\nnames: [cat, dog]\n")
    with pytest.raises(DataError, match=message):
        read_yolo(tmp_path / "d.yaml", "train")


def test_malformed_yaml_names_line_and_column(tmp_path):
    (tmp_path / "d.yaml").write_text("path: .\ntrain: [images\nnames: [cat]\n")
    with pytest.raises(DataError, match=r"d\.yaml:3:\d+: not valid YAML"):
        read_yolo(tmp_path / "d.yaml", "train")


def test_malformed_xml_names_line_and_column(tmp_path):
    from hydradet.data.voc import read_voc

    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text(
        "<annotation>\n  <filename>a.jpg</filename>\n  <object>\n</annotation>"
    )
    with pytest.raises(DataError, match=r"a\.xml:4:\d+: not valid XML"):
        read_voc(tmp_path)


def test_unknown_class_name_in_labels_is_a_config_error_naming_the_key(tmp_path):
    yolo = {"format": "yolo", "train": str(write_yolo_corpus(tmp_path)), "labels": {"pets": {"Cat": "cat"}}}
    cfg = load_config({"heads": HEADS, "sources": {"yolo": yolo}}, FAST)
    with pytest.raises(ConfigError, match=r"sources\.yolo\.labels\.pets\.Cat: unknown source class 'Cat'; did you"):
        SourceDataset(cfg, "yolo", "train", train=True)


# ---------------------------------------------------------------- failures at load time
def test_an_image_that_breaks_after_the_scan_is_replaced_by_the_next_and_named(tmp_path):
    ds = SourceDataset(corpus_config(tmp_path), "yolo", "train", train=False)
    png_bad_pixels(ds.records[0].path)  # header and checksums still fine: this is what only a decode finds
    sample = ds[0]
    assert sample.index == 1 and sample.skipped == (str(ds.records[0].path),)
    assert ds[1].skipped == ()
    for r in ds.records:
        r.path.write_bytes(b"")
    with pytest.raises(DataError, match=r"yolo/train: 8 images in a row failed to decode, e\.g\. .*; are the files"):
        ds[0]


def test_training_over_the_recoverable_corpus_completes_and_counts_the_replaced_image(tmp_path):
    from hydradet.train.trainer import train

    # 8 + 8 usable images, batch 16, one step: every image is drawn exactly once. A worker process loads them:
    # the count must come back from it.
    cfg = corpus_config(tmp_path, "train.epochs=1", "train.batch=16", "train.steps_per_epoch=1", "train.workers=1")
    lines: list[str] = []

    def log(line: str) -> None:
        if not lines:  # the first line comes after the scan, before any image is loaded
            (tmp_path / "coco" / "images" / "gray.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        lines.append(line)

    run = train(cfg, log=log)
    (row,) = list(csv.DictReader((run / "results.csv").open()))
    assert row["skipped_images"] == "1"
    assert row["pets/mAP50"] != ""  # evaluation survived the broken image too
    text = "\n".join(lines)
    for reason, n in [*COCO_SKIPPED.items(), *YOLO_SKIPPED.items()]:
        assert f"skipped: {n} x {reason}, e.g. " in text
    for reason, n in [*COCO_WARNINGS.items(), *YOLO_WARNINGS.items()]:
        assert f"warning: {n} x {reason}, e.g. " in text
    assert "skipped: 1 x image failed to decode (replaced by another sample), e.g. " in text
    assert "gray.png" in text.split("image failed to decode")[1]

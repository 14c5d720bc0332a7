"""Pictures of batches as the model sees them (train_batch<k>.jpg after augmentation; val_batch<k>_labels.jpg and
_pred.jpg): a grid of the batch's letterboxed images, each sample's boxes in the colour of the head they belong to,
and on each sample its source and the heads it supervises, one chip per head in that head's colour. A head
without a chip on a sample got nothing from it: the rule (train/rule.py) made visible.

With `train.pseudo` (train/pseudo.py) a train picture also tells labels from teacher: a head's targets on a sample
whose source does not label it are its teacher's, drawn dashed and chipped `HEAD: teacher (N boxes, K ignore)`;
ignore regions (a teacher's doubtful boxes, COCO crowds, VOC difficult) are hatched: no loss is taken there."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from hydradet.palette import head_colour, label_font

MAX_IMAGES = 16  # samples per picture, as Ultralytics' plot_images
MAX_SIDE = 1920  # pixels: tiles shrink so that the grid stays within this


def batch_picture(
    images: Tensor,
    annotations: list[dict[str, dict[str, Tensor]]],
    sources: list[str],
    classes: dict[str, list[str] | None],
    conf: dict[str, float] | None = None,
    caption: str = "supervises",
    taught: list[set[str]] | None = None,
) -> Image.Image:
    """A grid of up to MAX_IMAGES samples.

    images: (B, 3, S, S) float in [0, 1] (Batch.images). annotations: per sample, head -> its targets
    (Batch.targets: detect {"boxes" (N, 4) xyxy in the S x S pixels, "labels"}, classify {"label"}, regress
    {"value"}) or its predictions (with "scores" / "score"). classes: every head of the model, in its order (which
    sets the colours), -> its class names (None for regress). conf: for predictions, per detect head, the score a
    box must exceed to be drawn; None for ground truth (no scores written). caption: the word after each
    sample's source ("supervises" for training batches, "labels" for val ones). taught: per sample, the heads whose
    targets come from a teacher (drawn dashed, chipped "teacher"); given, every "ignore" region is hatched and
    counted on its head's chip. None: neither (val pictures, and train ones before `train.pseudo`)."""
    n = min(len(images), MAX_IMAGES)
    cols = math.ceil(math.sqrt(n)) if n else 1
    rows = math.ceil(n / cols) if n else 1
    side = int(images.shape[-1]) if n else 1
    tile = min(side, MAX_SIDE // cols)
    grid = Image.new("RGB", (cols * tile, rows * tile), "white")
    order = list(classes)
    for i in range(n):
        pixels = (images[i].detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        im = Image.fromarray(pixels)
        if tile != side:
            im = im.resize((tile, tile), Image.Resampling.BILINEAR)
        marks = None if taught is None else taught[i]
        _annotate(im, annotations[i], f"{sources[i]} {caption}:", classes, order, tile / side, conf, marks)
        grid.paste(im, ((i % cols) * tile, (i // cols) * tile))
    pen = ImageDraw.Draw(grid)
    for c in range(1, cols):  # thin white lines between the tiles
        pen.line([(c * tile, 0), (c * tile, rows * tile)], fill="white")
    for r in range(1, rows):
        pen.line([(0, r * tile), (cols * tile, r * tile)], fill="white")
    return grid


def _annotate(
    im: Image.Image,
    per_head: dict[str, dict[str, Tensor]],
    title: str,
    classes: dict[str, list[str] | None],
    order: list[str],
    scale: float,
    conf: dict[str, float] | None,
    taught: set[str] | None,
) -> None:
    """One sample's boxes and chips. taught None: no ignore regions and no teacher marks (the pictures as they
    were before train.pseudo, unchanged to the byte)."""
    pen = ImageDraw.Draw(im)
    font = label_font(max(8, round(im.width / 26)))
    width = max(1, round(im.width / 200))
    chips: list[tuple[str, str]] = []  # (text, colour) written top-left, one line each
    for head in [h for h in order if h in per_head]:
        t, colour, names = per_head[head], head_colour(head, order), classes[head] or []
        if "boxes" in t:
            marks = _Marks(pen, colour, names, scale, width, font)
            chips.append((_detect(marks, head, t, conf.get(head, 0.0) if conf is not None else None, taught), colour))
        elif "label" in t:
            label = int(t["label"])
            name = names[label] if label < len(names) else str(label)
            chips.append((f"{head}: {name}" + (f" {float(t['score']):.2f}" if "score" in t else ""), colour))
        else:
            chips.append((f"{head}: {float(t['value']):.3g}", colour))
    y = _text(pen, (0, 0), title, "black", font, ink="white")
    for text, colour in chips:
        y = _text(pen, (0, y), text, colour, font)


@dataclass
class _Marks:
    """How one head is drawn on one tile."""

    pen: ImageDraw.ImageDraw
    colour: str
    names: list[str]
    scale: float  # tile pixels per batch pixel
    width: int  # box lines
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont


def _detect(marks: _Marks, head: str, t: dict[str, Tensor], conf: float | None, taught: set[str] | None) -> str:
    """Draws one detect head's boxes (predictions above `conf` with their scores) and returns its chip's text."""
    if taught is not None:  # ignore regions first, so that boxes stay readable over the hatching
        for box in t["ignore"].tolist() if "ignore" in t else []:
            _hatch(marks.pen, [v * marks.scale for v in box], marks.colour)
    keep = t["scores"] > conf if conf is not None and "scores" in t else slice(None)
    boxes, labels = t["boxes"][keep].tolist(), t["labels"][keep].tolist()
    scores = t["scores"][keep].tolist() if conf is not None and "scores" in t else [None] * len(boxes)
    teacher = taught is not None and head in taught
    for box, label, score in zip(boxes, labels, scores, strict=True):
        box = [v * marks.scale for v in box]
        if teacher:
            _dashed_rectangle(marks.pen, box, marks.colour, marks.width)
        else:
            marks.pen.rectangle(box, outline=marks.colour, width=marks.width)
        name = marks.names[label] if label < len(marks.names) else str(label)
        text = name if score is None else f"{name} {score:.2f}"
        _text(marks.pen, (box[0], box[1]), text, marks.colour, marks.font, above=True)
    ignored = len(t["ignore"]) if taught is not None and "ignore" in t else 0
    if teacher:
        return f"{head}: teacher ({_count(len(boxes), 'box', 'boxes')}, {ignored} ignore)"
    return f"{head} ({len(boxes)}, {ignored} ignore)" if ignored else f"{head} ({len(boxes)})"


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _dashed_rectangle(pen: ImageDraw.ImageDraw, box: list[float], colour: str, width: int) -> None:
    """A box outline in dashes: a teacher's box, told from a solid real label at a glance. PIL draws no dashed
    lines (ImageDraw.line has no dash pattern), so each side is drawn as its own short segments."""
    x1, y1, x2, y2 = box
    dash = max(3, 3 * width)  # dash and gap alike: dashes stay visible on small tiles, gaps on large ones
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = math.hypot(bx - ax, by - ay)
        for start in np.arange(0.0, length, 2 * dash):
            a, b = start / length, min(start + dash, length) / length
            pen.line(
                [(ax + a * (bx - ax), ay + a * (by - ay)), (ax + b * (bx - ax), ay + b * (by - ay))], colour, width
            )


def _hatch(pen: ImageDraw.ImageDraw, box: list[float], colour: str) -> None:
    """Thin diagonal lines filling `box`, clipped to it: an ignore region, where the head takes no loss. Hatched
    rather than outlined so that it never reads as a box to find."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    step = max(4.0, (w + h) / 24)  # line spacing: visible on a tiny region, not a solid fill on a big one
    for d in np.arange(step / 2, w + h, step):
        # The line x - x1 = d - (y - y1), from the top-right to the bottom-left; t = y - y1 kept inside the box.
        t0, t1 = max(0.0, d - w), min(h, d)
        if t0 <= t1:
            pen.line([(x1 + d - t0, y1 + t0), (x1 + d - t1, y1 + t1)], colour, 1)


def _text(
    pen: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    fill: str,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    ink: str = "black",
    above: bool = False,
) -> float:
    """Text on a filled rectangle at xy (above it if `above` and there is room); returns the y below it."""
    _, top, right, bottom = pen.textbbox((0, 0), text, font=font)
    x, y = xy
    if above and y >= bottom:
        y -= bottom
    pen.rectangle((x, y + top, x + right, y + bottom), fill=fill)
    pen.text((x, y), text, fill=ink, font=font)
    return y + bottom

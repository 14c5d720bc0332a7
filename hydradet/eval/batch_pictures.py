"""Pictures of batches as the model sees them (train_batch<k>.jpg after augmentation; val_batch<k>_labels.jpg and
_pred.jpg): a grid of the batch's letterboxed images, each sample's boxes in the colour of the head they belong to,
and on each sample its source and the heads it supervises, one chip per head in that head's colour. A head
without a chip on a sample got nothing from it: the rule (train/rule.py) made visible."""

from __future__ import annotations

import math

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
) -> Image.Image:
    """A grid of up to MAX_IMAGES samples.

    images: (B, 3, S, S) float in [0, 1] (Batch.images). annotations: per sample, head -> its targets
    (Batch.targets: detect {"boxes" (N, 4) xyxy in the S x S pixels, "labels"}, classify {"label"}, regress
    {"value"}) or its predictions (with "scores" / "score"). classes: every head of the model, in its order (which
    sets the colours), -> its class names (None for regress). conf: for predictions, per detect head, the score a
    box must exceed to be drawn; None for ground truth (no scores written). caption: the word after each
    sample's source ("supervises" for training batches, "labels" for val ones)."""
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
        _annotate(im, annotations[i], f"{sources[i]} {caption}:", classes, order, tile / side, conf)
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
) -> None:
    pen = ImageDraw.Draw(im)
    font = label_font(max(8, round(im.width / 26)))
    width = max(1, round(im.width / 200))
    chips: list[tuple[str, str]] = []  # (text, colour) written top-left, one line each
    for head in [h for h in order if h in per_head]:
        t, colour, names = per_head[head], head_colour(head, order), classes[head] or []
        if "boxes" in t:
            keep = t["scores"] > conf.get(head, 0.0) if conf is not None and "scores" in t else slice(None)
            boxes, labels = t["boxes"][keep].tolist(), t["labels"][keep].tolist()
            scores = t["scores"][keep].tolist() if conf is not None and "scores" in t else [None] * len(boxes)
            for box, label, score in zip(boxes, labels, scores, strict=True):
                box = [v * scale for v in box]
                pen.rectangle(box, outline=colour, width=width)
                name = names[label] if label < len(names) else str(label)
                _text(pen, (box[0], box[1]), name if score is None else f"{name} {score:.2f}", colour, font, above=True)
            chips.append((f"{head} ({len(boxes)})", colour))
        elif "label" in t:
            label = int(t["label"])
            name = names[label] if label < len(names) else str(label)
            chips.append((f"{head}: {name}" + (f" {float(t['score']):.2f}" if "score" in t else ""), colour))
        else:
            chips.append((f"{head}: {float(t['value']):.3g}", colour))
    y = _text(pen, (0, 0), title, "black", font, ink="white")
    for text, colour in chips:
        y = _text(pen, (0, y), text, colour, font)


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

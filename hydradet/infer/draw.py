"""Pictures of predictions: one colour per head, a label on each box (class, score, track id); image-level heads'
verdicts (`gender: female 0.93`, `age: 34.2`) as lines of text in the top-left corner.

It takes plain arrays and strings, not a `Result`: `Result.plot` builds the labels and calls `draw`, so neither
module needs the other (and anything else, e.g. a batch picture, can draw the same way)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from hydradet.palette import HEAD_COLOURS, head_colour, label_font

__all__ = ["HEAD_COLOURS", "HeadBoxes", "draw", "head_colour"]

# Per head: (boxes (N, 4) float xyxy in the image's pixels, one label per box), or an image-level verdict's text.
HeadBoxes = tuple[np.ndarray, Sequence[str]]


def draw(
    image: np.ndarray,
    heads: Mapping[str, HeadBoxes | str],
    head_order: Sequence[str],
    labels: bool = True,
) -> Image.Image:
    """A copy of `image` ((H, W, 3) uint8 RGB) with each head's boxes, or its verdict's line of text, drawn in
    `heads`' order. Colours follow `head_order` (the model's heads) so that a head keeps its colour whichever
    heads ran. labels: False draws the boxes only (verdict lines are always written)."""
    order = list(head_order) or list(heads)
    canvas = Image.fromarray(image).convert("RGB")
    pen = ImageDraw.Draw(canvas)
    longer = max(canvas.size)
    width = max(2, round(longer / 300))
    font = label_font(max(10, round(longer / 60)))
    y = 0
    for head, item in heads.items():
        colour = head_colour(head, order)
        if isinstance(item, str):  # an image-level verdict: a line of text, whatever `labels` says
            _, top, right, bottom = pen.textbbox((0, 0), item, font=font)
            pen.rectangle((0, y + top, right, y + bottom), fill=colour)
            pen.text((0, y), item, fill="black", font=font)
            y += bottom
            continue
        boxes, texts = item
        for box, text in zip(np.asarray(boxes).tolist(), texts, strict=True):
            pen.rectangle(box, outline=colour, width=width)
            if not labels:
                continue
            _, top, right, bottom = pen.textbbox((0, 0), text, font=font)
            # Above the box, or inside it where the box touches the top edge.
            ty = box[1] - bottom if box[1] >= bottom else box[1]
            pen.rectangle((box[0], ty + top, box[0] + right, ty + bottom), fill=colour)
            pen.text((box[0], ty), text, fill="black", font=font)
    return canvas

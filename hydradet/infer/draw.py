"""Pictures of predictions: one colour per head, the class name and score on each box; image-level heads'
verdicts (`gender: female 0.93`, `age: 34.2`) as lines of text in the top-left corner."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from hydradet.infer.results import Result

# Distinct, colour-blind-friendly colours (Okabe-Ito), one per head in model order.
HEAD_COLOURS = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]


def head_colour(head: str, head_order: list[str]) -> str:
    i = head_order.index(head) if head in head_order else len(head_order)
    return HEAD_COLOURS[i % len(HEAD_COLOURS)]


def draw(result: Result, head_order: list[str] | None = None, labels: bool = True) -> Image.Image:
    """A copy of the image with each head's boxes; colours follow the model's head order so that a head keeps
    its colour whichever heads ran."""
    order = head_order or list(result.classes) or list(result.heads)
    canvas = Image.fromarray(result.orig_img).convert("RGB")
    pen = ImageDraw.Draw(canvas)
    longer = max(canvas.size)
    width = max(2, round(longer / 300))
    font = _font(max(10, round(longer / 60)))
    y = 0
    for head, r in result.heads.items():
        if not hasattr(r, "boxes"):  # an image-level verdict: a line of text, whatever `labels` says
            label = f"{head}: {r.text()}"  # type: ignore[union-attr]
            _, top, right, bottom = pen.textbbox((0, 0), label, font=font)
            pen.rectangle((0, y + top, right, y + bottom), fill=head_colour(head, order))
            pen.text((0, y), label, fill="black", font=font)
            y += bottom
            continue
        colour = head_colour(head, order)
        for box, score, name in zip(r.boxes.tolist(), r.scores.tolist(), r.names, strict=True):
            pen.rectangle(box, outline=colour, width=width)
            if not labels:
                continue
            label = f"{head}:{name} {score:.2f}"
            _, top, right, bottom = pen.textbbox((0, 0), label, font=font)
            # Above the box, or inside it where the box touches the top edge.
            y = box[1] - bottom if box[1] >= bottom else box[1]
            pen.rectangle((box[0], y + top, box[0] + right, y + bottom), fill=colour)
            pen.text((box[0], y), label, fill="black", font=font)
    return canvas


@cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType (its wheels do)
    except (TypeError, OSError):
        return ImageFont.load_default()

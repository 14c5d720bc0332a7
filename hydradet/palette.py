"""How heads look in every picture hydradet draws (predictions, batches of a run, plots): one colour per head, in
the model's head order, and the font for labels. Kept below `eval/` and `infer/` so that both draw alike."""

from __future__ import annotations

from functools import cache

from PIL import ImageFont

# Distinct, colour-blind-friendly colours (Okabe-Ito), one per head in model order.
HEAD_COLOURS = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]


def head_colour(head: str, head_order: list[str]) -> str:
    """The head's colour ("#RRGGBB"): its place in `head_order`, so a head keeps its colour whichever heads ran."""
    i = head_order.index(head) if head in head_order else len(head_order)
    return HEAD_COLOURS[i % len(HEAD_COLOURS)]


@cache
def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font at `size` pixels (scalable when Pillow has FreeType, as its wheels do)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()

"""One picture per head of its boxes: sizes, aspect ratios and centres. Drawn with PIL (no plotting library).

Densities rather than scatter plots, so that 100 boxes and 1,000,000 boxes both read at a glance.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

PANEL = 240  # pixels per panel side
BINS = 48
MARGIN = 36
INK, GRID = (40, 40, 40), (200, 200, 200)


def box_picture(head: str, wh: np.ndarray, centres: np.ndarray, aspect: np.ndarray) -> Image.Image:
    """wh and centres (N, 2) relative to the image, aspect (N,) = width / height in pixels."""
    width = 3 * PANEL + 4 * MARGIN
    img = Image.new("RGB", (width, PANEL + 2 * MARGIN + 16), "white")
    draw = ImageDraw.Draw(img)
    draw.text((MARGIN, 6), f"head {head}: {len(wh)} boxes", fill=INK)
    top = MARGIN + 8
    lefts = [MARGIN + k * (PANEL + MARGIN) for k in range(3)]

    # Box size: width (right) against height (up), as fractions of the image.
    _heatmap(img, lefts[0], top, wh[:, 0], 1 - wh[:, 1])
    _frame(draw, lefts[0], top, "size: width (x) vs height (y), / image", ["0", "0.5", "1"])

    # Aspect ratio on a log2 axis, so that 1:2 and 2:1 sit equally far from square.
    log_ar = np.log2(np.clip(aspect[np.isfinite(aspect) & (aspect > 0)], 1 / 16, 16))
    counts, _ = np.histogram(log_ar, bins=BINS, range=(-4, 4))
    peak = max(int(counts.max()), 1)
    bar = PANEL / BINS
    for k, c in enumerate(counts):
        x0 = lefts[1] + k * bar
        draw.rectangle([x0, top + PANEL * (1 - c / peak), x0 + bar - 1, top + PANEL], fill=(70, 110, 180))
    _frame(draw, lefts[1], top, "aspect ratio width / height", ["1/16", "1", "16"])

    # Centres, with y down as in the image.
    _heatmap(img, lefts[2], top, centres[:, 0], centres[:, 1])
    _frame(draw, lefts[2], top, "centres (x, y) / image", ["0", "0.5", "1"])
    return img


def _heatmap(img: Image.Image, left: int, top: int, x: np.ndarray, y: np.ndarray) -> None:
    ok = np.isfinite(x) & np.isfinite(y)
    hist, _, _ = np.histogram2d(y[ok], x[ok], bins=BINS, range=[[0, 1], [0, 1]])
    level = np.log1p(hist) / max(np.log1p(hist).max(), 1e-9)  # log: a few dense modes must not hide the rest
    rgb = 255 - level[..., None] * np.array([215, 165, 75])  # white to dark blue
    tile = Image.fromarray(rgb.astype(np.uint8)).resize((PANEL, PANEL), Image.Resampling.NEAREST)
    img.paste(tile, (left, top))


def _frame(draw: ImageDraw.ImageDraw, left: int, top: int, title: str, ticks: list[str]) -> None:
    draw.rectangle([left, top, left + PANEL, top + PANEL], outline=INK)
    draw.line([left + PANEL // 2, top, left + PANEL // 2, top + PANEL], fill=GRID)
    draw.text((left, top + PANEL + 4), ticks[0], fill=INK)
    draw.text((left + PANEL // 2 - 6, top + PANEL + 4), ticks[1], fill=INK)
    draw.text((left + PANEL - 18, top + PANEL + 4), ticks[2], fill=INK)
    draw.text((left, top + PANEL + 18), title, fill=INK)

"""Pictures of detections: one colour per head, the class name and score on each box."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from hydradet.infer.predict import ImageResult

# Distinct, colour-blind-friendly colours (Okabe-Ito), one per head in model order.
HEAD_COLOURS = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]


def draw(result: ImageResult, head_order: list[str]) -> Image.Image:
    with Image.open(result.path) as im:
        canvas = ImageOps.exif_transpose(im).convert("RGB")
    pen = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 300))
    for head, r in result.heads.items():
        colour = HEAD_COLOURS[head_order.index(head) % len(HEAD_COLOURS)]
        for box, score, name in zip(r.boxes, r.scores, r.names, strict=True):
            pen.rectangle(box, outline=colour, width=width)
            label = f"{head}:{name} {score:.2f}"
            x0, y0 = box[0], max(0, box[1] - 12)
            tb = pen.textbbox((x0, y0), label)
            pen.rectangle(tb, fill=colour)
            pen.text((x0, y0), label, fill="black")
    return canvas


def save_drawing(result: ImageResult, head_order: list[str], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result.path.stem}.jpg"
    draw(result, head_order).save(path, quality=90)
    return path

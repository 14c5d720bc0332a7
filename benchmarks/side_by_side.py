"""Pictures of models side by side: the same images predicted by each weights file at its own calibrated conf, one
column per model (its name on top), one row per image. For BENCHMARKS.md (e.g. strict hydradet vs train.pseudo on
coco_val images that show persons and animals).

    .venv/bin/python benchmarks/side_by_side.py --model strict=runs/.../best.safetensors \\
        --model pseudo=runs/.../best.safetensors --out docs/pseudo_vs_strict.jpg IMAGE [IMAGE ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

import hydradet
from hydradet.palette import label_font

TILE = 360  # pixels: each picture's longer side


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--model", action="append", required=True, help="NAME=WEIGHTS (a column; give two or more)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    columns = [spec.partition("=") for spec in args.model]
    tiles = []
    for name, _, weights in columns:
        model = hydradet.load(weights)
        tiles.append((name, [_fit(Image.fromarray(r.plot())) for r in model.predict([str(p) for p in args.images])]))
    font = label_font(22)
    header = 34
    heights = [max(pictures[r].height for _, pictures in tiles) for r in range(len(args.images))]
    grid = Image.new("RGB", (TILE * len(tiles), header + sum(heights)), "white")
    pen = ImageDraw.Draw(grid)
    for c, (name, pictures) in enumerate(tiles):
        pen.text((c * TILE + 8, 4), name, fill="black", font=font)
        for r, picture in enumerate(pictures):
            grid.paste(picture, (c * TILE, header + sum(heights[:r])))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out, quality=80)
    print(f"wrote {args.out}")


def _fit(picture: Image.Image) -> Image.Image:
    scale = TILE / max(picture.size)
    return picture.resize((round(picture.width * scale), round(picture.height * scale)))


if __name__ == "__main__":
    main()

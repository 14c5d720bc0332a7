"""A synthetic image-level set in UTKFace's layout: images + train/val CSVs with age, gender and race columns.

Each image shows one figure on a noisy background. Its three labels are visual, so that each head has something
to learn, with noise so that none is trivial:
- age (regress, 1-90, skewed to 20-40 as in UTKFace): the figure's size, with +-2 years of label noise;
- gender (0 male / 1 female, as UTKFace codes it): the colour family, cool or warm, of the figure;
- race (0-4, UTKFace's White, Black, Asian, Indian, Others; unbalanced): the figure's shape.
`examples/hydranet_faces.yaml` trains age/gender/ethnicity heads on it (`hydradet synth OUT --attributes`).
"""

from __future__ import annotations

import colorsys
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross", "ring")  # race code k draws SHAPES[k]
RACE_SHARE = (0.35, 0.2, 0.2, 0.15, 0.1)  # unbalanced, as UTKFace's (White 42%, Others 7%)
HEADER = ("image", "age", "gender", "race")


@dataclass(frozen=True)
class AttributeSpec:
    train_images: int = 600
    val_images: int = 200
    image_size: tuple[int, int] = (80, 64)  # width, height
    seed: int = 0


@dataclass(frozen=True)
class AttributeSet:
    root: Path
    images: Path
    train_csv: Path
    val_csv: Path


def _age(r: np.random.Generator) -> float:
    if r.random() < 0.7:
        return float(np.clip(r.normal(32, 12), 1, 90))
    return float(r.uniform(1, 90))


def _colour(r: np.random.Generator, warm: bool) -> tuple[int, int, int]:
    hue = r.uniform(-0.06, 0.1) % 1 if warm else r.uniform(0.5, 0.68)
    rgb = colorsys.hsv_to_rgb(hue, r.uniform(0.55, 1.0), r.uniform(0.55, 1.0))
    return tuple(int(255 * c) for c in rgb)  # type: ignore[return-value]


def _figure(pen: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, rad: float, fill: tuple[int, int, int]) -> None:
    if shape == "circle":
        pen.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), fill=fill)
    elif shape == "square":
        s = rad * 0.89  # the area of the circle: size says age, not shape
        pen.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape == "triangle":
        s = rad * 1.35
        pen.polygon([(cx, cy - s), (cx - s * 0.87, cy + s / 2), (cx + s * 0.87, cy + s / 2)], fill=fill)
    elif shape == "cross":
        w = rad * 0.45
        pen.rectangle((cx - rad, cy - w, cx + rad, cy + w), fill=fill)
        pen.rectangle((cx - w, cy - rad, cx + w, cy + rad), fill=fill)
    else:  # ring
        pen.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), outline=fill, width=max(2, round(rad * 0.45)))


def render(r: np.random.Generator, size: tuple[int, int]) -> tuple[Image.Image, int, int, int]:
    """One image and its (age, gender, race)."""
    w, h = size
    age_true = _age(r)
    gender = int(r.random() < 0.5)
    race = int(r.choice(len(SHAPES), p=RACE_SHARE))
    grey = r.uniform(60, 190)
    base = np.full((h, w, 3), grey, np.float32) + r.normal(0, 6, 3)  # a slight colour cast
    base += r.normal(0, 10, (h, w, 1))  # luminance noise: colour alone must still tell the figure apart
    image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    rad = min(w, h) * (0.06 + 0.4 * age_true / 90)
    cx = r.uniform(rad + 1, w - rad - 1)
    cy = r.uniform(rad + 1, h - rad - 1)
    _figure(ImageDraw.Draw(image), SHAPES[race], cx, cy, rad, _colour(r, warm=gender == 1))
    age = int(np.clip(round(age_true + r.normal(0, 2)), 1, 100))
    return image, age, gender, race


def write_attribute_set(out_dir: Path, spec: AttributeSpec = AttributeSpec()) -> AttributeSet:
    """out_dir/images/AGE_GENDER_RACE_SPLITINDEX.jpg (UTKFace's naming), out_dir/train.csv and out_dir/val.csv
    (columns image, age, gender, race; the image cell relative to the CSV's folder)."""
    root = Path(out_dir)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    paths = {}
    for k, (split, n) in enumerate((("train", spec.train_images), ("val", spec.val_images))):
        r = np.random.default_rng([spec.seed, k])  # the val set does not change with the train size
        rows = []
        for i in range(n):
            image, age, gender, race = render(r, spec.image_size)
            name = f"{age}_{gender}_{race}_{split}{i:05d}.jpg"
            image.save(images / name, quality=92)
            rows.append((f"images/{name}", age, gender, race))  # relative to the CSV's folder, the default
        paths[split] = root / f"{split}.csv"
        with paths[split].open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(HEADER)
            writer.writerows(rows)
    return AttributeSet(root, images, paths["train"], paths["val"])

"""A small, deterministic synthetic world with hydradet's core problem: partially labelled sources.

Two training sources each label only one kind (persons / animals) while their images show both kinds,
plus a fully labelled validation set. Objects are articulated silhouettes whose colours come from the same
distribution as the background and the clutter, so only shape identifies a class.
"""

from __future__ import annotations

import colorsys
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFilter

from hydradet.synth.shapes import draw_shape, ellipse, rasterize

Box = tuple[int, int, int, int]  # x0, y0, x1, y1
Arr = np.ndarray
Rng = np.random.Generator
_STREAMS = {"persons": 1, "animals": 2, "val": 3}
_PLANS = ("dog", "bird", "giraffe", "fish")


@dataclass(frozen=True)
class SynthSpec:
    train_images_per_source: int = 400
    val_images: int = 120
    image_size: tuple[int, int] = (320, 256)  # max (width, height); each image is 75-100% of it per side
    animal_classes: tuple[str, ...] = ("dog", "bird", "giraffe")  # 3-4 names; known names keep their plan
    objects_per_image: tuple[int, int] = (1, 5)
    clutter_per_image: tuple[int, int] = (2, 6)
    max_occlusion: float = 0.3
    seed: int = 0


@dataclass(frozen=True)
class SynthWorld:
    root: Path
    persons_json: Path
    animals_yaml: Path
    val_json: Path
    config_yaml: Path


@dataclass(frozen=True)
class SynthObject:
    kind: str  # "person" or "animal"
    name: str  # class name within its kind
    bbox: tuple[float, float, float, float]  # x, y, w, h in pixels: tight box of the full silhouette
    visible: float  # fraction of the silhouette not covered by later objects or clutter


@dataclass(frozen=True)
class Scene:
    image: Image.Image  # final RGB image, as written (before JPEG)
    objects: list[SynthObject]
    masks: list[np.ndarray]  # per object: HxW bool, its full silhouette (in-image part)
    owner: np.ndarray  # HxW int32: index of the object seen at a pixel, -1 background, -2 clutter


# ---------------------------------------------------------------- colours and backgrounds
def _colour(r: Rng) -> np.ndarray:
    # The one distribution for objects, clutter and backgrounds, so colour says nothing about class.
    rgb = colorsys.hsv_to_rgb(r.random(), r.uniform(0.05, 1.0), r.uniform(0.15, 1.0))
    return np.array(rgb, np.float32) * 255


def _contrasting(r: Rng, seen: np.ndarray) -> np.ndarray:
    # The same rule for every foreground thing: it must stand out from most of what lies behind it.
    for _ in range(12):
        c = _colour(r)
        if seen.size == 0 or np.mean(np.abs(seen - c).sum(-1) > 110) > 0.8:
            break
    return c


def _background(r: Rng, w: int, h: int) -> np.ndarray:
    th, period = r.uniform(0, np.pi), r.uniform(5, 40)
    xs, ys = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)[:, None]

    def rot(a: float) -> np.ndarray:  # coordinate along direction a
        return xs * np.float32(math.cos(a)) + ys * np.float32(math.sin(a))

    def noise(cells: int) -> np.ndarray:
        g = Image.fromarray(r.random((cells, cells)).astype(np.float32), "F")
        return np.asarray(g.resize((w, h), Image.BICUBIC)).clip(0, 1)

    def stripes() -> np.ndarray:
        s = np.sin(rot(th) * np.float32(2 * np.pi / period))
        return (s > 0).astype(np.float32) if r.random() < 0.5 else 0.5 + 0.5 * s

    def checker() -> np.ndarray:
        return ((np.floor(rot(th) / period) + np.floor(rot(th + np.pi / 2) / period)) % 2).astype(np.float32)

    def gradient() -> np.ndarray:
        g = rot(th)
        return (g - g.min()) / max(float(np.ptp(g)), 1.0)

    def value_noise() -> np.ndarray:
        return 0.6 * noise(int(r.integers(2, 6))) + 0.4 * noise(int(r.integers(8, 24)))

    pats = [value_noise, stripes, checker, gradient]
    t = pats[int(r.integers(4))]()
    if r.random() < 0.6:
        t = 0.5 * t + 0.5 * pats[int(r.integers(4))]()
    # Colour through a palette and a masked composite: numpy broadcasting over RGB is several times slower.
    c0 = _colour(r)
    ramp = c0 + np.linspace(0, 1, 256, dtype=np.float32)[:, None] * ((_colour(r) - c0) * r.uniform(0.3, 1))
    pil = Image.fromarray((t.clip(0, 1) * 255).astype(np.uint8), "L")
    pil.putpalette(ramp.clip(0, 255).astype(np.uint8).tobytes())
    pil = pil.convert("RGB")
    if r.random() < 0.5:
        m = (noise(int(r.integers(3, 10))) * (255 * r.uniform(0.3, 0.8))).astype(np.uint8)
        pil = Image.composite(Image.new("RGB", (w, h), _rgb(_colour(r))), pil, Image.fromarray(m, "L"))
    d = ImageDraw.Draw(pil)
    for _ in range(r.integers(0, 7)):  # blotches
        cx, cy, rx, ry = r.uniform(0, w), r.uniform(0, h), r.uniform(5, w / 4), r.uniform(5, h / 4)
        pts = ellipse(cx, cy, rx, ry, r.uniform(0, 3), 24) + r.normal(0, min(rx, ry) / 6, (24, 2))
        d.polygon([tuple(q) for q in pts], fill=_rgb(_colour(r)))
    if r.random() < 0.4:
        pil = pil.filter(ImageFilter.BoxBlur(int(r.integers(1, 3))))
    return np.asarray(pil).astype(np.float32)


def _rgb(c: np.ndarray) -> tuple[int, int, int]:
    return int(c[0]), int(c[1]), int(c[2])


# ---------------------------------------------------------------- scenes
def _plans(spec: SynthSpec) -> dict[str, str]:
    # Known names keep their body plan; other names take the unused plans in order.
    free = [p for p in _PLANS if p not in spec.animal_classes]
    return {c: c if c in _PLANS else free.pop(0) for c in spec.animal_classes}


def _tight(m: np.ndarray, dx: int = 0, dy: int = 0) -> Box:
    ys, xs = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
    return int(xs[0]) + dx, int(ys[0]) + dy, int(xs[-1]) + 1 + dx, int(ys[-1]) + 1 + dy


def _xywh(b: Box) -> tuple[float, float, float, float]:
    return float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])


def _too_close(a: Box, b: Box, max_occ: float) -> bool:
    iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw > 0 and ih > 0 and iw * ih > max_occ * small


def _free_spot(r: Rng, sil: Arr, owner: Arr, boxes: list[Box] | None, room: Arr, occ: float) -> Box | None:
    """Where `sil` may go (x, y, x1, y1 of its canvas), or None. Objects (`boxes` given) stay 75% inside the
    image with boxes overlapping at most `occ`; nothing may hide more than `room` of an earlier object."""
    (mh, mw), (h, w) = sil.shape, owner.shape
    for _ in range(30):
        x = int(r.integers(-mw // 5, w - mw + mw // 5 + 1))
        y = int(r.integers(-mh // 5, h - mh + mh // 5 + 1))
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + mw, w), min(y + mh, h)
        if x1 - x0 < 3 or y1 - y0 < 3:
            continue
        sub = sil[y0 - y : y1 - y, x0 - x : x1 - x]
        if boxes is not None and sub.sum() < 0.75 * sil.sum():
            continue
        if boxes is not None and any(_too_close(_tight(sub, x0, y0), b, occ) for b in boxes):
            continue
        ids = owner[y0:y1, x0:x1][sub]
        if np.any(np.bincount(ids[ids >= 0], minlength=len(room)) > room):
            continue
        return x, y, x + mw, y + mh
    return None


def render_scene(spec: SynthSpec, split: str, index: int) -> Scene:
    """Image `index` of `split` ("persons", "animals" or "val") with its full ground truth; deterministic."""
    r = np.random.default_rng([spec.seed, _STREAMS[split], index])
    w, h = (round(s * r.uniform(0.75, 1.0)) for s in spec.image_size)
    canvas, owner = _background(r, w, h), np.full((h, w), -1, np.int32)
    # With 2+ objects both kinds appear, so most train images hold objects their source does not label.
    n = int(r.integers(spec.objects_per_image[0], spec.objects_per_image[1] + 1))
    is_person = r.random(n) < 0.5
    if n >= 2 and (is_person.all() or not is_person.any()):
        is_person[int(r.integers(n))] ^= True
    plans = _plans(spec)
    names = ["person" if p else spec.animal_classes[int(r.integers(len(plans)))] for p in is_person]
    items = names + [""] * int(r.integers(spec.clutter_per_image[0], spec.clutter_per_image[1] + 1))
    boxes: list[Box] = []
    found: list[str] = []
    masks: list[np.ndarray] = []
    room, areas = np.zeros(0), np.zeros(0)  # per object: pixels that may still be covered; silhouette size
    for i in r.permutation(len(items)):
        name = items[i]
        ps = draw_shape(r, plans.get(name, "person") if name else "")
        # Uniform in sqrt(size): small things occur, but most are big enough to show their shape.
        size = r.uniform(math.sqrt(16 if name else 8), math.sqrt(0.6 * min(w, h))) ** 2
        for _ in range(3):
            parts = rasterize(ps, size, outline=r.random() < 0.35)
            spot = _free_spot(r, parts > 0, owner, boxes if name else None, room, spec.max_occlusion)
            if spot is not None:
                break
            size *= 0.7
        if spot is None:
            continue
        x, y, x1, y1 = spot
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x1, w), min(y1, h)
        sub = parts[y0 - y : y1 - y, x0 - x : x1 - x]
        sil = sub > 0
        seen = canvas[y0:y1:3, x0:x1:3][sil[::3, ::3]]
        lut = np.zeros((5, 3), np.float32)
        lut[1:4] = [_contrasting(r, seen) for _ in range(3)]
        if r.random() < 0.4:  # two colours instead of three
            lut[3] = lut[2]
        lut[4] = lut[1] * r.uniform(0.2, 0.5)
        canvas[y0:y1, x0:x1][sil] = lut[sub[sil]]
        ids = owner[y0:y1, x0:x1][sil]
        room -= np.bincount(ids[ids >= 0], minlength=len(room))
        owner[y0:y1, x0:x1][sil] = len(found) if name else -2
        if name:
            boxes.append(_tight(sil, x0, y0))
            found.append(name)
            masks.append(np.zeros((h, w), bool))
            masks[-1][y0:y1, x0:x1] = sil
            areas, room = np.append(areas, sil.sum()), np.append(room, spec.max_occlusion * sil.sum())
    if r.random() < 0.5:  # mild 3x3 blur; PIL's GaussianBlur costs twice as much
        k = ImageFilter.Kernel((3, 3), [1, 2, 1, 2, float(r.uniform(4, 16)), 2, 1, 2, 1])
        canvas = np.asarray(Image.fromarray(canvas.astype(np.uint8)).filter(k)).astype(np.float32)
    # Uniform sensor noise: as good as Gaussian here and several times cheaper to draw.
    canvas += (r.random(canvas.shape, np.float32) - 0.5) * np.float32(r.uniform(3.5, 24.0))
    vis = np.bincount(owner[owner >= 0], minlength=len(found)) / np.maximum(areas, 1)
    objects = [
        SynthObject("animal" if nm in plans else "person", nm, _xywh(b), round(float(v), 4))
        for nm, b, v in zip(found, boxes, vis, strict=True)
    ]
    return Scene(Image.fromarray(canvas.clip(0, 255).astype(np.uint8)), objects, masks, owner)


# ---------------------------------------------------------------- writing
def _flow(obj: object) -> str:
    return yaml.safe_dump(obj, default_flow_style=True, sort_keys=False, width=10**6).strip()


def _clear_stale(folder: Path, ext: str) -> None:
    # A rerun with fewer images must not leave old ones behind for a folder-globbing loader to find.
    for p in sorted(folder.glob(f"[0-9][0-9][0-9][0-9][0-9][0-9].{ext}")):
        p.unlink()


def _write_split(root: Path, spec: SynthSpec, split: str, n: int) -> list[dict]:
    """Writes one split's images and labels; returns per-image truth (every object, labelled or not)."""
    animals = list(spec.animal_classes)
    cats = ["person"] if split == "persons" else ["person", *animals]
    sub = "images/train" if split == "animals" else "images"
    lbl_dir = root / "animals" / "labels" / "train"
    for d, ext in [(root / split / sub, "jpg")] + ([(lbl_dir, "txt")] if split == "animals" else []):
        d.mkdir(parents=True, exist_ok=True)
        _clear_stale(d, ext)
    images, anns, truth = [], [], []
    for i in range(n):
        scene = render_scene(spec, split, i)
        w, h = scene.image.size
        rel = f"{sub}/{i:06d}.jpg"
        scene.image.save(root / split / rel, "JPEG", quality=90)
        images.append({"id": i + 1, "file_name": rel, "width": w, "height": h})
        truth.append({"file_name": rel, "width": w, "height": h, "objects": [asdict(o) for o in scene.objects]})
        lines = []
        for o in scene.objects:
            x, y, bw, bh = o.bbox
            if split == "animals" and o.kind == "animal":
                c = animals.index(o.name)
                lines.append(f"{c} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}\n")
            elif split != "animals" and o.name in cats:
                ann = dict(image_id=i + 1, category_id=cats.index(o.name) + 1, bbox=list(o.bbox), area=bw * bh)
                anns.append({"id": len(anns) + 1, **ann, "iscrowd": 0})
        if split == "animals":
            (lbl_dir / f"{i:06d}.txt").write_text("".join(lines))
    if split != "animals":
        categories = [{"id": k + 1, "name": c} for k, c in enumerate(cats)]
        coco = {"images": images, "annotations": anns, "categories": categories}
        (root / split / "annotations.json").write_text(json.dumps(coco))
    return truth


def write_synthetic_world(out_dir: Path, spec: SynthSpec = SynthSpec()) -> SynthWorld:
    """Writes the persons (COCO), animals (YOLO) and val (COCO, fully labelled) sources and a config.

    Same spec, same bytes. persons/.truth.json and animals/.truth.json hold every object of each image,
    including the ones the source does not label.
    """
    names = spec.animal_classes
    if not 3 <= len(names) <= len(_PLANS) or len(set(names)) != len(names) or "person" in names:
        raise ValueError(f"animal_classes must be 3..{len(_PLANS)} distinct names, not 'person': {names}")
    root = Path(out_dir)
    for split in ("persons", "animals"):
        truth = _write_split(root, spec, split, spec.train_images_per_source)
        (root / split / ".truth.json").write_text(json.dumps({"images": truth}))
    _write_split(root, spec, "val", spec.val_images)
    data = {"path": ".", "train": "images/train", "names": dict(enumerate(names))}
    (root / "animals" / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    person, animal = {"person": {"person": "person"}}, {"animal": {c: c for c in names}}
    cfg = {
        "heads": {
            "person": {"task": "detect", "classes": ["person"]},
            "animal": {"task": "detect", "classes": list(names)},
        },
        "sources": {
            "persons": {"format": "coco", "train": "persons/annotations.json", "labels": person},
            "animals": {"format": "yolo", "train": "animals/data.yaml", "labels": animal},
            "synth_val": {"format": "coco", "val": "val/annotations.json", "labels": {**person, **animal}},
        },
    }
    lines = ["# generated by `hydradet synth`; paths are relative to this file's folder"]
    for top, entries in cfg.items():
        lines += [f"{top}:"] + [f"  {k}: {_flow(v)}" for k, v in entries.items()]
    (root / "hydradet.yaml").write_text("\n".join(lines) + "\n")
    files = ("persons/annotations.json", "animals/data.yaml", "val/annotations.json", "hydradet.yaml")
    return SynthWorld(root, *(root / f for f in files))

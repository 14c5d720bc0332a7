"""A small, deterministic synthetic world with hydradet's core problem: partially labelled sources.

Two training sources each label only one kind (persons / animals) while their images show both kinds,
plus a fully labelled validation set. Objects are articulated silhouettes whose colours come from the same
distribution as the background and the clutter, so only shape identifies a class.
"""

from __future__ import annotations

import colorsys
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFilter

# ("poly", points, part) or ("line", points, width, part); part 1..3 picks a colour slot, and a negative
# part marks a patch that only recolours the silhouette beneath it.
Prim = tuple
Box = tuple[int, int, int, int]  # x0, y0, x1, y1
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


# ---------------------------------------------------------------- body plans (unit-sized, y down)
def _pts(*xy: float) -> np.ndarray:
    return np.array(xy, float).reshape(-1, 2)


def _ell(cx: float, cy: float, rx: float, ry: float, ang: float = 0.0, n: int = 20) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(ang), math.sin(ang)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def _limb(start: tuple[float, float], angles: list[float], lengths: list[float]) -> np.ndarray:
    # Angles are measured from straight down, positive towards +x, so 0 is a hanging limb.
    pts = [np.asarray(start, float)]
    for a, ln in zip(angles, lengths, strict=True):
        pts.append(pts[-1] + ln * np.array([math.sin(a), math.cos(a)]))
    return np.stack(pts)


def _person(r: np.random.Generator) -> list[Prim]:
    u = r.uniform
    hr, sw, hw = u(0.06, 0.08), u(0.1, 0.14), u(0.065, 0.09)
    ysh, yhip = 2 * hr + u(0.03, 0.05), u(0.5, 0.56)
    shirt, trousers = int(r.choice([1, 2, 2])), int(r.choice([1, 2, 3, 3]))
    ps: list[Prim] = [("poly", _ell(0, hr, hr * 0.85, hr), 1), ("line", _pts(0, hr, 0, ysh), 0.05, 1)]
    ps.append(("poly", _pts(-sw, ysh, sw, ysh, hw, yhip, -hw, yhip), shirt))
    ps.append(("poly", _pts(-hw, yhip - 0.05, hw, yhip - 0.05, hw, yhip + 0.05, -hw, yhip + 0.05), trousers))
    gait, leg = r.integers(3), (1.0 - yhip - 0.03) / 2
    for side in (-1, 1):
        a = side * (u(0.05, 0.5) if r.random() < 0.7 else u(0.5, 2.6))  # mostly hanging, sometimes raised
        ps.append(
            ("line", _limb((side * sw * 0.9, ysh + 0.02), [a, a + side * u(-0.3, 1)], [0.16, 0.15]), 0.05, 1)
        )
        a = side * u(0.0, 0.12) if gait == 0 else side * u(0.15, 0.4) if gait == 1 else -side * u(0.2, 0.45)
        ankle = _limb((side * hw * 0.55, yhip), [a, a + u(-0.05, 0.3)], [leg, leg])
        ps += [
            ("line", ankle, 0.065, trousers),
            ("line", np.stack([ankle[-1], ankle[-1] + [0.06, 0]]), 0.04, 1),
        ]
    return ps


def _legs(
    r: np.random.Generator, xs: tuple[float, ...], y0: float, ln: float, w: float, swing: float, part: int
) -> list[Prim]:
    out: list[Prim] = []
    for x in xs:
        a = r.uniform(-swing, swing)
        out.append(("line", _limb((x, y0), [a, a + r.uniform(-0.4, 0.4)], [ln, ln]), w, part))
    return out


def _dog(r: np.random.Generator) -> list[Prim]:
    u = r.uniform
    bl, bh, legp = u(0.34, 0.44), u(0.12, 0.16), int(r.choice([1, 2]))
    hx, hy = bl + u(0.05, 0.12), -bh - u(0.06, 0.18)
    ps: list[Prim] = [("poly", _ell(0, 0, bl, bh), 1)]
    ps += _legs(r, (bl * 0.75, bl * 0.55, -bl * 0.6, -bl * 0.8), bh * 0.5, u(0.13, 0.17), 0.07, 0.45, legp)
    ps.append(("line", _pts(bl * 0.7, -bh * 0.3, hx, hy), 0.12, 1))
    ps.append(("poly", _ell(hx, hy, 0.1, 0.085), 1))
    ps.append(("poly", _ell(hx + 0.11, hy + 0.03, u(0.07, 0.1), 0.045, u(-0.1, 0.3)), 1))  # snout
    if r.random() < 0.5:  # pointed ear, else a floppy one
        ps.append(("poly", _pts(hx - 0.07, hy - 0.05, hx - 0.01, hy - 0.06, hx - 0.05, hy - u(0.15, 0.2)), 2))
    else:
        ps.append(("poly", _ell(hx - 0.06, hy + 0.03, 0.035, 0.08, 0.3), 2))
    ps.append(
        ("line", _limb((-bl * 0.95, -bh * 0.3), [-u(1.8, 2.6), -u(1.4, 2.9)], [0.13, 0.11]), 0.04, legp)
    )
    for _ in range(r.integers(0, 4)):
        ps.append(("poly", _ell(u(-bl, bl), u(-bh, bh), u(0.05, 0.12), u(0.04, 0.08), u(0, 3)), -3))
    return ps


def _bird(r: np.random.Generator) -> list[Prim]:
    u = r.uniform
    rb = u(0.2, 0.26)
    bx, hr, hx, hy, ty = rb * u(1.1, 1.35), u(0.1, 0.13), rb, -rb * 0.85, u(-0.12, 0.08)
    ps: list[Prim] = [("poly", _ell(0, 0, bx, rb, u(-0.35, 0.1)), 1), ("poly", _ell(hx, hy, hr, hr), 1)]
    beak = _pts(
        hx + hr * 0.7, hy - 0.03, hx + hr * 0.7, hy + 0.035, hx + hr + u(0.08, 0.14), hy + u(-0.01, 0.03)
    )
    tail = _pts(-bx * 0.7, -0.04, -bx - u(0.15, 0.25), ty - 0.07, -bx - 0.2, ty + 0.06, -bx * 0.7, 0.06)
    ps += [("poly", beak, 2), ("poly", tail, 2)]
    if r.random() < 0.5:  # wings spread, legs tucked in flight
        for tx in (-u(0.2, 0.45), u(0.0, 0.25)):
            tyy = -u(0.6, 0.85)
            ps.append(
                ("poly", _pts(0.08, -rb * 0.4, tx, tyy, tx * 0.5 - 0.12, tyy * 0.55, -0.14, -rb * 0.3), 2)
            )
    else:
        ps.append(("poly", _ell(-0.05, 0.0, bx * 0.8, rb * 0.5, -0.2), -2))  # folded wing
        for x in (-0.04, 0.06):
            leg = _limb((x, rb * 0.85), [u(-0.2, 0.2)], [u(0.16, 0.22)])
            ps.append(("line", np.vstack([leg, leg[-1] + [0.06, 0]]), 0.022, 2))
    return ps


def _giraffe(r: np.random.Generator) -> list[Prim]:
    u = r.uniform
    bl, bh, lean, nl = u(0.22, 0.27), u(0.1, 0.13), u(0.15, 0.55), u(0.55, 0.75)
    ps: list[Prim] = [("poly", _ell(0, 0, bl, bh, -0.1), 1)]
    ps += _legs(r, (bl * 0.75, bl * 0.5, -bl * 0.55, -bl * 0.8), bh * 0.5, u(0.26, 0.32), 0.04, 0.22, 1)
    bx, by = bl * 0.6, -bh * 0.4
    tx, ty = bx + nl * math.sin(lean), by - nl * math.cos(lean)
    c, s = math.cos(lean), math.sin(lean)
    neck = _pts(
        bx - 0.07 * c,
        by - 0.07 * s,
        bx + 0.07 * c,
        by + 0.07 * s,
        tx + 0.03 * c,
        ty + 0.03 * s,
        tx - 0.03 * c,
        ty - 0.03 * s,
    )
    ps += [("poly", neck, 1), ("poly", _ell(tx + 0.06, ty + 0.015, 0.09, 0.042, u(0.1, 0.6)), 1)]
    ps += [("line", _pts(tx + dx, ty, tx + dx - 0.01, ty - 0.06), 0.018, 2) for dx in (-0.02, 0.015)]
    ps.append(("line", _pts(-bl * 0.95, -bh * 0.2, -bl - 0.06, bh + u(0.1, 0.18)), 0.02, 1))
    if r.random() < 0.75:
        for _ in range(r.integers(12, 26)):
            t = r.random()
            cx, cy = (
                (u(-bl, bl), u(-bh, bh)) if r.random() < 0.5 else (bx + t * (tx - bx), by + t * (ty - by))
            )
            ps.append(("poly", _ell(cx, cy, u(0.02, 0.04), u(0.02, 0.04), u(0, 3), 7), -3))
    return ps


def _fish(r: np.random.Generator) -> list[Prim]:
    u = r.uniform
    bl, bh = u(0.35, 0.42), u(0.13, 0.22)
    tail = _pts(-bl * 0.85, 0, -bl - u(0.15, 0.22), -u(0.12, 0.2), -bl - 0.1, 0, -bl - 0.18, u(0.12, 0.2))
    fin = _pts(-0.15, -bh * 0.8, 0.05, -bh * 0.9, -0.12, -bh - u(0.08, 0.15))
    return [
        ("poly", _ell(0, 0, bl, bh), 1),
        ("poly", tail, 2),
        ("poly", fin, 2),
        ("poly", _ell(bl * 0.6, -bh * 0.2, 0.03, 0.03), -3),
    ]


def _clutter(r: np.random.Generator) -> list[Prim]:
    u, k, p2 = r.uniform, int(r.integers(8)), int(r.choice([1, 2]))
    if k <= 1:  # irregular polygon or star
        n = int(r.integers(3, 9)) * (1 + k)
        ang = np.sort(u(0, 2 * np.pi, n)) if k == 0 else np.linspace(0, 2 * np.pi, n, endpoint=False)
        rad = u(0.5, 1.0, n) if k == 0 else np.where(np.arange(n) % 2 == 0, 1.0, u(0.3, 0.6))
        return [("poly", np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1), 1)]
    if k == 2:
        return [("poly", _ell(0, 0, 1, u(0.2, 1.0), u(0, 3)), 1), ("poly", _ell(0, 0, 0.4, 0.3), -p2)]
    if k == 3:  # bar, or two crossing bars
        ps: list[Prim] = [("line", _pts(-1, 0, 1, 0), u(0.1, 0.4), 1)]
        if r.random() < 0.5:
            ps.append(("line", _pts(u(-1, 1), -u(0.3, 1), u(-0.3, 0.3), u(0.3, 1)), u(0.1, 0.3), p2))
        return ps
    if k == 4:  # scribble
        return [("line", np.cumsum(u(-1, 1, (int(r.integers(3, 6)), 2)), 0), u(0.04, 0.12), 1)]
    if k == 5:  # blob of circles
        return [
            ("poly", _ell(u(-0.5, 0.5), u(-0.5, 0.5), rr, rr), p2) for rr in u(0.2, 0.5, r.integers(3, 7))
        ]
    if k == 6:  # a lone circle on a bar: head-and-torso-like, but no limbs
        return [("line", _pts(0, 0.2, u(-0.3, 0.3), 1), u(0.12, 0.3), 1), ("poly", _ell(0, 0, 0.2, 0.2), p2)]
    spikes = [
        ("line", _pts(0, 0, math.cos(a) * 1.3, math.sin(a) * 1.3), 0.06, p2)
        for a in u(0, 6.3, r.integers(1, 4))
    ]
    return [("poly", _ell(0, 0, 1, u(0.15, 0.4)), 1), *spikes]


_DRAW = {"person": _person, "dog": _dog, "bird": _bird, "giraffe": _giraffe, "fish": _fish}


def _shape(r: np.random.Generator, plan: str) -> list[Prim]:
    ps = _DRAW.get(plan, _clutter)(r)
    # Mirrored at random and slightly tilted; clutter lies at any angle.
    tilt = {"person": 0.08, "bird": 0.3}.get(plan, 0.12 if plan in _DRAW else math.pi)
    a, sx = r.uniform(-tilt, tilt), (-1.0 if r.random() < 0.5 else 1.0)
    rot = np.array([[math.cos(a) * sx, -math.sin(a)], [math.sin(a) * sx, math.cos(a)]])
    return [(p[0], p[1] @ rot.T, *p[2:]) for p in ps]


def _rasterize(ps: list[Prim], size: float, outline: bool) -> np.ndarray:
    """Part map (uint8: 0 empty, 1..3 colour slots, 4 outline) whose longer side is about `size` pixels."""
    pad = [p[2] / 2 if p[0] == "line" else 0.0 for p in ps]
    lo = np.min([p[1].min(0) - d for p, d in zip(ps, pad, strict=True) if p[-1] > 0], 0)
    hi = np.max([p[1].max(0) + d for p, d in zip(ps, pad, strict=True) if p[-1] > 0], 0)
    s = size / max(hi - lo)
    w, h = (np.ceil((hi - lo) * s) + 4).astype(int)
    base, over = Image.new("L", (w, h)), Image.new("L", (w, h))
    for p in ps:
        d = ImageDraw.Draw(base if p[-1] > 0 else over)
        pts = [tuple(q) for q in (p[1] - lo) * s + 2]
        if p[0] == "poly":
            d.polygon(pts, fill=abs(p[-1]))
            continue
        lw = max(1, round(p[2] * s))
        d.line(pts, fill=abs(p[-1]), width=lw, joint="curve")
        for q in (pts[0], pts[-1]):  # round caps, so limbs do not end in square stumps
            d.ellipse([q[0] - lw / 2, q[1] - lw / 2, q[0] + lw / 2, q[1] + lw / 2], fill=abs(p[-1]))
    parts, patch = np.asarray(base).copy(), np.asarray(over)
    on = (parts > 0) & (patch > 0)
    parts[on] = patch[on]
    if outline:
        grown = Image.fromarray((parts > 0).astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(3))
        parts[(np.asarray(grown) > 0) & (parts == 0)] = 4
    return parts


# ---------------------------------------------------------------- colours and backgrounds
def _colour(r: np.random.Generator) -> np.ndarray:
    # The one distribution for objects, clutter and backgrounds, so colour says nothing about class.
    rgb = colorsys.hsv_to_rgb(r.random(), r.uniform(0.05, 1.0), r.uniform(0.15, 1.0))
    return np.array(rgb, np.float32) * 255


def _contrasting(r: np.random.Generator, seen: np.ndarray) -> np.ndarray:
    # The same rule for every foreground thing: it must stand out from most of what lies behind it.
    for _ in range(12):
        c = _colour(r)
        if seen.size == 0 or np.mean(np.abs(seen - c).sum(-1) > 110) > 0.8:
            break
    return c


def _background(r: np.random.Generator, w: int, h: int) -> np.ndarray:
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
        pts = _ell(cx, cy, rx, ry, r.uniform(0, 3), 24) + r.normal(0, min(rx, ry) / 6, (24, 2))
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


def _too_close(a: Box, b: Box, max_occ: float) -> bool:
    iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw > 0 and ih > 0 and iw * ih > max_occ * small


def _free_spot(
    r: np.random.Generator,
    sil: np.ndarray,
    owner: np.ndarray,
    boxes: list[Box] | None,
    room: np.ndarray,
    max_occ: float,
) -> tuple[int, int] | None:
    """Top-left corner for `sil` (objects: `boxes` given) keeping every object visible enough, or None."""
    (mh, mw), (h, w) = sil.shape, owner.shape
    for _ in range(30):
        x, y = (
            int(r.integers(-mw // 5, w - mw + mw // 5 + 1)),
            int(r.integers(-mh // 5, h - mh + mh // 5 + 1)),
        )
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + mw, w), min(y + mh, h)
        if x1 - x0 < 3 or y1 - y0 < 3:
            continue
        sub = sil[y0 - y : y1 - y, x0 - x : x1 - x]
        if boxes is not None:  # objects: mostly inside the image, boxes overlapping at most max_occ
            if sub.sum() < 0.75 * sil.sum() or any(
                _too_close(_tight(sub, x0, y0), b, max_occ) for b in boxes
            ):
                continue
        ids = owner[y0:y1, x0:x1][sub]
        ids = ids[ids >= 0]
        if ids.size and np.any(np.bincount(ids, minlength=len(room)) > room):
            continue  # would hide too much of an earlier object
        return x, y
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
        ps = _shape(r, plans.get(name, "person") if name else "")
        # Uniform in sqrt(size): small things occur, but most are big enough to show their shape.
        size = r.uniform(math.sqrt(16 if name else 8), math.sqrt(0.6 * min(w, h))) ** 2
        for _ in range(3):
            parts = _rasterize(ps, size, outline=r.random() < 0.35)
            spot = _free_spot(r, parts > 0, owner, boxes if name else None, room, spec.max_occlusion)
            if spot is not None:
                break
            size *= 0.7
        if spot is None:
            continue
        x, y = spot
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + parts.shape[1], w), min(y + parts.shape[0], h)
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
        SynthObject(
            "person" if nm == "person" else "animal", nm, (b[0], b[1], b[2] - b[0], b[3] - b[1]), float(v)
        )
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
        objs = [
            {
                "kind": o.kind,
                "name": o.name,
                "bbox": [float(v) for v in o.bbox],
                "visible": round(o.visible, 4),
            }
            for o in scene.objects
        ]
        truth.append({"file_name": rel, "width": w, "height": h, "objects": objs})
        if split == "animals":
            lines = []
            for o in objs:
                if o["kind"] == "animal":
                    x, y, bw, bh = o["bbox"]
                    c = animals.index(o["name"])
                    lines.append(
                        f"{c} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}\n"
                    )
            (lbl_dir / f"{i:06d}.txt").write_text("".join(lines))
            continue
        for o in objs:
            if o["name"] in cats:
                bw, bh = o["bbox"][2], o["bbox"][3]
                cid = cats.index(o["name"]) + 1
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": i + 1,
                        "category_id": cid,
                        "bbox": o["bbox"],
                        "area": bw * bh,
                        "iscrowd": 0,
                    }
                )
    if split != "animals":
        coco = {
            "images": images,
            "annotations": anns,
            "categories": [{"id": k + 1, "name": c} for k, c in enumerate(cats)],
        }
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
    return SynthWorld(
        root,
        root / "persons/annotations.json",
        root / "animals/data.yaml",
        root / "val/annotations.json",
        root / "hydradet.yaml",
    )

"""The synthetic world's shapes: articulated body plans (person, dog, bird, giraffe, fish) and clutter,
drawn as primitives and rasterised to part maps. Used by world.py; numpy + PIL only."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# ("poly", points, part) or ("line", points, width, part); part 1..3 picks a colour slot, and a negative
# part marks a patch that only recolours the silhouette beneath it.
Prim = tuple
Rng = np.random.Generator


# ---------------------------------------------------------------- body plans (unit-sized, y down)
def _pts(*xy: float) -> np.ndarray:
    return np.array(xy, float).reshape(-1, 2)


def ellipse(cx: float, cy: float, rx: float, ry: float, ang: float = 0.0, n: int = 20) -> np.ndarray:
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


def _person(r: Rng) -> list[Prim]:
    u = r.uniform
    hr, sw, hw = u(0.06, 0.08), u(0.1, 0.14), u(0.065, 0.09)
    ysh, yhip = 2 * hr + u(0.03, 0.05), u(0.5, 0.56)
    shirt, trousers = int(r.choice([1, 2, 2])), int(r.choice([1, 2, 3, 3]))
    ps: list[Prim] = [("poly", ellipse(0, hr, hr * 0.85, hr), 1), ("line", _pts(0, hr, 0, ysh), 0.05, 1)]
    ps.append(("poly", _pts(-sw, ysh, sw, ysh, hw, yhip, -hw, yhip), shirt))
    ps.append(("poly", _pts(-hw, yhip - 0.05, hw, yhip - 0.05, hw, yhip + 0.05, -hw, yhip + 0.05), trousers))
    gait, leg = r.integers(3), (1.0 - yhip - 0.03) / 2
    for side in (-1, 1):
        a = side * (u(0.05, 0.5) if r.random() < 0.7 else u(0.5, 2.6))  # mostly hanging, sometimes raised
        ps.append(("line", _limb((side * sw * 0.9, ysh + 0.02), [a, a + side * u(-0.3, 1)], [0.16, 0.15]), 0.05, 1))
        a = side * u(0.0, 0.12) if gait == 0 else side * u(0.15, 0.4) if gait == 1 else -side * u(0.2, 0.45)
        ankle = _limb((side * hw * 0.55, yhip), [a, a + u(-0.05, 0.3)], [leg, leg])
        ps += [
            ("line", ankle, 0.065, trousers),
            ("line", np.stack([ankle[-1], ankle[-1] + [0.06, 0]]), 0.04, 1),
        ]
    return ps


def _legs(r: Rng, xs: tuple, y0: float, ln: float, w: float, swing: float, part: int) -> list[Prim]:
    out: list[Prim] = []
    for x in xs:
        a = r.uniform(-swing, swing)
        out.append(("line", _limb((x, y0), [a, a + r.uniform(-0.4, 0.4)], [ln, ln]), w, part))
    return out


def _dog(r: Rng) -> list[Prim]:
    u = r.uniform
    bl, bh, legp = u(0.34, 0.44), u(0.12, 0.16), int(r.choice([1, 2]))
    hx, hy = bl + u(0.05, 0.12), -bh - u(0.06, 0.18)
    ps: list[Prim] = [("poly", ellipse(0, 0, bl, bh), 1)]
    ps += _legs(r, (bl * 0.75, bl * 0.55, -bl * 0.6, -bl * 0.8), bh * 0.5, u(0.13, 0.17), 0.07, 0.45, legp)
    ps.append(("line", _pts(bl * 0.7, -bh * 0.3, hx, hy), 0.12, 1))
    ps.append(("poly", ellipse(hx, hy, 0.1, 0.085), 1))
    ps.append(("poly", ellipse(hx + 0.11, hy + 0.03, u(0.07, 0.1), 0.045, u(-0.1, 0.3)), 1))  # snout
    if r.random() < 0.5:  # pointed ear, else a floppy one
        ps.append(("poly", _pts(hx - 0.07, hy - 0.05, hx - 0.01, hy - 0.06, hx - 0.05, hy - u(0.15, 0.2)), 2))
    else:
        ps.append(("poly", ellipse(hx - 0.06, hy + 0.03, 0.035, 0.08, 0.3), 2))
    ps.append(("line", _limb((-bl * 0.95, -bh * 0.3), [-u(1.8, 2.6), -u(1.4, 2.9)], [0.13, 0.11]), 0.04, legp))
    for _ in range(r.integers(0, 4)):
        ps.append(("poly", ellipse(u(-bl, bl), u(-bh, bh), u(0.05, 0.12), u(0.04, 0.08), u(0, 3)), -3))
    return ps


def _bird(r: Rng) -> list[Prim]:
    u = r.uniform
    rb = u(0.2, 0.26)
    bx, hr, hx, hy, ty = rb * u(1.1, 1.35), u(0.1, 0.13), rb, -rb * 0.85, u(-0.12, 0.08)
    ps: list[Prim] = [("poly", ellipse(0, 0, bx, rb, u(-0.35, 0.1)), 1), ("poly", ellipse(hx, hy, hr, hr), 1)]
    beak = _pts(hx + hr * 0.7, hy - 0.03, hx + hr * 0.7, hy + 0.035, hx + hr + u(0.08, 0.14), hy + u(-0.01, 0.03))
    tail = _pts(-bx * 0.7, -0.04, -bx - u(0.15, 0.25), ty - 0.07, -bx - 0.2, ty + 0.06, -bx * 0.7, 0.06)
    ps += [("poly", beak, 2), ("poly", tail, 2)]
    if r.random() < 0.5:  # wings spread, legs tucked in flight
        for tx in (-u(0.2, 0.45), u(0.0, 0.25)):
            tyy = -u(0.6, 0.85)
            ps.append(("poly", _pts(0.08, -rb * 0.4, tx, tyy, tx * 0.5 - 0.12, tyy * 0.55, -0.14, -rb * 0.3), 2))
    else:
        ps.append(("poly", ellipse(-0.05, 0.0, bx * 0.8, rb * 0.5, -0.2), -2))  # folded wing
        for x in (-0.04, 0.06):
            leg = _limb((x, rb * 0.85), [u(-0.2, 0.2)], [u(0.16, 0.22)])
            ps.append(("line", np.vstack([leg, leg[-1] + [0.06, 0]]), 0.022, 2))
    return ps


def _giraffe(r: Rng) -> list[Prim]:
    u = r.uniform
    bl, bh, lean, nl = u(0.22, 0.27), u(0.1, 0.13), u(0.15, 0.55), u(0.55, 0.75)
    ps: list[Prim] = [("poly", ellipse(0, 0, bl, bh, -0.1), 1)]
    ps += _legs(r, (bl * 0.75, bl * 0.5, -bl * 0.55, -bl * 0.8), bh * 0.5, u(0.26, 0.32), 0.04, 0.22, 1)
    bx, by = bl * 0.6, -bh * 0.4
    tx, ty = bx + nl * math.sin(lean), by - nl * math.cos(lean)
    c, s = math.cos(lean), math.sin(lean)
    base, top, across = np.array([bx, by]), np.array([tx, ty]), np.array([c, s])
    neck = np.stack([base - 0.07 * across, base + 0.07 * across, top + 0.03 * across, top - 0.03 * across])
    ps += [("poly", neck, 1), ("poly", ellipse(tx + 0.06, ty + 0.015, 0.09, 0.042, u(0.1, 0.6)), 1)]
    ps += [("line", _pts(tx + dx, ty, tx + dx - 0.01, ty - 0.06), 0.018, 2) for dx in (-0.02, 0.015)]
    ps.append(("line", _pts(-bl * 0.95, -bh * 0.2, -bl - 0.06, bh + u(0.1, 0.18)), 0.02, 1))
    if r.random() < 0.75:
        for _ in range(r.integers(12, 26)):
            t = r.random()
            cx, cy = (u(-bl, bl), u(-bh, bh)) if r.random() < 0.5 else base + t * (top - base)
            ps.append(("poly", ellipse(cx, cy, u(0.02, 0.04), u(0.02, 0.04), u(0, 3), 7), -3))
    return ps


def _fish(r: Rng) -> list[Prim]:
    u = r.uniform
    bl, bh = u(0.35, 0.42), u(0.13, 0.22)
    tail = _pts(-bl * 0.85, 0, -bl - u(0.15, 0.22), -u(0.12, 0.2), -bl - 0.1, 0, -bl - 0.18, u(0.12, 0.2))
    fin = _pts(-0.15, -bh * 0.8, 0.05, -bh * 0.9, -0.12, -bh - u(0.08, 0.15))
    return [
        ("poly", ellipse(0, 0, bl, bh), 1),
        ("poly", tail, 2),
        ("poly", fin, 2),
        ("poly", ellipse(bl * 0.6, -bh * 0.2, 0.03, 0.03), -3),
    ]


def _clutter(r: Rng) -> list[Prim]:
    u, k, p2 = r.uniform, int(r.integers(8)), int(r.choice([1, 2]))
    if k <= 1:  # irregular polygon or star
        n = int(r.integers(3, 9)) * (1 + k)
        ang = np.sort(u(0, 2 * np.pi, n)) if k == 0 else np.linspace(0, 2 * np.pi, n, endpoint=False)
        rad = u(0.5, 1.0, n) if k == 0 else np.where(np.arange(n) % 2 == 0, 1.0, u(0.3, 0.6))
        return [("poly", np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1), 1)]
    if k == 2:
        return [("poly", ellipse(0, 0, 1, u(0.2, 1.0), u(0, 3)), 1), ("poly", ellipse(0, 0, 0.4, 0.3), -p2)]
    if k == 3:  # bar, or two crossing bars
        ps: list[Prim] = [("line", _pts(-1, 0, 1, 0), u(0.1, 0.4), 1)]
        if r.random() < 0.5:
            ps.append(("line", _pts(u(-1, 1), -u(0.3, 1), u(-0.3, 0.3), u(0.3, 1)), u(0.1, 0.3), p2))
        return ps
    if k == 4:  # scribble
        return [("line", np.cumsum(u(-1, 1, (int(r.integers(3, 6)), 2)), 0), u(0.04, 0.12), 1)]
    if k == 5:  # blob of circles
        return [("poly", ellipse(u(-0.5, 0.5), u(-0.5, 0.5), rr, rr), p2) for rr in u(0.2, 0.5, r.integers(3, 7))]
    if k == 6:  # a lone circle on a bar: head-and-torso-like, but no limbs
        return [("line", _pts(0, 0.2, u(-0.3, 0.3), 1), u(0.12, 0.3), 1), ("poly", ellipse(0, 0, 0.2, 0.2), p2)]
    spikes = [("line", _pts(0, 0, math.cos(a) * 1.3, math.sin(a) * 1.3), 0.06, p2) for a in u(0, 6.3, r.integers(1, 4))]
    return [("poly", ellipse(0, 0, 1, u(0.15, 0.4)), 1), *spikes]


_DRAW = {"person": _person, "dog": _dog, "bird": _bird, "giraffe": _giraffe, "fish": _fish}


def draw_shape(r: Rng, plan: str) -> list[Prim]:
    ps = _DRAW.get(plan, _clutter)(r)
    # Mirrored at random and slightly tilted; clutter lies at any angle.
    tilt = {"person": 0.08, "bird": 0.3}.get(plan, 0.12 if plan in _DRAW else math.pi)
    a, sx = r.uniform(-tilt, tilt), (-1.0 if r.random() < 0.5 else 1.0)
    rot = np.array([[math.cos(a) * sx, -math.sin(a)], [math.sin(a) * sx, math.cos(a)]])
    return [(p[0], p[1] @ rot.T, *p[2:]) for p in ps]


def rasterize(ps: list[Prim], size: float, outline: bool) -> np.ndarray:
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

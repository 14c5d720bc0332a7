"""Each detect head's default predict threshold: its F1-optimal conf on its own val data, when there is enough
evidence for it.

A short or weak run peaks F1 at a low score (0.05-0.1), and predict would then draw hundreds of boxes per image.
So a calibrated conf is kept only from at least MIN_OBJECTS val objects and a peak F1 of at least MIN_F1; otherwise
the head has none and predict uses `predict.conf` (default.yaml). results.csv keeps every epoch's `f1_conf` as
measured; the weights keep only the trusted ones.
"""

from __future__ import annotations

import math

MIN_OBJECTS = 20  # fewer val objects: the F1 curve is a handful of steps, its peak an accident
MIN_F1 = 0.1  # a lower peak F1: the head barely detects yet, and its best threshold says little about a good one


def calibrated_conf(metrics: dict[str, dict[str, float]]) -> tuple[dict[str, float], dict[str, str]]:
    """From `evaluate`'s metrics (head -> f1_conf, f1, objects, ...): (head -> kept conf rounded to 3 decimals,
    head -> why its conf was not kept). Heads without `f1_conf` (classify, regress) are in neither."""
    kept: dict[str, float] = {}
    refused: dict[str, str] = {}
    for head, m in metrics.items():
        if "f1_conf" not in m:
            continue
        conf, f1, objects = float(m["f1_conf"]), float(m.get("f1", math.nan)), int(m.get("objects", 0))
        if not math.isfinite(conf):
            refused[head] = "no detection matched a val object"
        elif objects < MIN_OBJECTS:
            refused[head] = f"{conf:.3f} from {objects} val objects (fewer than {MIN_OBJECTS})"
        elif not f1 >= MIN_F1:
            refused[head] = f"{conf:.3f} at a peak F1 of {f1:.3f} (under {MIN_F1})"
        else:
            kept[head] = round(conf, 3)
    return kept, refused

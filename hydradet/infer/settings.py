"""Prediction settings: which heads run, and each head's score threshold, NMS IoU and detection cap.

A threshold is a float for every head or a {head: float} dict; on the command line `0.3` or `person=0.4,animal=0.3`.
Heads a dict leaves out keep the default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydradet.errors import ConfigError

PerHead = float | Mapping[str, float]


class SettingError(ConfigError, ValueError):
    """A bad head name or threshold: a ValueError for Python callers, exit code 2 for the CLI."""


@dataclass(frozen=True)
class HeadSettings:
    conf: float
    iou: float
    max_det: int


def default_settings(heads: Iterable[str], calibrated: Mapping[str, float]) -> dict[str, HeadSettings]:
    """Every head's settings when the caller gives none: `predict:` in default.yaml, except a detect head's conf,
    which comes from `calibrated` (its F1-optimal confidence on its own val data, stored in the weights by
    training) when the weights have one for it."""
    from hydradet.config.load import defaults

    d = defaults()["predict"]  # the one place defaults live
    return {h: HeadSettings(float(calibrated.get(h, d["conf"])), d["iou"], d["max_det"]) for h in heads}


def select_heads(requested: Sequence[str] | str | None, available: Sequence[str]) -> list[str]:
    """The heads to run, in the model's order (so colours and outputs do not depend on how they were asked for)."""
    if requested is None:
        return list(available)
    names = [h.strip() for h in requested.split(",")] if isinstance(requested, str) else list(requested)
    unknown = [h for h in names if h not in available]
    if unknown or not names:
        raise SettingError(f"heads: unknown {unknown or names}; this model has {list(available)}")
    return [h for h in available if h in names]


def parse_per_head(text: str | None) -> PerHead | None:
    """`0.3` -> 0.3; `person=0.4,animal=0.3` -> {"person": 0.4, "animal": 0.3}; None stays None."""
    if text is None:
        return None
    try:
        if "=" not in text:
            return float(text)
        pairs = (item.split("=", 1) for item in text.split(",") if item.strip())
        return {k.strip(): float(v) for k, v in pairs}
    except ValueError:
        raise SettingError(f"{text!r}: expected a number or head=number pairs, e.g. person=0.4,animal=0.3") from None


def resolve(
    heads: list[str],
    defaults: Mapping[str, HeadSettings],
    conf: PerHead | None = None,
    iou: PerHead | None = None,
    max_det: int | None = None,
) -> dict[str, HeadSettings]:
    """Per-head settings for `heads`: the given values over the backend's defaults, each checked."""
    confs = _per_head("conf", conf, heads, list(defaults))
    ious = _per_head("iou", iou, heads, list(defaults))
    out = {}
    for h in heads:
        s = HeadSettings(
            conf=confs.get(h, defaults[h].conf),
            iou=ious.get(h, defaults[h].iou),
            max_det=defaults[h].max_det if max_det is None else int(max_det),
        )
        if not 0 <= s.conf <= 1:
            raise SettingError(f"conf for head {h}: {s.conf} is not in [0, 1]")
        if not 0 < s.iou <= 1:
            raise SettingError(f"iou for head {h}: {s.iou} is not in (0, 1]")
        if s.max_det < 1:
            raise SettingError(f"max_det: {s.max_det} must be >= 1")
        out[h] = s
    return out


def _per_head(name: str, value: PerHead | None, heads: list[str], known: list[str]) -> dict[str, float]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        # A threshold for a head that does not exist is a typo; one for a head not run this time is harmless.
        unknown = [h for h in value if h not in known]
        if unknown:
            raise SettingError(f"{name}: no head named {unknown}; this model has {known}")
        return {h: float(_number(name, v)) for h, v in value.items() if h in heads}
    return dict.fromkeys(heads, float(_number(name, value)))


def _number(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SettingError(f"{name}: {value!r} is not a number or a {{head: number}} dict") from None

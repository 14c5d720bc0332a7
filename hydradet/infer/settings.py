"""Prediction settings: which heads run, and each head's score threshold, NMS IoU, detection cap and whether its
NMS is class-agnostic.

A threshold is a float for every head or a {head: float} dict; on the command line `0.3` or `person=0.4,animal=0.3`.
`agnostic` likewise: a bool or {head: bool}; on the command line `true` or `person=true,animal=false`.
Heads a dict leaves out keep the default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydradet.errors import ConfigError

PerHead = float | Mapping[str, float]
PerHeadFlag = bool | Mapping[str, bool]
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


class SettingError(ConfigError, ValueError):
    """A bad head name or threshold: a ValueError for Python callers, exit code 2 for the CLI."""


@dataclass(frozen=True)
class HeadSettings:
    conf: float  # score threshold: a detection is kept when its score > conf
    iou: float  # NMS IoU threshold
    max_det: int  # detections per image, best first
    # One NMS over all of the head's classes (each location keeps its best class first), so two classes of one
    # head never both claim one object; False: NMS per class (two classes may keep overlapping boxes).
    agnostic: bool = False


def default_settings(heads: Iterable[str], calibrated: Mapping[str, float]) -> dict[str, HeadSettings]:
    """Every head's settings when the caller gives none: `predict:` in default.yaml, except a detect head's conf,
    which comes from `calibrated` (its F1-optimal confidence on its own val data, stored in the weights by
    training) when the weights have one for it."""
    from hydradet.config.load import defaults

    d = defaults()["predict"]  # the one place defaults live
    return {
        h: HeadSettings(float(calibrated.get(h, d["conf"])), d["iou"], d["max_det"], bool(d["agnostic"])) for h in heads
    }


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


def parse_per_head_flag(text: str | None) -> PerHeadFlag | None:
    """`true` -> True; `person=true,animal=false` -> {"person": True, "animal": False}; None stays None."""
    if text is None:
        return None
    pairs = [item.split("=", 1) if "=" in item else ["", item] for item in text.split(",") if item.strip()]
    values = {k.strip(): v.strip().lower() for k, v in pairs}
    bad = [v for v in values.values() if v not in _TRUE | _FALSE]
    if bad or not values or ("" in values and len(values) > 1):
        raise SettingError(f"{text!r}: expected true, false or head=true|false pairs, e.g. person=true,animal=false")
    flags = {k: v in _TRUE for k, v in values.items()}
    return flags.get("", flags)  # a bare true/false is for every head


def resolve(
    heads: list[str],
    defaults: Mapping[str, HeadSettings],
    conf: PerHead | None = None,
    iou: PerHead | None = None,
    max_det: int | None = None,
    agnostic: PerHeadFlag | None = None,
) -> dict[str, HeadSettings]:
    """Per-head settings for `heads`: the given values over the backend's defaults, each checked."""
    confs = _per_head("conf", conf, heads, list(defaults))
    ious = _per_head("iou", iou, heads, list(defaults))
    flags = _per_head_flag("agnostic", agnostic, heads, list(defaults))
    out = {}
    for h in heads:
        s = HeadSettings(
            conf=confs.get(h, defaults[h].conf),
            iou=ious.get(h, defaults[h].iou),
            max_det=defaults[h].max_det if max_det is None else int(max_det),
            agnostic=flags.get(h, defaults[h].agnostic),
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


def _per_head_flag(name: str, value: PerHeadFlag | None, heads: list[str], known: list[str]) -> dict[str, bool]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        unknown = [h for h in value if h not in known]
        if unknown:
            raise SettingError(f"{name}: no head named {unknown}; this model has {known}")
        return {h: _flag(name, v) for h, v in value.items() if h in heads}
    return dict.fromkeys(heads, _flag(name, value))


def _flag(name: str, value: Any) -> bool:
    # A bool only: bool("false") is True, and a number would be a guess at what was meant.
    if not isinstance(value, bool):
        raise SettingError(f"{name}: {value!r} is not true/false or a {{head: true/false}} dict")
    return value


def _number(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SettingError(f"{name}: {value!r} is not a number or a {{head: number}} dict") from None

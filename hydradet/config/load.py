"""Read a config: default.yaml <- the run's YAML <- key=value overrides, validated, or a ConfigError."""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from hydradet.config.schema import Config, KeyedError
from hydradet.errors import ConfigError, read_yaml

DEFAULT_YAML = Path(__file__).with_name("default.yaml")

# Keys holding paths. Relative paths are resolved against the folder of the file that set them
# (the working directory for command-line overrides), so a config can be run from anywhere.
_PATH_KEYS = (("model", "backbone_weights"), ("model", "init"), ("train", "resume"), ("train", "pseudo", "teacher"))
_SOURCE_PATH_KEYS = ("train", "val", "images")


# Keys that older configs (e.g. a past run's config.yaml) may still use: old -> new.
MOVED_KEYS = {"train.hflip": "augment.hflip"}

# Ultralytics' top-level names, accepted as overrides of the full keys (`hydradet train my.yaml epochs=50`).
# `data=CONFIG` is the config itself (cli); `model=` is refused with what to write instead (two meanings there).
SHORTCUTS = {
    "epochs": "train.epochs",
    "imgsz": "model.imgsz",
    "batch": "train.batch",
    "device": "train.device",
    "workers": "train.workers",
    "lr0": "train.lr",
    "seed": "train.seed",
}


def defaults() -> dict[str, Any]:
    return read_yaml(DEFAULT_YAML, ConfigError)  # UTF-8 whatever the locale, like every text input


def load_config(
    source: str | Path | dict[str, Any],
    overrides: list[str] | tuple[str, ...] = (),
    check_paths: bool = True,
    evaluate_only: bool = False,
) -> Config:
    """Build a validated Config from a YAML path (or a dict, paths relative to the working directory).

    evaluate_only: the config is for evaluation (`hydradet val`), so sources with only a `val` split are enough;
    a config for training still needs a `train` split. Raises ConfigError naming the key and the fix."""
    if isinstance(source, dict):
        user, base = copy.deepcopy(source), Path.cwd()
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        user, base = read_yaml(path, ConfigError), path.resolve().parent
    if not isinstance(user, dict):
        raise ConfigError(f"{source}: the config must be a YAML mapping (key: value), got {type(user).__name__}")
    _resolve_paths(user, base)
    merged = _merge(defaults(), user, "")
    for item in overrides:
        _apply_override(merged, item)
    _epochs_from_phases(
        merged,
        "epochs" in (user.get("train") or {}) or any(o.split("=", 1)[0].strip() == "train.epochs" for o in overrides),
    )
    try:
        cfg = Config.model_validate(merged, context={"evaluate_only": evaluate_only})
    except ValidationError as e:
        raise ConfigError(_explain(e, merged)) from None
    if check_paths:
        _check_paths_exist(cfg)
    return cfg


def _epochs_from_phases(merged: dict[str, Any], epochs_given: bool) -> None:
    """With train.phases, the total is the sum of the phases' epochs: train.epochs is set to it. A train.epochs
    given by the user that says otherwise is an error (a saved run's config.yaml holds both, and they agree)."""
    train = merged.get("train")
    phases = train.get("phases") if isinstance(train, dict) else None
    if not phases or not isinstance(phases, list):
        return
    try:
        total = sum(int(p["epochs"]) for p in phases)
    except (KeyError, TypeError, ValueError):
        return  # the schema names what is wrong with the phases
    if epochs_given and train.get("epochs") != total:
        raise ConfigError(
            f"invalid config:\n  train.epochs: {train.get('epochs')!r} conflicts with train.phases, whose epochs "
            f"sum to {total}; with phases, leave train.epochs out (or set it to {total})"
        )
    train["epochs"] = total


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML (what a run saves beside its weights)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _resolve_paths(user: dict[str, Any], base: Path) -> None:
    def fix(d: Any, key: str) -> None:
        if isinstance(d, dict) and isinstance(d.get(key), str) and d[key] not in ("pretrained", "ema"):  # not paths
            p = Path(d[key]).expanduser()
            d[key] = str(p if p.is_absolute() else base / p)

    for *sections, key in _PATH_KEYS:
        d: Any = user
        for section in sections:
            d = d.get(section) if isinstance(d, dict) else None
        fix(d, key)
    for src in (user.get("sources") or {}).values():
        for key in _SOURCE_PATH_KEYS:
            fix(src, key)


def _merge(base: dict[str, Any], user: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Deep-merge user onto the defaults. heads/sources are user-owned maps and replace the default {}."""
    out = copy.deepcopy(base)
    for key, value in user.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and out[key]:
            out[key] = _merge(out[key], value, f"{prefix}{key}.")
        else:
            out[key] = value
    return out


def _apply_override(cfg: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. train.epochs=3")
    dotted, raw = item.split("=", 1)
    dotted = SHORTCUTS.get(dotted.strip(), dotted)
    if dotted.strip() == "model":
        raise ConfigError(
            f"override {item!r}: `model` is a section. Weights to start from: model.init={raw or 'PATH'} (a "
            ".safetensors from hydradet train); an architecture: model.backbone=NAME (default.yaml lists them)"
        )
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        value = raw
    keys = dotted.strip().split(".")
    node = cfg
    for i, key in enumerate(keys[:-1]):
        if not isinstance(node.get(key), dict):
            if key in node:
                raise ConfigError(f"override {item!r}: `{'.'.join(keys[: i + 1])}` is not a section")
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def _explain(err: ValidationError, data: dict[str, Any]) -> str:
    lines = [f"invalid config ({err.error_count()} problem{'s' * (err.error_count() > 1)}):"]
    for e in err.errors():
        keyed = (e.get("ctx") or {}).get("error")
        if isinstance(keyed, KeyedError):
            lines.append(f"  {keyed.key}: {keyed.message}")
            continue
        loc = [str(p) for p in e["loc"] if not str(p).startswith(("function-", "tagged-union"))]
        # A union reports each alternative's location (e.g. `...ratios.str`, `...ratios.TemperatureRatios`);
        # keep the key the user wrote.
        loc = [p for p in loc if p not in ("str", "TemperatureRatios", "literal['proportional','equal']")]
        key = ".".join(loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            parent, name = loc[:-1], loc[-1]
            allowed = _allowed_keys(parent)
            if key in MOVED_KEYS:
                lines.append(f"  {key}: this key moved to `{MOVED_KEYS[key]}`; rename it there")
                continue
            hint = difflib.get_close_matches(name, allowed, n=1) or _full_key(name) * (not parent)
            lines.append(
                f"  {key}: unknown key{f'; did you mean `{hint[0]}`?' if hint else '.'} "
                f"Accepted keys here: {', '.join(allowed)}"
            )
        elif e["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {key}: {e['msg'].removeprefix('Value error, ')}{shown}")
    return "\n".join(dict.fromkeys(lines))  # unions can report the same line twice


def _full_key(name: str) -> list[str]:
    """A top-level name that is the last part of a nested key (`patience`, `hflip`): that key, or the closest."""
    keys: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        for k, v in node.items():
            keys.append(prefix + k)
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")

    walk(defaults(), "")
    last = {k.rsplit(".", 1)[-1]: k for k in reversed(keys) if "." in k}
    close = difflib.get_close_matches(name, list(last), n=1, cutoff=0.75)
    return [last[close[0]]] if close else []


def _allowed_keys(parent: list[str]) -> list[str]:
    model: type[BaseModel] = Config
    for part in parent:
        field = model.model_fields.get(part)
        if field is None:  # a map entry (a head or source name): the value model is the dict's value type
            continue
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        candidates = [a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        if candidates:
            model = candidates[0]
        elif args and isinstance(args[-1], type) and issubclass(args[-1], BaseModel):
            model = args[-1]
    return list(model.model_fields)


def _check_paths_exist(cfg: Config) -> None:
    missing: list[str] = []
    for sname, src in cfg.sources.items():
        for key in _SOURCE_PATH_KEYS:
            p = getattr(src, key)
            if p is not None and not p.exists():
                missing.append(f"  sources.{sname}.{key}: path does not exist: {p}")
    for *sections, key in _PATH_KEYS:
        owner: Any = cfg
        for section in sections:
            owner = getattr(owner, section)
        p = getattr(owner, key)
        if isinstance(p, Path) and not p.exists():
            missing.append(f"  {'.'.join(sections)}.{key}: file does not exist: {p}")
    if missing:
        raise ConfigError("invalid config (paths are relative to the config file's folder):\n" + "\n".join(missing))

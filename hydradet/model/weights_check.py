"""A weights file checked before any tensor is loaded: its metadata must be valid JSON describing a model, and the
tensors (names and shapes, read from the safetensors header only) must be exactly those of that model.

A file whose metadata and tensors disagree (edited by hand, assembled from two files, truncated) would otherwise
fail deep inside `load_state_dict`, or worse, load with class ids that mean something else.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel, ValidationError
from safetensors import safe_open
from torch import Tensor

from hydradet.config.schema import HeadConfig, ModelConfig
from hydradet.errors import UserError, WeightsError
from hydradet.model.detector import HydraDetector

FORMAT_VERSION = 1
_PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".bin"}
CLASSIFIER = {"detect": "cls_logits", "classify": "out"}  # task -> the layer with a row per class
_SHOWN = 5  # mismatching tensors listed in an error
_FIX = (
    "hydradet writes a file's metadata and tensors together, so this file was edited, assembled from two files or "
    "cut short; use the weights as `hydradet train` wrote them (runs/NAME/weights/best.safetensors)"
)

Shape = tuple[int, ...]
M = TypeVar("M", bound=BaseModel)


class NonFiniteWeightsWarning(UserWarning):
    """Weights holding NaN or inf: they load, but the model's outputs are meaningless."""


@dataclass(frozen=True)
class WeightsInfo:
    """What a checked file describes: the model to build, its heads, and each detect head's calibrated conf."""

    path: Path
    meta: dict[str, Any]
    model_cfg: ModelConfig
    heads: dict[str, HeadConfig]
    conf: dict[str, float]


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The file's hydradet metadata: a JSON object with at least `model` and `heads` (mappings).

    Raises WeightsError (naming the file) for a missing or pickled file, an unreadable safetensors header, and
    metadata that is absent, not JSON, or lacks `model`/`heads`."""
    path = Path(path)
    _refuse_pickle(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("hydradet")
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt headers
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    if raw is None:
        raise WeightsError(f"{path}: no hydradet metadata; was it written by hydradet?")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise WeightsError(
            f"{path}: the hydradet metadata is not valid JSON ({e.msg} at character {e.pos}); {_FIX}"
        ) from None
    if not isinstance(meta, dict):
        raise WeightsError(f"{path}: the hydradet metadata must be a JSON object, got {type(meta).__name__}; {_FIX}")
    for key in ("model", "heads"):
        if not isinstance(meta.get(key), dict):
            what = "has no" if key not in meta else f"has a {type(meta[key]).__name__} as its"
            raise WeightsError(
                f"{path}: the hydradet metadata {what} `{key}` entry (a mapping is needed: `model` holds the "
                f"model config, `heads` each head's config); {_FIX}"
            )
    version = meta.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise WeightsError(
            f"{path}: metadata `format_version` is {version!r}; this hydradet reads version {FORMAT_VERSION} "
            "and older: upgrade hydradet to read this file"
        )
    return meta


def inspect_weights(path: str | Path) -> WeightsInfo:
    """Validate the metadata and compare the tensors' names and shapes with those of the model it describes
    (built on the meta device: no memory, no tensor data read). Raises WeightsError naming the file, the first
    mismatching tensors (expected vs found shape) and what the mismatch means."""
    path = Path(path)
    meta = read_metadata(path)
    model_cfg = _validated(ModelConfig, {**meta["model"], "backbone_weights": None, "init": None}, path, "model")
    heads = {name: _validated(HeadConfig, h, path, f"heads.{name}") for name, h in meta["heads"].items()}
    if not heads:
        raise WeightsError(f"{path}: metadata `heads` is empty; a hydradet model has at least one head; {_FIX}")
    conf = meta.get("conf") or {}
    if not isinstance(conf, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for v in conf.values()
    ):
        raise WeightsError(f"{path}: metadata `conf` must map heads to confidences in [0, 1], got {conf!r}")
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in HydraDetector(model_cfg, heads).state_dict().items()}
    except UserError as e:
        raise WeightsError(f"{path}: metadata `model` describes a model that cannot be built: {e}") from None
    except Exception as e:  # the metadata is untrusted input: any failure to build from it is the file's fault
        raise WeightsError(
            f"{path}: metadata describes a model that cannot be built ({type(e).__name__}: {e}); {_FIX}"
        ) from None
    found = tensor_shapes(path)
    if found != expected:
        raise WeightsError(_mismatch_message(path, model_cfg, heads, expected, found))
    return WeightsInfo(path, meta, model_cfg, heads, {h: float(v) for h, v in conf.items() if h in heads})


def tensor_shapes(path: Path) -> dict[str, Shape]:
    """Name -> shape of every tensor in the file, from its header (no tensor data is read)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:  # safetensors' own error types
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None


def warn_non_finite(path: Path, state: dict[str, Tensor]) -> None:
    """A NonFiniteWeightsWarning naming the file and how many tensors hold NaN or inf (none: no warning)."""
    bad = [n for n, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        warnings.warn(
            f"{path}: {len(bad)} of {len(state)} tensors hold NaN or inf ({shown}); this model will predict "
            "nothing useful; was it saved from a run whose loss diverged?",
            NonFiniteWeightsWarning,
            stacklevel=3,
        )


def _validated(cls: type[M], data: Any, path: Path, key: str) -> M:
    """cls.model_validate(data), a pydantic error turned into a WeightsError naming the metadata key."""
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: metadata `{key}` must be a mapping, got {data!r}; {_FIX}")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join([key, *map(str, err["loc"])])
        if err["type"] == "missing":
            problem = "required key is missing (written by another hydradet version?)"
        elif err["type"] == "extra_forbidden":
            problem = "unknown key (written by another hydradet version?)"
        else:
            problem = f"{err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})"
        raise WeightsError(f"{path}: metadata `{loc}`: {problem}; {_FIX}") from None


def _mismatch_message(
    path: Path,
    model_cfg: ModelConfig,
    heads: dict[str, HeadConfig],
    expected: dict[str, Shape],
    found: dict[str, Shape],
) -> str:
    missing = [n for n in expected if n not in found]
    unexpected = [n for n in found if n not in expected]
    differ = [n for n in expected if n in found and found[n] != expected[n]]
    meanings = []
    for head, cfg in heads.items():
        own = [n for n in expected if n.startswith(f"heads.{head}.")]
        if own and all(n in missing for n in own):
            meanings.append(f"metadata lists head {head!r} ({cfg.task}) but the file holds no heads.{head}.* tensor")
            continue
        layer = f"heads.{head}.{CLASSIFIER.get(cfg.task, '-')}.weight"
        if layer in differ and found[layer][0] != expected[layer][0]:
            meanings.append(
                f"metadata says {len(cfg.classes)} classes for head {head} {cfg.classes}, tensors have "
                f"{found[layer][0]}"
            )
    extra_heads = sorted({n.split(".")[1] for n in unexpected if n.startswith("heads.")} - set(heads))
    if extra_heads:
        meanings.append(f"the file holds tensors of heads {extra_heads} that the metadata does not list")
    width = model_cfg.neck_width
    neck = [n for n in differ if n.startswith("neck.") and expected[n][0] == width and found[n][0] != width]
    if neck:
        meanings.append(f"metadata says model.neck_width={width}, the neck tensors have {found[neck[0]][0]} channels")
    backbone = [n for n in missing + unexpected + differ if n.startswith("backbone.")]
    if backbone:
        meanings.append(
            f"the backbone tensors do not fit the metadata's model.backbone={model_cfg.backbone!r} "
            f"({sum(n in missing for n in backbone)} missing, {sum(n in unexpected for n in backbone)} unexpected, "
            f"{sum(n in differ for n in backbone)} of another shape)"
        )
    if not meanings:
        meanings.append(
            f"tensors: {len(missing)} missing from the file, {len(unexpected)} not in the model, "
            f"{len(differ)} of another shape"
        )
    # In the model's order (backbone, neck, heads): the first lines show where the disagreement starts.
    details = [
        f"{n}: expected {expected[n]}, " + (f"found {found[n]}" if n in found else "not in the file")
        for n in expected
        if found.get(n) != expected[n]
    ]
    details += [f"{n}: in the file {found[n]}, not in the model" for n in unexpected]
    more = len(details) - _SHOWN
    lines = [f"{path}: the metadata and the tensors disagree: " + "; ".join(meanings)]
    lines += [f"  {d}" for d in details[:_SHOWN]] + ([f"  ... and {more} more"] if more > 0 else [])
    return "\n".join([*lines, f"  fix: {_FIX}"])


def _refuse_pickle(path: Path) -> None:
    run_weights = run_folder_weights(path)
    if run_weights is not None:
        what = "a training run's folder" if path.is_dir() else "a training checkpoint (for --resume), not weights"
        if run_weights.is_file():
            raise WeightsError(f"{path}: {what}; its weights are {run_weights} (or last.safetensors beside it)")
        run = run_weights.parent.parent
        raise WeightsError(
            f"{path}: {what}, stopped before it wrote {run_weights.name} (an epoch's end writes it); continue it: "
            f"hydradet train --resume {run}"
        )
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix in _PICKLE_SUFFIXES:
        raise WeightsError(
            f"{path}: pickled weights are refused (loading them can run code from the file). Convert a file you "
            'trust with: python -c "import torch, safetensors.torch as s; '
            f"s.save_file(torch.load('{path.name}', weights_only=True), '{path.stem}.safetensors')\" "
            "(hydradet files also need their metadata: prefer the .safetensors that `hydradet train` wrote)"
        )


def run_folder_weights(path: Path) -> Path | None:
    """The best.safetensors a user meant when giving a training run's folder (runs/NAME or runs/NAME/weights) or
    its checkpoint.pt as weights (the file may not exist yet: a run stopped in its first epoch); None otherwise."""
    candidates = [path / "weights", path] if path.is_dir() else [path.parent] if path.name == "checkpoint.pt" else []
    for folder in candidates:
        if (folder / "best.safetensors").is_file() or (folder / "checkpoint.pt").is_file():
            return folder / "best.safetensors"
    return None

"""Weights files: safetensors, with the model config and heads in the metadata so the file alone suffices.

Tensor names: `backbone.*`, `neck.*`, `heads.<head>.*`. Pickled files (.pt/.pth/.ckpt) are refused: loading
them can execute code from the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from hydradet.files import atomic_save
from hydradet.model.detector import HydraDetector
from hydradet.model.weights_check import (
    CLASSIFIER,
    FORMAT_VERSION,
    NonFiniteWeightsWarning,
    inspect_weights,
    read_metadata,
    warn_non_finite,
)

# read_metadata, FORMAT_VERSION and the warning class live in weights_check.py; importable from here as before.
__all__ = [
    "FORMAT_VERSION",
    "InitReport",
    "NonFiniteWeightsWarning",
    "init_from",
    "load_model",
    "read_metadata",
    "save_weights",
]


def save_weights(model: HydraDetector, path: Path, extra: dict[str, Any] | None = None) -> None:
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model.model_cfg.model_dump(mode="json"),
        "heads": {name: h.model_dump(mode="json") for name, h in model.head_cfgs.items()},
        "conf": model.calibrated_conf,
        **(extra or {}),
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # Written to a temporary and renamed: a kill mid-save leaves the previous file intact (hydradet/files.py).
    atomic_save(path, lambda tmp: save_file(state, str(tmp), metadata={"hydradet": json.dumps(meta)}))


def load_model(path: str | Path) -> HydraDetector:
    """Build the model the file describes and load its tensors (in eval mode).

    Raises WeightsError (naming the file and the fix) for a missing, pickled or unreadable file, metadata that is
    not valid, and tensors that are not exactly the described model's (the first mismatches listed), all before
    any tensor is loaded. Warns (NonFiniteWeightsWarning) when tensors hold NaN or inf."""
    info = inspect_weights(path)
    model = HydraDetector(info.model_cfg, info.heads)
    state = load_file(str(path))
    warn_non_finite(info.path, state)
    model.load_state_dict(state, strict=True)
    model.calibrated_conf = info.conf
    return model.eval()


@dataclass
class InitReport:
    loaded: int = 0
    fresh: list[str] = field(default_factory=list)  # model tensors the file lacks (e.g. a new head)
    shape_mismatch: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # file tensors the model lacks (e.g. a dropped head)
    remapped: list[str] = field(default_factory=list)  # heads whose classes differ: classifier rows matched by name

    def lines(self) -> list[str]:
        out = [f"init: {self.loaded} tensors loaded"] + [f"init: {line}" for line in self.remapped]
        for title, items in (
            ("start fresh (not in the file)", self.fresh),
            ("start fresh (shape differs)", self.shape_mismatch),
            ("in the file but not in the model (ignored)", self.unused),
        ):
            if items:
                heads = sorted({n.split(".")[1] for n in items if n.startswith("heads.")})
                others = [n for n in items if not n.startswith("heads.")]
                shown = [f"heads.{h}.*" for h in heads] + others[:5] + (["..."] if len(others) > 5 else [])
                out.append(f"init: {len(items)} {title}: {', '.join(shown)}")
        return out


def init_from(model: HydraDetector, path: str | Path) -> InitReport:
    """Copy every tensor of the file whose name and shape match the model's; list the rest.

    The file itself must be consistent (its metadata describing exactly its tensors: the class names that match
    classifier rows come from the metadata), else WeightsError as for `load_model`, before the model is touched.
    Warns (NonFiniteWeightsWarning) when the file's tensors hold NaN or inf."""
    info = inspect_weights(path)
    file_state = load_file(str(path))
    warn_non_finite(info.path, file_state)
    own = model.state_dict()
    report = InitReport(unused=sorted(set(file_state) - set(own)))
    for head, cfg in model.head_cfgs.items():
        file_head = info.heads.get(head)
        old = file_head.classes if file_head is not None else None
        if old and old != cfg.classes and file_head.task == cfg.task and cfg.task in CLASSIFIER:
            _remap_classifier_rows(file_state, own, f"heads.{head}.{CLASSIFIER[cfg.task]}", old, cfg.classes)
            new = [c for c in cfg.classes if c not in old]
            report.remapped.append(f"heads.{head}: classes {old} -> {cfg.classes}, matched by name; fresh: {new}")
    matched = {}
    for name, tensor in own.items():
        if name not in file_state:
            report.fresh.append(name)
        elif file_state[name].shape != tensor.shape:
            report.shape_mismatch.append(f"{name} {tuple(file_state[name].shape)}->{tuple(tensor.shape)}")
        else:
            matched[name] = file_state[name]
    model.load_state_dict(matched, strict=False)
    report.loaded = len(matched)
    return report


def _remap_classifier_rows(
    file_state: dict[str, Tensor], own: dict[str, Tensor], prefix: str, old: list[str], new: list[str]
) -> None:
    """Rewrite the file's classifier so that row i is the file's row for class new[i] (fresh where unknown):
    loading by shape alone would silently swap class ids."""
    for suffix in (".weight", ".bias"):
        name = prefix + suffix
        if name not in file_state:
            continue
        rows = own[name].clone()
        for i, cls in enumerate(new):
            if cls in old:
                rows[i] = file_state[name][old.index(cls)]
        file_state[name] = rows

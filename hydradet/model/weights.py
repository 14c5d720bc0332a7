"""Weights files: safetensors, with the model config and heads in the metadata so the file alone suffices.

Tensor names: `backbone.*`, `neck.*`, `heads.<head>.*`. Pickled files (.pt/.pth/.ckpt) are refused: loading
them can execute code from the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from hydradet.config.schema import HeadConfig, ModelConfig
from hydradet.errors import WeightsError
from hydradet.files import atomic_save
from hydradet.model.detector import HydraDetector

FORMAT_VERSION = 1
_PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".bin"}
_CLASSIFIER = {"detect": "cls_logits", "classify": "out"}  # task -> the layer with a row per class


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


def read_metadata(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    _refuse_pickle(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("hydradet")
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt headers
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    if raw is None:
        raise WeightsError(f"{path}: no hydradet metadata; was it written by hydradet?")
    return json.loads(raw)


def load_model(path: str | Path) -> HydraDetector:
    """Build the model the file describes and load its tensors (strict: every tensor must match)."""
    meta = read_metadata(path)
    model_cfg = ModelConfig.model_validate({**meta["model"], "backbone_weights": None, "init": None})
    heads = {name: HeadConfig.model_validate(h) for name, h in meta["heads"].items()}
    model = HydraDetector(model_cfg, heads)
    model.load_state_dict(load_file(str(path)), strict=True)
    conf = meta.get("conf") or {}
    if not isinstance(conf, dict) or not all(isinstance(v, int | float) and 0 <= v <= 1 for v in conf.values()):
        raise WeightsError(f"{path}: metadata `conf` must map heads to confidences in [0, 1], got {conf!r}")
    model.calibrated_conf = {h: float(v) for h, v in conf.items() if h in model.heads}
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
    """Copy every tensor of the file whose name and shape match the model's; list the rest."""
    meta = read_metadata(path)
    file_state = load_file(str(path))
    own = model.state_dict()
    report = InitReport(unused=sorted(set(file_state) - set(own)))
    for head, cfg in model.head_cfgs.items():
        file_head = meta["heads"].get(head, {})
        old = file_head.get("classes")
        if old is not None and old != cfg.classes and file_head.get("task") == cfg.task and cfg.task in _CLASSIFIER:
            _remap_classifier_rows(file_state, own, f"heads.{head}.{_CLASSIFIER[cfg.task]}", old, cfg.classes)
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


def _refuse_pickle(path: Path) -> None:
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix in _PICKLE_SUFFIXES:
        raise WeightsError(
            f"{path}: pickled weights are refused (loading them can run code from the file). Convert a file you "
            'trust with: python -c "import torch, safetensors.torch as s; '
            f"s.save_file(torch.load('{path.name}', weights_only=True), '{path.stem}.safetensors')\" "
            "(hydradet files also need their metadata: prefer the .safetensors that `hydradet train` wrote)"
        )

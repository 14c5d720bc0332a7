"""Backbones from torchvision or timm, cut to return their stride-8, -16 and -32 feature maps."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import FrozenBatchNorm2d

from hydradet.errors import WeightsError
from hydradet.model.shufflenet_megvii import MEGVII_IMAGENET, ShuffleNetV2Megvii, load_megvii_state

# The graph nodes whose outputs are the last feature maps at strides 8, 16 and 32. MobileNet's are found by
# probing (its stages are not named), the others are named stages.
_RETURN_NODES = {
    "resnet18": ["layer2", "layer3", "layer4"],
    "resnet34": ["layer2", "layer3", "layer4"],
    "resnet50": ["layer2", "layer3", "layer4"],
    "shufflenet_v2_x0_5": ["stage2", "stage3", "stage4"],
    "shufflenet_v2_x1_0": ["stage2", "stage3", "stage4"],
    "shufflenet_v2_x0_5_megvii": ["stage2", "stage3", "stage4"],
}

# Input convention each backbone's pretrained weights were trained with: (mean, std, bgr), applied to images in
# [0, 1] after flipping to BGR if bgr. torchvision's are ImageNet mean/std on RGB. The Megvii-layout FastestDet
# weights saw OpenCV images / 255: their first BatchNorm's running stats match batch stats of real images only for
# BGR in [0, 1] (mean/std inputs are ~6x further off, RGB ~3x on the mean term; tests/test_megvii_backbone.py).
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False)
_INPUT_NORM = {"shufflenet_v2_x0_5_megvii": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), True)}

TIMM_PREFIX = "timm:"  # model.backbone=timm:NAME builds any timm model (hydradet/model/timm_backbone.py)

# Names built from hydradet's Megvii-layout module rather than torchvision, with their width multiplier.
_MEGVII = {"shufflenet_v2_x0_5_megvii": 0.5}


class Backbone(nn.Module):
    """Image batch (B, 3, H, W) in [0, 1] -> three feature maps at strides 8, 16, 32."""

    strides = (8, 16, 32)

    def __init__(self, name: str, weights: Path | str | None = None, norm: str = "batch") -> None:
        super().__init__()
        if name.startswith(TIMM_PREFIX):
            self._init_timm(name.removeprefix(TIMM_PREFIX), weights, norm)
            return
        if name in _MEGVII:
            net = _megvii_net(name, weights)
        else:
            net = _torchvision_net(name, weights == "pretrained")
            if weights not in (None, "pretrained"):
                state = torch.load(weights, map_location="cpu", weights_only=True)
                missing, _unexpected = net.load_state_dict(state, strict=False)
                kept = [k for k in missing if not k.startswith(("fc.", "classifier.", "conv5."))]
                if kept:
                    raise WeightsError(
                        f"{weights}: not a {name} state dict; missing {len(kept)} tensors, e.g. {kept[:3]}"
                    )
        nodes = _RETURN_NODES.get(name) or _probe_stride_nodes(net)
        self.body = create_feature_extractor(net, {n: str(i) for i, n in enumerate(nodes)})
        if norm == "frozen":
            _freeze_batchnorm(self.body)
        mean, std, self.bgr = _INPUT_NORM.get(name, _IMAGENET)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        with torch.no_grad():
            self.body.eval()
            probe = self.body(torch.zeros(1, 3, 64, 64))
            self.body.train()
        self.out_channels = [f.shape[1] for f in probe.values()]

    def _init_timm(self, name: str, weights: Path | str | None, norm: str) -> None:
        """A timm model with `features_only`: its feature maps at reductions 8, 16, 32 (timm's feature_info)."""
        from hydradet.model.timm_backbone import create_timm_body

        self.body, mean, std = create_timm_body(name, weights, frozen_norm=norm == "frozen")
        self.bgr = False
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.out_channels = list(self.body.feature_info.channels())

    def forward(self, images: Tensor) -> list[Tensor]:
        if self.bgr:
            images = images.flip(1)
        feats = self.body((images - self.mean) / self.std)
        return list(feats.values()) if isinstance(feats, dict) else list(feats)


def _torchvision_net(name: str, download: bool) -> nn.Module:
    """torchvision's model; with download, its default ImageNet weights through torchvision's own download."""
    if not download:
        return getattr(torchvision.models, name)(weights=None)
    try:
        return getattr(torchvision.models, name)(weights="DEFAULT")
    except Exception as e:  # whatever the download raises offline (URLError, OSError, ...)
        raise WeightsError(
            f"torchvision could not fetch pretrained weights for {name} ({type(e).__name__}: {e}); offline, give a "
            "local file (model.backbone_weights=PATH) or train from scratch (model.backbone_weights=null)"
        ) from None


def _megvii_net(name: str, weights: Path | str | None) -> nn.Module:
    """The Megvii-layout ShuffleNetV2; a weights file must match it exactly (no head tensors to drop)."""
    net = ShuffleNetV2Megvii(width=_MEGVII[name])
    if weights is None:
        return net
    if weights == "pretrained":
        weights = MEGVII_IMAGENET
    state = load_megvii_state(weights)
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != want:
        missing = sorted(want.keys() - got.keys())
        extra = sorted(got.keys() - want.keys())
        shapes = [f"{k}: {got[k]} != {want[k]}" for k in sorted(want.keys() & got.keys()) if got[k] != want[k]]
        raise WeightsError(
            f"{weights}: not a {name} state dict; {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(extra)} unexpected (e.g. {extra[:3]}), {len(shapes)} shape mismatches (e.g. {shapes[:3]})"
        )
    net.load_state_dict(state, strict=True)
    return net


def _probe_stride_nodes(net: nn.Module) -> list[str]:
    """For nets with a `features` Sequential: the last block at each of strides 8, 16, 32."""
    x = torch.zeros(1, 3, 64, 64)
    last_at: dict[int, str] = {}
    with torch.no_grad():
        for i, block in enumerate(net.features):  # type: ignore[union-attr]
            x = block(x)
            last_at[64 // x.shape[-1]] = f"features.{i}"
    return [last_at[s] for s in (8, 16, 32)]


def _freeze_batchnorm(module: nn.Module) -> None:
    """Swap every BatchNorm2d for torchvision's FrozenBatchNorm2d with the same statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            _freeze_batchnorm(child)

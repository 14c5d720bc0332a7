"""HydraDetector: one backbone and neck, a head per label space."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from hydradet.config.schema import HeadConfig, ModelConfig
from hydradet.model.backbone import Backbone
from hydradet.model.detect_head import DetectHead, DetectOutput
from hydradet.model.image_heads import ClassifyHead, ImageOutput, RegressHead
from hydradet.model.neck import Neck


class HydraDetector(nn.Module):
    """Tensor names are `backbone.*`, `neck.*` and `heads.<head>.*`: what the weights file stores."""

    frozen: tuple[str, ...] = ()  # module prefixes frozen by `freeze`

    def __init__(self, model_cfg: ModelConfig, heads: Mapping[str, HeadConfig]) -> None:
        super().__init__()
        self.model_cfg = model_cfg
        self.head_cfgs = dict(heads)
        self.backbone = Backbone(model_cfg.backbone, model_cfg.backbone_weights, model_cfg.backbone_norm)
        # The shared tower serves detect heads only (see `forward`): without one it would be dead weight.
        any_detect = any(h.task == "detect" for h in heads.values())
        self.neck = Neck(self.backbone.out_channels, model_cfg.neck_width, model_cfg.shared_convs if any_detect else 0)
        self.heads = nn.ModuleDict({name: build_head(h, model_cfg) for name, h in heads.items()})
        # Detect head -> its F1-optimal confidence on its val data, set by training and kept in the weights'
        # metadata (`conf`): predict's default threshold for that head.
        self.calibrated_conf: dict[str, float] = {}

    def freeze(self, prefixes: Iterable[str]) -> None:
        """Freeze the modules under these name prefixes and unfreeze the rest: a frozen parameter has
        requires_grad False (grad None, so the optimizer skips it: no step, no moments, no weight decay), and a
        frozen BatchNorm stays in eval mode (running statistics kept) whenever the model is put in train mode."""
        self.frozen = tuple(prefixes)
        for name, p in self.named_parameters():
            p.requires_grad_(not under(name, self.frozen))
        self.train(self.training)

    def train(self, mode: bool = True) -> HydraDetector:
        super().train(mode)
        for name, m in self.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and under(name, self.frozen):
                m.eval()
        return self

    def features(self, images: Tensor) -> list[Tensor]:
        """The FPN levels (strides 8, 16, 32; neck_width channels), before the neck's shared tower."""
        feats = self.backbone(images)
        return self.neck({str(i): f for i, f in enumerate(feats)})

    def forward(
        self,
        images: Tensor,
        rows: Mapping[str, Tensor | None] | None = None,
        trunk_grad_scale: Mapping[str, float] | None = None,
    ) -> dict[str, DetectOutput | ImageOutput]:
        """One backbone pass; then each requested head on its rows of the batch only.

        rows: head -> indices of the samples that head runs on (None: all samples). Heads not named do not
        run at all, so they take no part in the graph and receive no gradient. Default: every head, all rows.
        trunk_grad_scale: head -> factor on the gradient that head sends back into the shared backbone and neck
        (`train.balance.trunk`); the head's own parameters get their gradient unscaled. Default: 1 for all.
        """
        if rows is None:
            rows = dict.fromkeys(self.heads)
        levels = self.features(images)
        # Detect heads read the levels through the shared tower (model.shared_convs: their towers' first layers,
        # paid once); classify / regress heads pool the FPN levels themselves: on the synthetic attribute set a
        # tower between them cut ethnicity accuracy from 0.53 to chance after 4 epochs (tests/test_image_heads.py).
        towered = None
        out = {}
        for name, idx in rows.items():
            feats = levels
            if isinstance(self.heads[name], DetectHead):
                towered = self.neck.tower_levels(levels) if towered is None else towered
                feats = towered
            head_feats = feats if idx is None else [f[idx] for f in feats]
            scale = (trunk_grad_scale or {}).get(name, 1.0)
            if scale != 1.0:
                head_feats = [_ScaleGrad.apply(f, scale) for f in head_feats]
            out[name] = self.heads[name](head_feats)
        return out


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient times `scale` backward. torch has no such op; hooks on a shared tensor would
    scale every head's gradient at once."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def build_head(cfg: HeadConfig, model_cfg: ModelConfig) -> nn.Module:
    """The head for `cfg.task`; each reads the neck's feature list (strides 8, 16, 32, neck_width channels)."""
    width = model_cfg.neck_width
    if cfg.task == "classify":
        return ClassifyHead(width, len(cfg.classes), len(Backbone.strides))
    if cfg.task == "regress":
        mean, std = cfg.mean or 0.0, cfg.std or 1.0
        return RegressHead(width, mean, std, len(Backbone.strides))
    return DetectHead(
        width,
        len(cfg.classes),
        model_cfg.head_convs,
        Backbone.strides,
        model_cfg.assigner,
        model_cfg.cls_target,
        model_cfg.loss_norm,
        model_cfg.head_conv == "separable",
    )


def under(name: str, prefixes: Iterable[str]) -> bool:
    """Whether a parameter or module name lies under one of the dotted prefixes (`backbone` covers
    `backbone.body.conv1.weight`, not `backbone2`)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)

"""HydraDetector: one backbone and neck, a head per label space."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork

from hydradet.config.schema import HeadConfig, ModelConfig
from hydradet.model.backbone import Backbone
from hydradet.model.detect_head import DetectHead, DetectOutput


class HydraDetector(nn.Module):
    """Tensor names are `backbone.*`, `neck.*` and `heads.<head>.*`: what the weights file stores."""

    def __init__(self, model_cfg: ModelConfig, heads: Mapping[str, HeadConfig]) -> None:
        super().__init__()
        self.model_cfg = model_cfg
        self.head_cfgs = dict(heads)
        self.backbone = Backbone(model_cfg.backbone, model_cfg.backbone_weights, model_cfg.backbone_norm)
        self.neck = FeaturePyramidNetwork(self.backbone.out_channels, model_cfg.neck_width)
        self.heads = nn.ModuleDict(
            {
                name: DetectHead(model_cfg.neck_width, len(h.classes), model_cfg.head_convs, Backbone.strides)
                for name, h in heads.items()
            }
        )

    def features(self, images: Tensor) -> list[Tensor]:
        feats = self.backbone(images)
        return list(self.neck({str(i): f for i, f in enumerate(feats)}).values())

    def forward(self, images: Tensor, rows: Mapping[str, Tensor | None] | None = None) -> dict[str, DetectOutput]:
        """One backbone pass; then each requested head on its rows of the batch only.

        rows: head -> indices of the samples that head runs on (None: all samples). Heads not named do not
        run at all, so they take no part in the graph and receive no gradient. Default: every head, all rows.
        """
        if rows is None:
            rows = dict.fromkeys(self.heads)
        feats = self.features(images)
        out = {}
        for name, idx in rows.items():
            head_feats = feats if idx is None else [f[idx] for f in feats]
            out[name] = self.heads[name](head_feats)
        return out

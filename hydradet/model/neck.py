"""The neck: torchvision's FPN, then an optional conv tower that every head shares."""

from __future__ import annotations

from torch import Tensor
from torchvision.ops import FeaturePyramidNetwork

from hydradet.model.layers import conv_tower


class Neck(FeaturePyramidNetwork):
    """FPN levels (strides 8, 16, 32) of `width` channels, each then through `shared_convs` conv layers (the same
    weights on every level, as FCOS shares its head towers across levels).

    Why a shared tower: each detect head's own towers cost far more than this small backbone (at 256 px, two
    towers of 2 convs at width 64 are ~0.4 GFLOPs against the trunk's ~0.19), so K heads cost nearly K times one.
    Moving the towers here pays for them once; each head keeps its prediction layers (and `head_convs` layers of
    its own, if any). The tower is part of the trunk: every source with a detect head trains it, like the backbone;
    classify and regress heads read the FPN levels before it (HydraDetector.forward). A subclass rather than a
    wrapper so that tensor names stay `neck.inner_blocks.*` (weights files from before still load).
    """

    def __init__(self, in_channels: list[int], width: int, shared_convs: int = 0) -> None:
        super().__init__(in_channels, width)
        self.tower = conv_tower(width, shared_convs)

    def forward(self, x: dict[str, Tensor]) -> list[Tensor]:  # type: ignore[override]
        """The FPN levels, finest first: [N, width, H / s, W / s] for s = 8, 16, 32 (before the tower)."""
        return list(super().forward(x).values())

    def tower_levels(self, levels: list[Tensor]) -> list[Tensor]:
        """Each level through the shared tower (the same tensors when it has no layers): what detect heads read."""
        return [self.tower(v) for v in levels] if len(self.tower) else levels

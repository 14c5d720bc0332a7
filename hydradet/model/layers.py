"""Layers the neck and the heads share."""

from __future__ import annotations

from torch import nn


def conv_tower(width: int, depth: int, separable: bool = False) -> nn.Sequential:
    """depth x (3x3 conv, GroupNorm, ReLU) at constant width; empty (the identity) for depth 0. GroupNorm, as in
    FCOS: it holds no running statistics, so a tower changes only through its own gradients.

    separable: each 3x3 conv is depthwise-separable (3x3 depthwise, then 1x1 pointwise; MobileNet, Howard et al.
    2017), ~8x fewer multiply-adds at width 64, so that an extra head costs little beside the backbone."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        conv: list[nn.Module] = (
            [nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False), nn.Conv2d(width, width, 1)]
            if separable
            else [nn.Conv2d(width, width, 3, padding=1)]
        )
        layers += [*conv, nn.GroupNorm(gn_groups(width), width), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def gn_groups(width: int) -> int:
    # 8 channels per group, as FCOS's GroupNorm(32) on 256 channels; at most 32 groups.
    return next(g for g in (32, 16, 8, 4, 2, 1) if (width % g == 0 and width // g >= 8) or g == 1)

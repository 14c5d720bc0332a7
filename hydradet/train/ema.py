"""Model EMA as YOLO trainers keep it (Ultralytics `ModelEMA`), under the rule.

An exponential moving average of the weights, updated after each optimizer step with decay
d(n) = decay * (1 - exp(-n / tau)): small for the first updates (the average follows the model closely while
it moves fast), approaching `decay` later. Evaluation and the saved `best`/`last` weights use the average.

The rule: the shared trunk (backbone, neck) is averaged on every step with its own update counter; a head's copy
is averaged only on steps with that head's samples, with the head's own counter n_head, so on a step without its
samples a head's EMA tensors stay bit-identical. Frozen modules (`HydraDetector.frozen`) are copied, not
averaged: they do not change, and a copy keeps them bit-identical. Non-floating buffers (BatchNorm's
num_batches_tracked) are copied. Balancing parameters are not part of the model and not averaged.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch

from hydradet.model.detector import HydraDetector, under

TRUNK = "trunk"  # the update counter of the shared backbone and neck


def ema_decay(n: int, decay: float, tau: float) -> float:
    """d(n) = decay * (1 - exp(-n / tau)): the weight the average keeps at its n-th update (1-based)."""
    return decay * (1 - math.exp(-n / tau))


class ModelEMA:
    """A deep copy of the model (eval mode, no gradients) that `update` moves toward the model after each step."""

    def __init__(self, model: HydraDetector, decay: float = 0.9999, tau: float = 2000.0) -> None:
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau = decay, tau
        self.updates: dict[str, int] = {TRUNK: 0, **dict.fromkeys(model.heads, 0)}

    def group_of(self, name: str) -> str:
        """`trunk` for backbone.* and neck.*, else the head a `heads.<head>.*` tensor belongs to."""
        return name.split(".")[1] if name.startswith("heads.") else TRUNK

    @torch.no_grad()
    def update(self, model: HydraDetector, active_heads: Iterable[str]) -> None:
        """After an optimizer step: average the trunk and the heads that had samples in it; no other head."""
        groups = {TRUNK, *active_heads}
        unknown = groups - set(self.updates)
        if unknown:
            raise KeyError(f"EMA update for unknown heads {sorted(unknown)}")
        d = {}
        for g in groups:
            self.updates[g] += 1
            d[g] = ema_decay(self.updates[g], self.decay, self.tau)
        src = model.state_dict()
        for name, v in self.ema.state_dict().items():
            g = self.group_of(name)
            if g not in groups:
                continue
            new = src[name].detach()
            if not v.dtype.is_floating_point or under(name, model.frozen):
                v.copy_(new)
            else:
                v.mul_(d[g]).add_(new, alpha=1 - d[g])

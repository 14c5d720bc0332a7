"""The one-line model summary a run prints at its start: backbone, heads, parameters and GFLOPs at imgsz."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from hydradet.model.detector import HydraDetector

# FLOPs are counted on a small input and scaled by area, as Ultralytics does: every layer's cost is proportional to
# its feature map's area, so the count is exact up to rounding at the borders, and a big model on a CPU does not run
# a full-size forward pass just to be described.
_PROBE = 128


def model_summary(model: HydraDetector, imgsz: int) -> str:
    """e.g. "model: shufflenet_v2_x0_5, FPN 64, heads person (detect, 1 class), animal (detect, 3 classes);
    1.23M parameters, 2.1 GFLOPs at 640 px (all heads)". GFLOPs: multiply-adds x 2 of one image's forward
    through every head (torch.utils.flop_counter)."""
    params = sum(p.numel() for p in model.parameters())
    heads = ", ".join(f"{name} ({_describe(cfg)})" for name, cfg in model.head_cfgs.items())
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, _PROBE, _PROBE, device=device), dict.fromkeys(model.heads))
        gflops = counter.get_total_flops() * (imgsz / _PROBE) ** 2 / 1e9
    finally:
        model.train(was_training)
    m = model.model_cfg
    return (
        f"model: {m.backbone}, FPN {m.neck_width}, heads {heads}; {params / 1e6:.2f}M parameters, "
        f"{gflops:.3g} GFLOPs at {imgsz} px (all heads)"
    )


def _describe(cfg: object) -> str:
    task = getattr(cfg, "task", "")
    classes = getattr(cfg, "classes", None)
    if classes:
        return f"{task}, {len(classes)} class{'es' * (len(classes) != 1)}"
    return str(task)

"""Mixed precision (`train.amp`): the forward pass in bf16 or fp16 under torch.autocast, the losses in fp32.

fp16 has a narrow range, so its gradients are scaled up before backward and back down before the step
(torch.amp.GradScaler). A step whose scaled gradients overflowed is skipped: the scaler lowers its scale and the
optimizer is not called, so no head's weights or moments change (train/step.py raises NonFiniteStep for it, as for
any non-finite gradient). A head without samples keeps grad None, which the scaler and the optimizer both skip:
the rule holds. bf16 has fp32's range and needs no scaler.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any

import torch

from hydradet.errors import ConfigError


@dataclass
class Precision:
    """dtype None: full fp32 (no autocast). scaler: only with fp16."""

    dtype: torch.dtype | None = None
    device_type: str = "cpu"
    scaler: torch.amp.GradScaler | None = None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device_type, dtype=self.dtype):
            yield

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def precision_for(amp: str, device: torch.device) -> Precision:
    """`train.amp` on `device`: auto is bf16 on a GPU that supports it, fp16 with a GradScaler on one that does
    not, and fp32 on the CPU (its autocast is rarely faster there). ConfigError for fp16 asked on the CPU without
    the torch support it needs."""
    kind = device.type
    if amp == "auto":
        if kind != "cuda":
            return Precision(None, kind)
        amp = "bf16" if _native_bf16() else "fp16"
    if amp == "off":
        return Precision(None, kind)
    if amp == "bf16":
        return Precision(torch.bfloat16, kind)
    if not hasattr(torch, "amp") or not hasattr(torch.amp, "GradScaler"):
        raise ConfigError("train.amp: fp16 needs torch >= 2.3 (torch.amp.GradScaler); use bf16 or off")
    return Precision(torch.float16, kind, torch.amp.GradScaler(kind))


def _native_bf16() -> bool:
    """bf16 in hardware (compute capability 8+); older GPUs emulate it slowly, where fp16 + GradScaler wins."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.4 has no including_emulation and answers for hardware support only
        return torch.cuda.is_bf16_supported()


def to_fp32(output: Any) -> Any:
    """A head's output (a dataclass of tensors) with its floating tensors in fp32, for the losses."""
    if not is_dataclass(output):
        return output
    changes = {}
    for f in fields(output):
        v = getattr(output, f.name)
        if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dtype != torch.float32:
            changes[f.name] = v.float()
    return replace(output, **changes) if changes else output  # type: ignore[type-var]

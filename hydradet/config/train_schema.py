"""The validated shape of the `train` section (hydradet/config/default.yaml documents every key)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from hydradet.config.strict import Strict


class TemperatureRatios(Strict):
    temperature: float = Field(gt=0)


class SamplingConfig(Strict):
    mode: Literal["mixed", "alternate"]
    ratios: Literal["proportional", "equal"] | TemperatureRatios


class BalanceConfig(Strict):
    """How the heads' losses combine into one step (hydradet/train/balance.py)."""

    method: Literal["fixed", "uncertainty", "dwa", "pcgrad"]
    weights: dict[str, float]
    temperature: float = Field(gt=0)
    trunk: Literal["sum", "positives", "sqrt"]

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {h: w for h, w in v.items() if not w >= 0}
        if bad:
            raise ValueError(f"weights must be >= 0; got {bad}")
        return v


class ParamGroupConfig(Strict):
    """Learning-rate multiplier and weight decay for the parameters under one module prefix."""

    lr_mult: float = Field(default=1.0, ge=0)
    weight_decay: float | None = Field(default=None, ge=0)  # None: train.weight_decay


class PhaseConfig(Strict):
    """A stage of training: so many epochs with these modules frozen."""

    epochs: int = Field(ge=1)
    freeze: list[str] = Field(default_factory=list)


class EmaConfig(Strict):
    """Model EMA (hydradet/train/ema.py): decay d(n) = decay * (1 - exp(-n / tau)) at the n-th update."""

    enabled: bool
    decay: float = Field(ge=0, lt=1)
    tau: float = Field(gt=0)


class PseudoConfig(Strict):
    """`train.pseudo`: a teacher's boxes for the detect heads a source does not label (hydradet/train/pseudo.py)."""

    enabled: bool
    teacher: Literal["ema"] | Path  # the run's own EMA, or a hydradet .safetensors file
    heads: list[str]  # [] = every detect head
    high: Literal["calibrated"] | float | None = Field(union_mode="left_to_right")
    low: float = Field(gt=0, le=1)
    start_epoch: int = Field(ge=0)
    weight: float = Field(ge=0)

    @field_validator("high")
    @classmethod
    def _high_in_range(cls, v: str | float | None) -> str | float | None:
        if isinstance(v, float) and not 0 < v <= 1:
            raise ValueError(f"expected a score in (0, 1], `calibrated` or null; got {v}")
        return v


class TrainConfig(Strict):
    epochs: int = Field(ge=0)
    batch: int = Field(ge=1)
    optimizer: Literal["sgd", "adamw"]
    lr: float = Field(gt=0)
    momentum: float = Field(ge=0, lt=1)
    weight_decay: float = Field(ge=0)
    warmup_epochs: float = Field(ge=0)
    warmup_start: float = Field(gt=0, le=1)
    final_lr: float = Field(ge=0, le=1)
    grad_clip: float = Field(ge=0)
    steps_per_epoch: int | None = Field(ge=1)
    sampling: SamplingConfig
    seed: int
    workers: int = Field(ge=0)
    device: str = Field(pattern=r"^(cpu|auto|cuda(:\d+)?)$")
    devices: int = Field(ge=1)
    amp: Literal["auto", "bf16", "fp16", "off"]
    channels_last: bool
    balance: BalanceConfig
    param_groups: dict[str, ParamGroupConfig]
    phases: list[PhaseConfig]
    freeze: list[str]
    ema: EmaConfig
    distill_old_heads: bool
    distill_weight: float = Field(ge=0)
    pseudo: PseudoConfig
    save_period: float = Field(ge=0)
    max_bad_steps: int = Field(ge=1)
    resume: Path | None
    plots: bool
    tensorboard: bool

"""The validated shape of a hydradet config. Defaults are not here: they live in default.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

BACKBONES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "shufflenet_v2_x0_5_megvii",
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HeadConfig(Strict):
    task: Literal["detect"]
    classes: list[str] = Field(min_length=1)

    @field_validator("classes")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dup = sorted({c for c in v if v.count(c) > 1})
        if dup:
            raise ValueError(f"class names must be unique; repeated: {dup}")
        return v


class SourceConfig(Strict):
    format: Literal["coco", "yolo", "voc"]
    train: Path | None = None
    val: Path | None = None
    images: Path | None = None
    labels: dict[str, dict[str, str]] = Field(min_length=1)

    @model_validator(mode="after")
    def _has_a_split(self) -> SourceConfig:
        if self.train is None and self.val is None:
            raise ValueError("a source needs `train`, `val` or both (a path to its COCO JSON or YOLO data YAML)")
        return self

    def heads(self) -> tuple[str, ...]:
        """The heads this source supervises, in config order."""
        return tuple(self.labels)


class ModelConfig(Strict):
    backbone: Literal[BACKBONES]  # type: ignore[valid-type]
    backbone_weights: Path | None
    backbone_norm: Literal["batch", "frozen"]
    neck_width: int = Field(ge=8, le=1024)
    head_convs: int = Field(ge=0, le=8)
    shared_convs: int = Field(ge=0, le=8)
    imgsz: int = Field(ge=32, le=4096, multiple_of=32)
    init: Path | None


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
    device: Literal["cpu", "cuda", "auto"]
    balance: BalanceConfig
    param_groups: dict[str, ParamGroupConfig]
    phases: list[PhaseConfig]
    freeze: list[str]
    ema: EmaConfig
    distill_old_heads: bool
    distill_weight: float = Field(ge=0)


class AugmentConfig(Strict):
    """Training-time augmentation (hydradet/data/augment.py). Evaluation and prediction never augment."""

    enabled: bool
    hflip: float = Field(ge=0, le=1)
    scale: tuple[float, float]
    min_visible: float = Field(ge=0, le=1)
    min_size: float = Field(ge=1)
    brightness: float = Field(ge=0)
    contrast: float = Field(ge=0)
    saturation: float = Field(ge=0)
    hue: float = Field(ge=0, le=0.5)

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0 < lo <= hi <= 4:
            raise ValueError(f"expected [low, high] with 0 < low <= high <= 4, e.g. [0.75, 1.25]; got {list(v)}")
        return v


class EvalConfig(Strict):
    every: int = Field(ge=1)
    conf: float = Field(ge=0, le=1)
    iou: float = Field(gt=0, le=1)
    max_det: int = Field(ge=1)
    batch: int = Field(ge=1)


class PredictConfig(Strict):
    conf: float = Field(ge=0, le=1)
    iou: float = Field(gt=0, le=1)
    max_det: int = Field(ge=1)


class Config(Strict):
    heads: dict[str, HeadConfig]
    sources: dict[str, SourceConfig]
    model: ModelConfig
    train: TrainConfig
    augment: AugmentConfig
    eval: EvalConfig
    predict: PredictConfig
    project: Path
    name: str = Field(min_length=1)

    @model_validator(mode="after")
    def _labels_name_known_heads_and_classes(self) -> Config:
        # Errors are raised with the offending key path so that the loader can name it.
        for sname, src in self.sources.items():
            for hname, mapping in src.labels.items():
                if hname not in self.heads:
                    raise KeyedError(
                        f"sources.{sname}.labels.{hname}",
                        f"unknown head {hname!r}; configured heads: {sorted(self.heads)}",
                    )
                if not mapping:
                    raise KeyedError(
                        f"sources.{sname}.labels.{hname}",
                        "empty mapping; map at least one source class, e.g. `{person: person}`",
                    )
                known = self.heads[hname].classes
                for src_cls, head_cls in mapping.items():
                    if head_cls not in known:
                        raise KeyedError(
                            f"sources.{sname}.labels.{hname}.{src_cls}",
                            f"unknown class {head_cls!r} for head {hname!r}; its classes: {known}",
                        )
        if not self.heads:
            raise KeyedError(
                "heads", "no heads configured; add e.g. `heads: {person: {task: detect, classes: [person]}}`"
            )
        if not any(s.train for s in self.sources.values()) and self.train.epochs > 0:
            raise KeyedError("sources", "no source has a `train` split, so there is nothing to train on")
        self._check_train_controls()
        return self

    def _check_train_controls(self) -> None:
        """Balancing, parameter groups and phases: every head and module they name must exist."""
        bal = self.train.balance
        for head in bal.weights:
            if head not in self.heads:
                raise KeyedError(
                    f"train.balance.weights.{head}", f"unknown head; configured heads: {sorted(self.heads)}"
                )
        if bal.weights and bal.method != "fixed":
            raise KeyedError(
                "train.balance.weights", f"per-head weights are used by method `fixed` only, not {bal.method!r}"
            )
        if bal.method == "pcgrad" and self.train.sampling.mode != "mixed":
            raise KeyedError(
                "train.balance.method",
                "pcgrad projects each head's gradient against the others', so it needs every head in each step: "
                f"it works only with train.sampling.mode=mixed (got {self.train.sampling.mode!r})",
            )
        for prefix in self.train.param_groups:
            if not self.is_module_prefix(prefix):
                raise KeyedError(f"train.param_groups.{prefix}", self._prefix_help())
        for i, phase in enumerate(self.train.phases):
            for prefix in phase.freeze:
                if not self.is_module_prefix(prefix):
                    raise KeyedError(f"train.phases.{i}.freeze", f"{prefix!r}: {self._prefix_help()}")
        for prefix in self.train.freeze:
            if not self.is_module_prefix(prefix):
                raise KeyedError("train.freeze", f"{prefix!r}: {self._prefix_help()}")
        if self.train.freeze and self.train.phases:
            raise KeyedError(
                "train.freeze",
                "give either train.freeze (the whole run) or train.phases (a freeze list per phase), not both",
            )
        if self.train.distill_old_heads and self.model.init is None:
            raise KeyedError(
                "train.distill_old_heads",
                "distillation needs the model to start from weights: set model.init=PATH/TO/best.safetensors "
                "(its heads become the old heads that the initial model teaches)",
            )

    def is_module_prefix(self, prefix: str) -> bool:
        """backbone[.*], neck[.*], heads, heads.<head>[.*]. Deeper names are checked against the model."""
        parts = prefix.split(".")
        if parts[0] in ("backbone", "neck"):
            return all(parts)
        return parts[0] == "heads" and (len(parts) == 1 or parts[1] in self.heads) and all(parts)

    def _prefix_help(self) -> str:
        heads = ", ".join(f"heads.{h}" for h in self.heads)
        return f"unknown module prefix; expected backbone, neck, heads or one of: {heads}"

    def source_heads(self) -> dict[str, tuple[str, ...]]:
        """Source name -> the heads it supervises: the one rule's table."""
        return {name: src.heads() for name, src in self.sources.items()}


class KeyedError(ValueError):
    """A validation error that knows which config key it is about."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message

"""The validated shape of a hydradet config. Defaults are not here: they live in default.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from hydradet.config.strict import Strict
from hydradet.config.train_schema import TrainConfig

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


TASKS = ("detect", "classify", "regress")
IMAGE_TASKS = ("classify", "regress")  # one label per image: their sources are csv files


class HeadConfig(Strict):
    task: Literal["detect", "classify", "regress"]
    # detect, classify: the class names in order (ids index this list); regress: none. Checked per task by Config.
    classes: list[str] = Field(default_factory=list)
    # regress only: the head predicts (value - mean) / std; None = the train split's, filled in at start.
    mean: float | None = None
    std: float | None = Field(default=None, gt=0)

    @field_validator("classes")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dup = sorted({c for c in v if v.count(c) > 1})
        if dup:
            raise ValueError(f"class names must be unique; repeated: {dup}")
        return v


class ColumnLabel(Strict):
    """A csv source's label for an image-level head: the CSV column, and for classify how its cells name classes."""

    column: str = Field(min_length=1)
    values: dict[str, str] | None = None  # CSV cell -> head class; None: the cell is the class name


class SourceConfig(Strict):
    format: Literal["coco", "yolo", "voc", "csv"]
    train: Path | None = None
    val: Path | None = None
    images: Path | None = None
    image_column: str | None = None  # csv only; None: the CSV's first column
    # detect heads: {SOURCE_CLASS: HEAD_CLASS}; csv sources: a ColumnLabel per head (`_column_labels` builds them)
    labels: dict[str, Annotated[dict[str, str] | ColumnLabel, Field(union_mode="left_to_right")]] = Field(min_length=1)

    @field_validator("labels", mode="before")
    @classmethod
    def _column_labels(cls, v: Any, info: ValidationInfo) -> Any:
        """A csv source names a column per head: `{age: age}` is short for `{age: {column: age}}`, and YAML's
        number keys under `values` (`{0: male}`) are the CSV cells as text."""
        if not isinstance(v, dict):
            return v
        if info.data.get("format") != "csv":
            for head, mapping in v.items():
                if not isinstance(mapping, dict) or not all(isinstance(x, str) for kv in mapping.items() for x in kv):
                    raise ValueError(
                        f"head {head!r}: expected SOURCE_CLASS: HEAD_CLASS names, e.g. {{person: person}}; "
                        f"got {mapping!r}"
                    )
            return v
        out = {}
        for head, spec in v.items():
            if isinstance(spec, str):
                spec = {"column": spec}
            if not isinstance(spec, dict):
                raise ValueError(f"head {head!r}: expected a column name or {{column: NAME, values: {{CELL: CLASS}}}}")
            spec = dict(spec)
            if isinstance(spec.get("values"), dict):
                spec["values"] = {str(k): v for k, v in spec["values"].items()}
            try:
                out[head] = ColumnLabel.model_validate(spec)
            except ValidationError as e:
                problems = "; ".join(f"{'.'.join(map(str, x['loc'])) or head}: {x['msg']}" for x in e.errors())
                raise ValueError(
                    f"head {head!r}: {problems}. A csv source labels a head with {{column: NAME}} (regress, or "
                    "classify with cells that are class names) or {column: NAME, values: {CELL: CLASS}}"
                ) from None
        return out

    @model_validator(mode="after")
    def _has_a_split(self) -> SourceConfig:
        if self.train is None and self.val is None:
            raise ValueError(
                "a source needs `train`, `val` or both (a path to its COCO JSON, YOLO data YAML, VOC root or CSV)"
            )
        return self

    def heads(self) -> tuple[str, ...]:
        """The heads this source supervises, in config order."""
        return tuple(self.labels)


class ModelConfig(Strict):
    backbone: str  # one of BACKBONES, or timm:NAME
    backbone_weights: Literal["pretrained"] | Path | None
    backbone_norm: Literal["batch", "frozen", "syncbatch"]
    neck_width: int = Field(ge=8, le=1024)
    head_convs: int = Field(ge=0, le=8)
    shared_convs: int = Field(ge=0, le=8)
    imgsz: int = Field(ge=32, le=4096, multiple_of=32)
    init: Path | None
    assigner: Literal["fcos", "atss"]
    cls_target: Literal["one", "iou"]
    loss_norm: Literal["batch", "running"]
    head_conv: Literal["full", "separable"]

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        if name.startswith("timm:"):
            from hydradet.model.timm_backbone import check_timm_name

            return "timm:" + check_timm_name(name.removeprefix("timm:"))
        if name not in BACKBONES:
            raise ValueError(
                f"unknown backbone {name!r}; expected one of {list(BACKBONES)} or timm:NAME (any timm model)"
            )
        return name


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
    mosaic: float = Field(ge=0, le=1)
    close_mosaic: int = Field(ge=0)

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
    agnostic: bool


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
    def _labels_name_known_heads_and_classes(self, info: ValidationInfo) -> Config:
        # Errors are raised with the offending key path so that the loader can name it.
        self._check_heads()
        for sname, src in self.sources.items():
            if src.image_column is not None and src.format != "csv":
                raise KeyedError(f"sources.{sname}.image_column", "only csv sources have an image column")
            for hname, mapping in src.labels.items():
                if hname not in self.heads:
                    raise KeyedError(
                        f"sources.{sname}.labels.{hname}",
                        f"unknown head {hname!r}; configured heads: {sorted(self.heads)}",
                    )
                self._check_label(sname, src.format, hname, mapping)
        if not self.heads:
            raise KeyedError(
                "heads", "no heads configured; add e.g. `heads: {person: {task: detect, classes: [person]}}`"
            )
        evaluate_only = (info.context or {}).get("evaluate_only")  # `hydradet val`: val splits suffice (load.py)
        if not any(s.train for s in self.sources.values()) and self.train.epochs > 0 and not evaluate_only:
            raise KeyedError("sources", "no source has a `train` split, so there is nothing to train on")
        self._check_train_controls()
        self._check_pseudo()
        return self

    def _check_heads(self) -> None:
        for name, head in self.heads.items():
            key = f"heads.{name}.classes"
            if head.task == "detect" and not head.classes:
                raise KeyedError(key, "a detect head needs its class names, e.g. `classes: [person]`")
            if head.task == "classify" and len(head.classes) < 2:
                raise KeyedError(
                    key, f"a classify head needs at least 2 classes, e.g. [male, female]; got {head.classes}"
                )
            if head.task == "regress" and head.classes:
                raise KeyedError(key, "a regress head predicts one number and has no classes; remove `classes`")
            if head.task != "regress" and (head.mean is not None or head.std is not None):
                raise KeyedError(f"heads.{name}.{'mean' if head.mean is not None else 'std'}", "for regress heads only")

    def _check_label(self, sname: str, fmt: str, hname: str, mapping: dict[str, str] | ColumnLabel) -> None:
        """A detect head takes boxes from coco/yolo/voc sources; an image-level head takes a csv column."""
        key, head = f"sources.{sname}.labels.{hname}", self.heads[hname]
        if head.task == "detect" and fmt == "csv":
            raise KeyedError(
                key,
                f"{hname!r} is a detect head: its boxes come from a coco, yolo or voc source, "
                "while a csv source labels classify and regress heads (one label per image)",
            )
        if head.task in IMAGE_TASKS and fmt != "csv":
            raise KeyedError(
                key,
                f"{hname!r} is a {head.task} head: its labels come from a csv source "
                f"(`format: csv`, a column per head), not from a {fmt} source",
            )
        if isinstance(mapping, ColumnLabel):
            if mapping.values is None:
                return
            if head.task == "regress":
                raise KeyedError(f"{key}.values", "a regress column holds numbers; `values` is for classify heads")
            for cell, cls in mapping.values.items():
                if cls not in head.classes:
                    raise KeyedError(
                        f"{key}.values.{cell}", f"unknown class {cls!r} for head {hname!r}; its classes: {head.classes}"
                    )
            return
        if not mapping:
            raise KeyedError(key, "empty mapping; map at least one source class, e.g. `{person: person}`")
        for src_cls, head_cls in mapping.items():
            if head_cls not in head.classes:
                raise KeyedError(
                    f"{key}.{src_cls}", f"unknown class {head_cls!r} for head {hname!r}; its classes: {head.classes}"
                )

    def _check_train_controls(self) -> None:
        """Balancing, parameter groups and phases: every head and module they name must exist."""
        bal = self.train.balance
        for head in bal.weights:
            if head not in self.heads:
                raise KeyedError(
                    f"train.balance.weights.{head}", f"unknown head; configured heads: {sorted(self.heads)}"
                )
        if bal.trunk != "sum" and self.model.loss_norm != "running":
            raise KeyedError(
                "train.balance.trunk",
                f"`{bal.trunk}` weighs heads by their running positive counts, kept with model.loss_norm=running; "
                "set model.loss_norm=running, or train.balance.trunk=sum",
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

    def _check_pseudo(self) -> None:
        """train.pseudo: its heads are detect heads, its teacher can exist, and it is not mixed with distillation."""
        ps = self.train.pseudo
        if not ps.enabled:
            return
        for head in ps.heads:
            if head not in self.heads or self.heads[head].task != "detect":
                detect = sorted(h for h, c in self.heads.items() if c.task == "detect")
                raise KeyedError("train.pseudo.heads", f"{head!r} is not a detect head; detect heads: {detect}")
        if not any(h.task == "detect" for h in self.heads.values()):
            raise KeyedError("train.pseudo.enabled", "pseudo-labels are boxes: the config has no detect head")
        if self.train.distill_old_heads:
            raise KeyedError(
                "train.pseudo.enabled",
                "train.pseudo and train.distill_old_heads both teach heads on other sources' images; choose one "
                "(train.pseudo.teacher=PATH with your model.init file is the same teacher, as boxes)",
            )
        if ps.teacher != "ema":
            return
        if not self.train.ema.enabled:
            raise KeyedError(
                "train.pseudo.teacher", "`ema` needs train.ema.enabled=true, or give a weights file as the teacher"
            )
        if ps.high != "calibrated":
            return
        no_val = [h for h in self.pseudo_heads() if not any(s.val and h in s.labels for s in self.sources.values())]
        if no_val:
            raise KeyedError(
                "train.pseudo.high",
                f"`calibrated` is measured on each head's val data, and head(s) {', '.join(no_val)} have none: add a "
                "source with a val split labelling them, or give a number, e.g. train.pseudo.high=0.5",
            )
        if self.eval.every > ps.start_epoch:
            raise KeyedError(
                "train.pseudo.high",
                f"`calibrated` takes the EMA's F1-optimal conf from an evaluation, and none happens before the teacher "
                f"starts (train.pseudo.start_epoch={ps.start_epoch}, eval.every={self.eval.every}): set "
                f"eval.every <= train.pseudo.start_epoch (>= 1), or a number, e.g. train.pseudo.high=0.5",
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

    def pseudo_heads(self) -> tuple[str, ...]:
        """The detect heads `train.pseudo` teaches (train/pseudo.py): train.pseudo.heads, or every detect head."""
        return tuple(self.train.pseudo.heads) or tuple(h for h, c in self.heads.items() if c.task == "detect")

    def source_heads(self) -> dict[str, tuple[str, ...]]:
        """Source name -> the heads it supervises: the one rule's table."""
        return {name: src.heads() for name, src in self.sources.items()}


class KeyedError(ValueError):
    """A validation error that knows which config key it is about."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message

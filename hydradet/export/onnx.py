"""Export to ONNX with one group of outputs per head.

Input `images`: float32 (batch, 3, imgsz, imgsz), RGB in [0, 1], letterboxed: the longer side resized to imgsz
(scale = imgsz / max(h, w)), padded right and bottom with grey 114/255. Boxes come out in those letterboxed
pixels; divide by scale for original pixels (the padding never shifts them). batch is 1, or a dynamic axis with
`dynamic_batch`.

Outputs per head, after NMS (the default):
  `<head>_boxes` (batch, max_det, 4) float32 xyxy; `<head>_scores` (batch, max_det) float32, best first;
  `<head>_class_ids` (batch, max_det) int64, an index into the head's classes. Rows past an image's detections
  are padding: boxes 0, score 0, class id -1. conf, NMS IoU, max_det and agnostic (one NMS over all of a head's
  classes) are baked in per head (metadata `nms`).
Image-level heads, the same with or without `raw`: a classify head gives `<head>_probs` (batch, C) float32 class
probabilities (softmax); a regress head `<head>_value` (batch,) float32, in the label's units.
Raw outputs per head (`raw=True`), for your own NMS:
  `<head>_boxes` (batch, L, 4) xyxy and `<head>_scores` (batch, L, C) = sqrt(class probability x centerness),
  for all L locations of the stride 8/16/32 grids.

Opset 17 by default, or newer with `opset` (NonMaxSuppression needs >= 11; the tests check 17 in onnxruntime).
Traced with torch's TorchScript-based exporter (`dynamo=False`): it maps our NMS to the one ONNX node with a
symbolic function, which the dynamo exporter would need onnxscript for. `metadata_props` carry the heads, classes,
imgsz, the letterbox convention and the NMS settings, so a runtime needs nothing else.
"""

from __future__ import annotations

import copy
import importlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hydradet.errors import MissingDependency
from hydradet.export.nms import decode, nms_padded
from hydradet.infer.settings import HeadSettings, SettingError, default_settings, resolve, select_heads
from hydradet.model.detector import HydraDetector

FORMAT_VERSION = 1
DEFAULT_OPSET = 17
LETTERBOX = (
    "resize the longer side to imgsz keeping the aspect ratio (scale = imgsz / max(h, w)); pad right and bottom "
    "to imgsz x imgsz with 114/255; boxes / scale = original pixels"
)
INPUT = "images: float32 (batch, 3, imgsz, imgsz), RGB in [0, 1]"
PADDING = "rows past an image's detections: boxes 0, scores 0, class_ids -1; detections sorted by score"


def require(name: str) -> Any:
    """Import an optional dependency of export / ONNX prediction, or say how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise MissingDependency(f"this needs the {name} package: pip install 'hydradet[export]'") from None


class ExportModule(nn.Module):
    """The detector plus decoding (and NMS unless raw), for the chosen heads only: other heads are not traced,
    so they are not in the file."""

    def __init__(self, model: HydraDetector, heads: list[str], nms: dict[str, HeadSettings] | None) -> None:
        super().__init__()
        self.model, self.head_names, self.nms = model, heads, nms

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        outs = self.model(images, dict.fromkeys(self.head_names))
        result: list[Tensor] = []
        for h in self.head_names:
            if self.model.head_cfgs[h].task != "detect":
                result.append(self.model.heads[h].postprocess(outs[h]))  # type: ignore[operator]
                continue
            boxes, scores = decode(outs[h])  # type: ignore[arg-type]
            if self.nms is None:
                result += [boxes, scores]
            else:
                s = self.nms[h]
                result += nms_padded(boxes, scores, s.conf, s.iou, s.max_det, agnostic=s.agnostic)
        return tuple(result)


def output_names(heads: list[str], raw: bool, tasks: dict[str, str] | None = None) -> list[str]:
    """The file's outputs, per head in order; `tasks` (head -> task) default: every head detects."""
    kinds = {
        "detect": ("boxes", "scores") if raw else ("boxes", "scores", "class_ids"),
        "classify": ("probs",),
        "regress": ("value",),
    }
    return [f"{h}_{k}" for h in heads for k in kinds[(tasks or {}).get(h, "detect")]]


def export_onnx(
    model: HydraDetector,
    out: Path,
    heads: list[str] | str | None = None,
    imgsz: int | None = None,
    dynamic_batch: bool = False,
    raw: bool = False,
    conf: float | dict[str, float] | None = None,
    iou: float | dict[str, float] | None = None,
    max_det: int | None = None,
    opset: int = DEFAULT_OPSET,
    agnostic: bool | dict[str, bool] | None = None,
) -> Path:
    """Write `out` (.onnx) and return it. conf/iou/max_det/agnostic (NMS only) default as for predicting with the
    weights: each head's calibrated conf when the weights carry one, else `predict:` in default.yaml."""
    onnx = require("onnx")

    names = select_heads(heads, list(model.heads))
    size = imgsz or model.model_cfg.imgsz
    if size < 32 or size % 32:
        raise SettingError(f"imgsz: {size} must be a multiple of 32, >= 32")
    if opset < DEFAULT_OPSET:
        raise SettingError(f"opset: {opset}; hydradet exports opset {DEFAULT_OPSET} or newer")
    base = default_settings(model.heads, model.calibrated_conf)
    tasks = {h: model.head_cfgs[h].task for h in names}
    nms = None if raw else resolve([h for h in names if tasks[h] == "detect"], base, conf, iou, max_det, agnostic)

    # A copy: tracing runs on the CPU, and the caller's model may be serving predictions on a GPU.
    module = ExportModule(copy.deepcopy(model).eval().cpu(), names, nms).eval()
    # Two images when the batch is dynamic, so that no op gets specialised to a batch of one while tracing.
    example = torch.rand(2 if dynamic_batch else 1, 3, size, size)
    outputs = output_names(names, raw, tasks)
    axes = {n: {0: "batch"} for n in ["images", *outputs]} if dynamic_batch else None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer's warnings are about Python control flow in eager-only code paths; nothing a user can act on.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(out),
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=outputs,
            dynamic_axes=axes,
        )
    proto = onnx.load(str(out))
    with torch.no_grad():
        _name_static_dims(proto, module(example))
    meta = metadata(model, names, size, dynamic_batch, nms, opset)
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"hydradet detector, heads {names}; see metadata_props"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return out


def _name_static_dims(proto: Any, examples: tuple[Tensor, ...]) -> None:
    """Write every output's shape into the file: the tracer leaves some fixed sizes (locations, classes) as
    symbols once the batch is dynamic, and runtimes allocate better, and readers understand more, with numbers."""
    for output, example in zip(proto.graph.output, examples, strict=True):
        dims = output.type.tensor_type.shape.dim
        for i, size in enumerate(example.shape):
            if i == 0 and dims[0].dim_param == "batch":
                continue
            if i > 0 or not dims[i].dim_param:
                dims[i].Clear()
                dims[i].dim_value = size


def metadata(
    model: HydraDetector,
    heads: list[str],
    imgsz: int,
    dynamic_batch: bool,
    nms: dict[str, HeadSettings] | None,
    opset: int,
) -> dict[str, str]:
    """String -> string, as ONNX stores it; structured values are JSON."""
    meta: dict[str, Any] = {
        "hydradet_format": FORMAT_VERSION,
        "heads": heads,
        "classes": {h: model.head_cfgs[h].classes for h in heads},
        "tasks": {h: model.head_cfgs[h].task for h in heads},
        "imgsz": imgsz,
        "batch": "dynamic" if dynamic_batch else 1,
        "input": INPUT,
        "letterbox": LETTERBOX,
        "outputs": "raw" if nms is None else "nms",
        "opset": opset,
        "backbone": model.model_cfg.backbone,
    }
    if nms is not None:
        meta["nms"] = {
            h: {"conf": s.conf, "iou": s.iou, "max_det": s.max_det, "agnostic": s.agnostic} for h, s in nms.items()
        }
        meta["padding"] = PADDING
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}

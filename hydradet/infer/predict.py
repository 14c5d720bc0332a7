"""The prediction loop shared by every backend: frames -> letterboxed batches -> per-head detections (or, for
image-level heads, class probabilities / values) -> results in original image pixels. And the PyTorch backend:
the model from a weights file, only the requested heads run."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from hydradet.data.dataset import letterbox, unletterbox
from hydradet.infer.results import ClassifyResult, HeadResult, RegressResult, Result
from hydradet.infer.settings import HeadSettings, SettingError, default_settings
from hydradet.infer.sources import Frame
from hydradet.model.detect_head import Detections
from hydradet.model.detector import HydraDetector


class Backend(Protocol):
    """What runs a letterboxed batch: PyTorch here, onnxruntime in onnx_backend.py."""

    classes: dict[str, list[str]]  # every head -> its classes, in model order
    tasks: dict[str, str]  # every head -> detect | classify | regress
    imgsz: int  # the size it runs at unless asked otherwise

    def defaults(self) -> dict[str, HeadSettings]: ...

    def check_imgsz(self, imgsz: int | None) -> int: ...

    def check_settings(self, settings: dict[str, HeadSettings]) -> None:
        """Raise SettingError for settings this backend cannot honour."""
        ...

    def detect(self, images: Tensor, settings: dict[str, HeadSettings]) -> dict[str, list[Detections | Tensor]]:
        """images: (B, 3, S, S) float RGB in [0, 1], letterboxed. Per head and image: detections in letterboxed
        pixels; for classify heads (C,) probabilities, for regress heads a () value (settings do not apply)."""
        ...


class TorchBackend:
    def __init__(self, model: HydraDetector, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.classes = {h: list(c.classes) for h, c in model.head_cfgs.items()}
        self.tasks = {h: c.task for h, c in model.head_cfgs.items()}
        self.imgsz = model.model_cfg.imgsz

    def defaults(self) -> dict[str, HeadSettings]:
        return default_settings(self.classes, self.model.calibrated_conf)

    def check_imgsz(self, imgsz: int | None) -> int:
        size = imgsz or self.imgsz
        if size < 32 or size % 32:
            raise SettingError(f"imgsz: {size} must be a multiple of 32 (the model's largest stride), >= 32")
        return size

    def check_settings(self, settings: dict[str, HeadSettings]) -> None:
        pass  # the model applies any thresholds

    @torch.inference_mode()
    def detect(self, images: Tensor, settings: dict[str, HeadSettings]) -> dict[str, list[Detections | Tensor]]:
        # Naming only the requested heads means the others never run: one backbone pass, no wasted head.
        out = self.model(images.to(self.device), dict.fromkeys(settings))
        return {
            h: self.model.heads[h].postprocess(out[h], s.conf, s.iou, s.max_det, agnostic=s.agnostic)
            if self.tasks[h] == "detect"
            else list(self.model.heads[h].postprocess(out[h]).cpu())
            for h, s in settings.items()
        }


def run(
    backend: Backend, source: Iterable[Frame], settings: dict[str, HeadSettings], imgsz: int, batch: int
) -> Iterator[Result]:
    """Results in the order of the frames; `batch` frames share one forward pass."""
    for chunk in _chunks(source, batch):
        # torch cannot wrap a read-only array (PIL's, or a caller's) without a warning: copy only those.
        arrays = [f.image if f.image.flags.writeable else f.image.copy() for f in chunk]
        boxed = [letterbox(torch.from_numpy(a).permute(2, 0, 1), imgsz) for a in arrays]
        x = torch.stack([b for b, _ in boxed]).float().div_(255)
        dets = backend.detect(x, settings)
        for i, f in enumerate(chunk):
            size = (f.image.shape[1], f.image.shape[0])
            heads = {h: _head_result(dets[h][i], boxed[i][1], size, backend.classes[h]) for h in settings}
            yield Result(heads, f.image, f.path, f.frame, backend.classes, f.time)


def _head_result(
    d: Detections | Tensor, scale: float, size: tuple[int, int], names: list[str]
) -> HeadResult | ClassifyResult | RegressResult:
    if isinstance(d, Tensor):  # an image-level head: (C,) probabilities, or a () value
        if d.ndim == 0:
            return RegressResult(float(d))
        return ClassifyResult(d.detach().float().cpu().numpy(), names)
    boxes = unletterbox(d.boxes.detach().float().cpu(), scale, size)
    ids = d.labels.detach().cpu().numpy().astype(np.int64)
    return HeadResult(
        boxes.numpy().astype(np.float32),
        d.scores.detach().float().cpu().numpy(),
        ids,
        [names[c] for c in ids],
    )


def _chunks(items: Iterable[Frame], n: int) -> Iterator[list[Frame]]:
    chunk: list[Frame] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk

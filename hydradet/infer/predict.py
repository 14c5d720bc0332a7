"""Predict with a trained model: images in, per-head detections in original image pixels out."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from hydradet.data.dataset import letterbox, load_image, unletterbox
from hydradet.data.yolo import IMAGE_SUFFIXES
from hydradet.model.detector import HydraDetector


@dataclass
class HeadResult:
    boxes: list[list[float]]  # xyxy, original image pixels
    scores: list[float]
    class_ids: list[int]
    names: list[str]


@dataclass
class ImageResult:
    path: Path
    width: int
    height: int
    heads: dict[str, HeadResult]

    def to_json(self) -> dict:
        return {
            "image": str(self.path),
            "width": self.width,
            "height": self.height,
            "heads": {
                h: [
                    {"box": [round(v, 2) for v in b], "score": round(s, 4), "class_id": c, "class": n}
                    for b, s, c, n in zip(r.boxes, r.scores, r.class_ids, r.names, strict=True)
                ]
                for h, r in self.heads.items()
            },
        }


def list_images(inputs: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such image or folder")
    return out


class Predictor:
    def __init__(
        self,
        model: HydraDetector,
        heads: list[str] | None = None,
        conf: float = 0.25,
        iou: float = 0.5,
        max_det: int = 100,
        imgsz: int | None = None,
        batch: int = 8,
        device: str | torch.device = "cpu",
    ) -> None:
        unknown = sorted(set(heads or []) - set(model.heads))
        if unknown:
            raise ValueError(f"unknown heads {unknown}; this model has {list(model.heads)}")
        self.model = model.eval().to(device)
        self.heads = heads or list(model.heads)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.imgsz = imgsz or model.model_cfg.imgsz
        self.batch, self.device = batch, torch.device(device)

    def __call__(self, paths: list[Path]) -> Iterator[ImageResult]:
        for start in range(0, len(paths), self.batch):
            chunk = paths[start : start + self.batch]
            images = [load_image(p) for p in chunk]
            boxed = [letterbox(im, self.imgsz) for im in images]
            x = torch.stack([b[0] for b in boxed]).float().div_(255).to(self.device)
            with torch.no_grad():
                outputs = self.model(x, dict.fromkeys(self.heads))
                dets = {
                    h: self.model.heads[h].postprocess(outputs[h], self.conf, self.iou, self.max_det)
                    for h in self.heads
                }
            for i, (path, im) in enumerate(zip(chunk, images, strict=True)):
                h_img, w_img = im.shape[-2:]
                scale = boxed[i][1]
                per_head = {}
                for h in self.heads:
                    d = dets[h][i]
                    b = unletterbox(d.boxes.cpu(), scale, (w_img, h_img))
                    names = self.model.head_cfgs[h].classes
                    ids = d.labels.cpu().tolist()
                    per_head[h] = HeadResult(b.tolist(), d.scores.cpu().tolist(), ids, [names[c] for c in ids])
                yield ImageResult(path, w_img, h_img, per_head)

"""One image's predictions, per head: detections in original image pixels, or an image-level verdict (classify:
class probabilities; regress: a value); drawn, saved, or converted for other tools."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class HeadResult:
    boxes: np.ndarray  # (N, 4) float32 xyxy, original image pixels
    scores: np.ndarray  # (N,) float32, highest first
    class_ids: np.ndarray  # (N,) int64: index into the head's classes
    names: list[str]  # (N,) the class name of each detection
    # (N,) int64 track ids from `Model.track` (ByteTrack, one tracker per head: ids of different heads are
    # independent); None when not tracking.
    track_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def labels(self, head: str) -> list[str]:
        """What a picture writes on each box: `head:class score`, and `#id` when tracked."""
        ids = [f" #{t}" for t in self.track_ids.tolist()] if self.track_ids is not None else [""] * len(self)
        return [f"{head}:{n} {s:.2f}{t}" for n, s, t in zip(self.names, self.scores.tolist(), ids, strict=True)]


@dataclass
class ClassifyResult:
    """A classify head's verdict on the whole image (Ultralytics' `Probs`: top1, top1conf, top5)."""

    probs: np.ndarray  # (C,) float32, summing to 1, in the head's class order
    classes: list[str]

    @property
    def top1(self) -> int:
        return int(self.probs.argmax())

    @property
    def top1conf(self) -> float:
        return float(self.probs.max())

    @property
    def name(self) -> str:
        return self.classes[self.top1]

    @property
    def top5(self) -> list[int]:
        return [int(i) for i in np.argsort(-self.probs, kind="stable")[:5]]

    def __len__(self) -> int:
        return 1

    def text(self) -> str:
        return f"{self.name} {self.top1conf:.2f}"


@dataclass
class RegressResult:
    """A regress head's value for the whole image, in the label's units."""

    value: float

    def __len__(self) -> int:
        return 1

    def text(self) -> str:
        return f"{self.value:.4g}"


ImageVerdict = ClassifyResult | RegressResult


@dataclass
class Result:
    heads: dict[str, HeadResult | ImageVerdict]  # only the heads that ran
    orig_img: np.ndarray = field(repr=False)  # (H, W, 3) uint8 RGB
    path: Path | None = None  # the image or video file; None for an in-memory image
    frame: int | None = None  # frame number, for a video
    classes: dict[str, list[str]] = field(default_factory=dict)  # every head of the model -> its classes
    time: float | None = None  # a video frame's presentation time (its PTS), seconds from the video's start

    @property
    def width(self) -> int:
        return int(self.orig_img.shape[1])

    @property
    def height(self) -> int:
        return int(self.orig_img.shape[0])

    def plot(self, labels: bool = True) -> np.ndarray:
        """The image with boxes drawn, one colour per head: (H, W, 3) uint8 RGB (not OpenCV's BGR)."""
        return np.asarray(self._draw(labels))

    def save(self, path: str | Path) -> Path:
        """Write the drawn image; the suffix picks the format (.jpg, .png, ...)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._draw().save(path, **({"quality": 90} if path.suffix.lower() in (".jpg", ".jpeg") else {}))
        return path

    def _draw(self, labels: bool = True) -> Any:
        # Imported here: a Result holds predictions and needs no drawing code until it is drawn (draw.py takes
        # plain arrays and strings and does not know this class).
        from hydradet.infer.draw import draw

        heads = {
            h: (r.boxes, r.labels(h)) if isinstance(r, HeadResult) else f"{h}: {r.text()}"
            for h, r in self.heads.items()
        }
        return draw(self.orig_img, heads, list(self.classes) or list(self.heads), labels=labels)

    def to_coco(self, image_id: int | str | None = None) -> list[dict[str, Any]]:
        """COCO detection results: bbox [x, y, w, h] in pixels; category_id indexes the head's classes, so each
        head is evaluated against its own categories. image_id defaults to the file name's number (COCO's
        000000000139.jpg -> 139), else its stem."""
        if image_id is None:
            stem = self.path.stem if self.path is not None else ""
            image_id = int(stem) if stem.isdigit() else stem
            if self.frame is not None:
                image_id = f"{stem}#{self.frame}"
        out = []
        for head, r in self.detections().items():
            rows = zip(r.boxes.tolist(), r.scores.tolist(), r.class_ids.tolist(), r.names, strict=True)
            for (x0, y0, x1, y1), score, cid, name in rows:
                out.append(
                    {
                        "image_id": image_id,
                        "head": head,
                        "category_id": int(cid),
                        "category_name": name,
                        "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                        "score": round(score, 5),
                    }
                )
        return out

    def to_supervision(self) -> dict[str, Any]:
        """{head: supervision.Detections}: one per head, because class ids of different heads mean different
        things. Class names are in `data["class_name"]`, as supervision's own converters put them."""
        try:
            import supervision as sv
        except ImportError:
            raise ImportError("to_supervision() needs the supervision package: pip install supervision") from None
        out = {}
        for head, r in self.detections().items():
            tracked = {} if r.track_ids is None else {"tracker_id": r.track_ids.astype(int)}  # from Model.track
            out[head] = sv.Detections(
                xyxy=r.boxes.astype(np.float32),
                confidence=r.scores.astype(np.float32),
                class_id=r.class_ids.astype(int),
                data={"class_name": np.array(r.names, dtype=str)},
                **tracked,
            )
        return out

    def detections(self) -> dict[str, HeadResult]:
        """The detect heads' results (image-level heads left out)."""
        return {h: r for h, r in self.heads.items() if isinstance(r, HeadResult)}

    def to_json(self) -> dict[str, Any]:
        """The record `hydradet predict` writes: per head, box (xyxy px), score, class id and name."""
        out: dict[str, Any] = {"image": str(self.path) if self.path is not None else None}
        if self.frame is not None:
            out["frame"] = self.frame
        if self.time is not None:
            out["time"] = round(self.time, 6)
        out |= {"width": self.width, "height": self.height}
        out["heads"] = {head: _json(r) for head, r in self.heads.items()}
        return out

    def __repr__(self) -> str:
        where = "image" if self.path is None else str(self.path)
        where += f"#{self.frame}" if self.frame is not None else ""
        found = ", ".join(f"{h}: {len(r) if isinstance(r, HeadResult) else r.text()}" for h, r in self.heads.items())
        return f"Result({where} {self.width}x{self.height}; {found})"


def _json(r: HeadResult | ImageVerdict) -> Any:
    """detect: a list of boxes (with `track_id` when tracked); classify: the top class, its score and every class's
    probability; regress: value."""
    if isinstance(r, ClassifyResult):
        probs = {c: round(float(p), 4) for c, p in zip(r.classes, r.probs.tolist(), strict=True)}
        return {"class_id": r.top1, "class": r.name, "score": round(r.top1conf, 4), "probs": probs}
    if isinstance(r, RegressResult):
        return {"value": round(r.value, 4)}
    boxes = [
        {"box": [round(v, 2) for v in b], "score": round(s, 4), "class_id": int(c), "class": n}
        for b, s, c, n in zip(r.boxes.tolist(), r.scores.tolist(), r.class_ids, r.names, strict=True)
    ]
    if r.track_ids is not None:
        for box, t in zip(boxes, r.track_ids.tolist(), strict=True):
            box["track_id"] = int(t)
    return boxes

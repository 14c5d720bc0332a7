"""`hydradet predict`: images, folders, globs and videos -> an output folder, a progress bar and a summary.

Images: one drawn picture each plus predictions.json (a list of records). Videos: <stem>.mp4 (annotated) plus
<stem>.jsonl (one record per frame).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hydradet.infer.model import Model
from hydradet.infer.results import ClassifyResult, RegressResult, Result
from hydradet.infer.sources import count, expand, is_video
from hydradet.infer.video import predict_video


@dataclass
class Summary:
    heads: list[str]
    images: int = 0
    videos: int = 0
    frames: int = 0  # images plus video frames
    seconds: float = 0.0
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (head, class) -> detections

    def add(self, result: Result) -> None:
        self.frames += 1
        for head, r in result.heads.items():
            if isinstance(r, ClassifyResult):
                self.counts[(head, r.name)] += 1  # images per predicted class
            elif isinstance(r, RegressResult):
                self.counts[(head, "(value)")] += 1
            else:
                self.counts.update((head, name) for name in r.names)

    def table(self) -> str:
        per = f" ({1000 * self.seconds / self.frames:.0f} ms each)" if self.frames else ""
        lines = [
            f"{self.images} images, {self.videos} videos: {self.frames} frames in {self.seconds:.1f} s{per}",
            f"{'head':<12} {'class':<20} {'detections':>10}",  # image-level heads: images per class
        ]
        for head in self.heads:
            rows = sorted(((c, n) for (h, c), n in self.counts.items() if h == head), key=lambda x: -x[1])
            for cls, n in rows or [("-", 0)]:
                lines.append(f"{head:<12} {cls:<20} {n:>10}")
        return "\n".join(lines)


def predict_to_folder(
    model: Model, inputs: list[str], out: Path, progress: bool = True, **options: Any
) -> tuple[Summary, list[Path]]:
    """Predict on everything `inputs` names; returns the summary and the files written."""
    settings, _size = model.settings(**options)  # bad settings fail here, before any work
    items = [p for p in expand(inputs) if isinstance(p, Path)]
    images = [p for p in items if not is_video(p)]
    videos = [p for p in items if is_video(p)]
    summary = Summary(heads=list(settings), images=len(images), videos=len(videos))
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    used: set[str] = set()
    t0 = time.perf_counter()
    with tqdm(total=count(items), desc="predict", unit="frame", disable=not progress) as bar:
        records = []
        for result in model.predict(images, stream=True, **options):
            assert result.path is not None
            written.append(result.save(out / _unique(result.path.stem, ".jpg", used)))
            records.append(result.to_json())
            summary.add(result)
            bar.update()
        if images:
            (out / "predictions.json").write_text(json.dumps(records, indent=1))
            written.append(out / "predictions.json")

        def on_frame(result: Result) -> None:
            summary.add(result)
            bar.update()

        for video in videos:
            name = Path(_unique(video.stem, ".mp4", used)).stem
            written += predict_video(model, video, out, on_result=on_frame, name=name, **options)
    summary.seconds = time.perf_counter() - t0
    return summary, written


def _unique(stem: str, suffix: str, used: set[str]) -> str:
    """Two inputs with the same name (from different folders) must not overwrite each other's output."""
    name, n = f"{stem}{suffix}", 2
    while name in used:
        name, n = f"{stem}_{n}{suffix}", n + 1
    used.add(name)
    return name

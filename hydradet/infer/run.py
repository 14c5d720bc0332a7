"""`hydradet predict` and `hydradet track`: inputs -> an output folder, a progress bar and a summary.

predict: images, folders, globs and videos. Images: one drawn picture each plus predictions.json (a list of
records). Videos: <stem>.mp4 (annotated) plus <stem>.jsonl (one record per frame).
track: videos, each as predict writes them, with a track id on every box (drawn and in the JSON lines); the
summary counts unique tracks per head and class.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hydradet.infer.model import Model
from hydradet.infer.results import ClassifyResult, RegressResult, Result
from hydradet.infer.settings import HeadSettings, SettingError
from hydradet.infer.sources import count, expand, is_video
from hydradet.infer.track import TrackCounts
from hydradet.infer.video import VideoWriter, frame_rate

MAX_NAMED = 5  # skipped inputs named in the summary


@dataclass
class Summary:
    heads: list[str]
    images: int = 0
    videos: int = 0
    frames: int = 0  # images plus video frames
    seconds: float = 0.0
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (head, class) -> detections
    tracks: TrackCounts | None = None  # when tracking: the table counts unique tracks instead of detections
    settings: dict[str, HeadSettings] = field(default_factory=dict)  # the thresholds each head ran with
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # inputs that are not readable images, and why

    def skip(self, path: Path, reason: str) -> None:
        self.skipped.append((path, reason))
        self.images -= 1

    def add(self, result: Result) -> None:
        self.frames += 1
        if self.tracks is not None:
            self.tracks.add(result)
        for head, r in result.heads.items():
            if isinstance(r, ClassifyResult):
                self.counts[(head, r.name)] += 1  # images per predicted class
            elif isinstance(r, RegressResult):
                self.counts[(head, "(value)")] += 1
            elif self.tracks is None:  # tracking counts tracks (TrackCounts), not boxes
                self.counts.update((head, name) for name in r.names)

    def table(self) -> str:
        per = f" ({1000 * self.seconds / self.frames:.0f} ms each)" if self.frames else ""
        # Tracking: unique tracks for detect heads (frames per class still for image-level heads).
        counts = self.counts if self.tracks is None else self.counts + self.tracks.counts()
        lines = [
            f"{self.images} images, {self.videos} videos: {self.frames} frames in {self.seconds:.1f} s{per}",
            f"{'head':<12} {'class':<20} {'detections' if self.tracks is None else 'tracks':>10}",
        ]
        for head in self.heads:
            rows = sorted(((c, n) for (h, c), n in counts.items() if h == head), key=lambda x: -x[1])
            for cls, n in rows or [("-", 0)]:
                lines.append(f"{head:<12} {cls:<20} {n:>10}")
        for head, s in self.settings.items():  # detect heads: image-level heads have no thresholds
            lines.append(f"{head}: conf > {s.conf:.3g}, NMS IoU {s.iou:.3g}, max_det {s.max_det}" + _agnostic(s))
        if self.skipped:
            lines.append(f"skipped: {len(self.skipped)} input(s) that are not readable images:")
            lines += [f"  {path} ({reason})" for path, reason in self.skipped[:MAX_NAMED]]
            lines += [f"  ... and {len(self.skipped) - MAX_NAMED} more"] * (len(self.skipped) > MAX_NAMED)
        return "\n".join(lines)


def _detect_only(model: Model, settings: dict[str, HeadSettings]) -> dict[str, HeadSettings]:
    return {h: s for h, s in settings.items() if model.backend.tasks.get(h) == "detect"}


def _agnostic(s: HeadSettings) -> str:
    return ", class-agnostic" if s.agnostic else ""


def predict_to_folder(
    model: Model, inputs: list[str], out: Path, progress: bool = True, **options: Any
) -> tuple[Summary, list[Path]]:
    """Predict on everything `inputs` names; returns the summary and the files written."""
    settings, _size = model.settings(**options)  # bad settings fail here, before any work
    items = [p for p in expand(inputs) if isinstance(p, Path)]
    images = [p for p in items if not is_video(p)]
    videos = [p for p in items if is_video(p)]
    summary = Summary(list(settings), len(images), len(videos), settings=_detect_only(model, settings))
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    used: set[str] = set()
    t0 = time.perf_counter()
    with tqdm(total=count(items), desc="predict", unit="frame", disable=not progress) as bar:
        records = []

        def on_skip(path: Path, reason: str) -> None:
            summary.skip(path, reason)
            bar.update()

        for result in model.predict(images, stream=True, on_skip=on_skip, **options):
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
            results = model.predict(video, stream=True, **options)
            written += annotate_video(results, frame_rate(video), video, out, name, on_result=on_frame)
    summary.seconds = time.perf_counter() - t0
    return summary, written


def track_to_folder(
    model: Model, inputs: list[str], out: Path, progress: bool = True, **options: Any
) -> tuple[Summary, list[Path]]:
    """Track on every video `inputs` names: per video <stem>.mp4 (boxes with `#id`) and <stem>.jsonl (`track_id`
    on each box); the summary counts unique tracks per head and class."""
    from hydradet.infer.track import require_bytetrack

    require_bytetrack()  # before any work: a missing package is said at once
    settings, _size = model.settings(**options)  # bad settings fail here, before any work
    videos = [p for p in expand(inputs) if isinstance(p, Path)]
    images = [p for p in videos if not is_video(p)]
    if images or not videos:
        raise SettingError(
            f"track: {images[0] if images else inputs} is not a video; track follows objects across a video's "
            "frames (use `hydradet predict` for images, or Model.track on a list of frames)"
        )
    summary = Summary(list(settings), videos=len(videos), tracks=TrackCounts(), settings=_detect_only(model, settings))
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    used: set[str] = set()
    t0 = time.perf_counter()
    with tqdm(total=count(videos), desc="track", unit="frame", disable=not progress) as bar:

        def on_frame(result: Result) -> None:
            summary.add(result)
            bar.update()

        for video in videos:
            name = Path(_unique(video.stem, ".mp4", used)).stem
            results = model.track(video, stream=True, **options)
            written += annotate_video(results, frame_rate(video), video, out, name, on_result=on_frame)
    summary.seconds = time.perf_counter() - t0
    return summary, written


def annotate_video(
    results: Iterable[Result],
    fps: Fraction,
    source: Path,
    out_dir: Path,
    name: str,
    on_result: Callable[[Result], None] | None = None,
) -> tuple[Path, Path]:
    """A video's Results -> out_dir/<name>.mp4 (drawn) and out_dir/<name>.jsonl (one line per frame: frame
    number, time in seconds, per-head detections in pixels, with track ids when tracked). Returns both paths."""
    video_out, lines_out = out_dir / f"{name}.mp4", out_dir / f"{name}.jsonl"
    if video_out.resolve() == source.resolve():  # never overwrite the input
        video_out = out_dir / f"{name}_pred.mp4"
    with VideoWriter(video_out, fps) as writer, lines_out.open("w") as lines:
        for result in results:
            writer.write(result.plot())
            record = result.to_json()
            # The frame's own time stamp; index / rate only for a frame without one (a variable rate differs).
            seconds = result.time if result.time is not None else float((result.frame or 0) / fps)
            record["time"] = round(seconds, 3)
            lines.write(json.dumps(record) + "\n")
            if on_result is not None:
                on_result(result)
    return video_out, lines_out


def _unique(stem: str, suffix: str, used: set[str]) -> str:
    """Two inputs with the same name (from different folders) must not overwrite each other's output."""
    name, n = f"{stem}{suffix}", 2
    while name in used:
        name, n = f"{stem}_{n}{suffix}", n + 1
    used.add(name)
    return name

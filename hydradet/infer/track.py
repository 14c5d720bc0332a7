"""Tracking: each detect head's boxes followed across a video's frames with ByteTrack (Zhang et al. 2022,
"ByteTrack: Multi-Object Tracking by Associating Every Detection Box"), one tracker per head so that a track never
jumps between label spaces and ids of different heads are independent.

ByteTrack comes from Roboflow's `trackers` package (`ByteTrackTracker`, Apache-2.0), its maintained home since
supervision deprecated `sv.ByteTrack` (0.28) and removed it (0.30); it speaks `supervision.Detections`. Optional:
`pip install 'hydradet[track]'`.

ByteTrack's idea is to use the low-score boxes too: boxes above a head's conf start and extend tracks; boxes
between `TRACK_LOW` and that conf only extend tracks that exist (an object half hidden for a few frames keeps its
id). So the detector runs at the lower threshold (as Ultralytics' `track` does) and the head's conf (calibrated,
or given) becomes ByteTrack's high threshold. A box is reported only once it belongs to a track: a new track needs
`MIN_FRAMES` consecutive frames, so a one-frame false positive never becomes a track (nor a count).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hydradet.errors import MissingDependency
from hydradet.infer.predict import Backend, run
from hydradet.infer.results import HeadResult, Result
from hydradet.infer.settings import HeadSettings, SettingError
from hydradet.infer.sources import frames, is_video
from hydradet.infer.video import frame_rate

TRACK_LOW = 0.1  # ByteTrack's second-stage threshold (Ultralytics' track_low_thresh and track conf: 0.1)
MIN_FRAMES = 2  # consecutive frames before a track gets an id (trackers' default)
LOST_FRAMES = 30  # a lost track is kept this many frames at 30 fps (scaled by the video's rate) for re-matching
FRAMES_FPS = 30.0  # the rate assumed for a sequence of images or arrays


def require_bytetrack() -> Any:
    """trackers' ByteTrackTracker class, or a MissingDependency (exit 2) saying how to install it."""
    try:
        from trackers import ByteTrackTracker
    except ImportError:
        raise MissingDependency(
            "tracking needs the trackers package (ByteTrack; it brings supervision): pip install 'hydradet[track]'"
        ) from None
    return ByteTrackTracker


class Tracker:
    """One ByteTrack per detect head, for one video (or one sequence of frames); image-level heads pass through."""

    def __init__(self, settings: dict[str, HeadSettings], tasks: dict[str, str], fps: float) -> None:
        byte_track = require_bytetrack()
        self.trackers = {
            h: byte_track(
                lost_track_buffer=LOST_FRAMES,
                frame_rate=float(fps),
                track_activation_threshold=s.conf,
                high_conf_det_threshold=s.conf,
                minimum_consecutive_frames=MIN_FRAMES,
            )
            for h, s in settings.items()
            if tasks.get(h) == "detect"
        }

    def update(self, result: Result) -> Result:
        """The next frame's Result -> the same with each detect head's tracked boxes only, each with its track id
        (`HeadResult.track_ids`), best score first."""
        heads = dict(result.heads)
        for head, tracker in self.trackers.items():
            r = heads.get(head)
            if isinstance(r, HeadResult):
                heads[head] = _tracked(tracker, r)
        return replace(result, heads=heads)


def _tracked(tracker: Any, r: HeadResult) -> HeadResult:
    import supervision as sv  # a dependency of trackers, so present whenever a Tracker exists

    names = np.array(r.names, dtype=str)
    detections = sv.Detections(
        xyxy=r.boxes.astype(np.float32).reshape(-1, 4),
        confidence=r.scores.astype(np.float32),
        class_id=r.class_ids.astype(int),
        data={"index": np.arange(len(r))},  # which input box each output is (the tracker reorders them)
    )
    out = tracker.update(detections)
    ids = np.asarray(out.tracker_id if out.tracker_id is not None else [], dtype=np.int64)
    rows = np.asarray(out.data.get("index", []), dtype=np.int64)[ids >= 0]
    ids = ids[ids >= 0]
    order = np.argsort(-r.scores[rows], kind="stable")  # HeadResult keeps the best score first
    rows, ids = rows[order], ids[order]
    return HeadResult(r.boxes[rows], r.scores[rows], r.class_ids[rows], names[rows].tolist(), ids)


def detector_settings(backend: Backend, settings: dict[str, HeadSettings]) -> dict[str, HeadSettings]:
    """The settings the detector runs at while tracking: each detect head's conf lowered to TRACK_LOW (the head's
    conf stays the tracker's high threshold). An export with NMS baked in cannot go below its conf: its own."""
    low = {
        h: replace(s, conf=min(s.conf, TRACK_LOW)) if backend.tasks[h] == "detect" else s for h, s in settings.items()
    }
    try:
        backend.check_settings(low)
    except SettingError:
        return settings  # ByteTrack's second stage then gets no box: it still tracks, as SORT does
    return low


def track(
    backend: Backend,
    items: Iterable[Path | np.ndarray | Image.Image],
    settings: dict[str, HeadSettings],
    imgsz: int,
    batch: int,
) -> Iterator[Result]:
    """Tracked Results in frame order. Each video file is tracked from scratch at its own frame rate; a run of
    images or arrays between them is one sequence (FRAMES_FPS)."""
    low = detector_settings(backend, settings)
    for group, fps in _sequences(items):
        tracker = Tracker(settings, backend.tasks, fps)
        for result in run(backend, frames(group), low, imgsz, batch):
            yield tracker.update(result)


def _sequences(items: Iterable[Path | np.ndarray | Image.Image]) -> Iterator[tuple[list[Any], float]]:
    group: list[Any] = []
    for item in items:
        if isinstance(item, Path) and is_video(item):
            if group:
                yield group, FRAMES_FPS
                group = []
            yield [item], float(frame_rate(item))
        else:
            group.append(item)
    if group:
        yield group, FRAMES_FPS


class TrackCounts:
    """Unique tracks per (head, class), for the summary: each track once, under the class it was given in most of
    its frames (ByteTrack follows boxes, not classes, so a track's class may flicker)."""

    def __init__(self) -> None:
        # (video or None, head, track id) -> class name -> frames; ids restart with each video's tracker.
        self._classes: dict[tuple[str | None, str, int], Counter[str]] = {}

    def add(self, result: Result) -> None:
        video = str(result.path) if result.path is not None and is_video(result.path) else None
        for head, r in result.detections().items():
            if r.track_ids is None:
                continue
            for tid, name in zip(r.track_ids.tolist(), r.names, strict=True):
                self._classes.setdefault((video, head, tid), Counter())[name] += 1

    def counts(self) -> Counter[tuple[str, str]]:
        """(head, class) -> unique tracks."""
        return Counter((head, c.most_common(1)[0][0]) for (_, head, _), c in self._classes.items())

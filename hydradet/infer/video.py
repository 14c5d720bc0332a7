"""Video files in and out with PyAV (FFmpeg's libraries): frames read upright, their count and rate; frames
written to an .mp4. Nothing here knows of models or results: the predict and track loops that use these are in
run.py, so that reading a video never needs a `Model` (and `sources` -> `video` stays one-way)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from hydradet.errors import DataError

# H.264 plays everywhere; MPEG-4 part 2 where an FFmpeg build lacks libx264.
_CODECS = ("libx264", "mpeg4")


def _open(path: Path) -> Any:
    import av

    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise DataError(f"{path}: not a readable video ({e})") from None


def read_frames(path: Path) -> Iterator[np.ndarray]:
    """Every frame as (H, W, 3) uint8 RGB, upright, in order (`read_timed_frames` without the times)."""
    for image, _ in read_timed_frames(path):
        yield image


def read_timed_frames(path: Path) -> Iterator[tuple[np.ndarray, float | None]]:
    """Every frame as (H, W, 3) uint8 RGB, upright as a player shows it, in order, decoded one at a time, with its
    time in seconds from the stream's start: the frame's own presentation time stamp (PTS), which a variable
    frame rate (phones, screen recorders) makes differ from its index over the average rate. None for a frame
    without a PTS (some raw streams): then only its index places it.

    Phones store the sensor's landscape pixels and a display rotation (the display matrix side data; older files:
    the stream's `rotate` tag); the frames are turned (and mirrored) as that says, as photos' EXIF orientation is
    applied, so that boxes and the JSON lines' pixels are those a viewer sees."""
    with _open(path) as container:
        if not container.streams.video:
            raise DataError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # FFmpeg's frame threads: decoding keeps up with the model
        # Case-insensitive, as FFmpeg's dictionaries are: Matroska files carry it as ROTATE.
        tag = next((v for k, v in stream.metadata.items() if k.lower() == "rotate"), None)
        tag_op = _ROTATE_TAG.get(_int(tag) % 360, "")
        # A player's clock starts at the stream's first time stamp (an MP4 edit list may start it above 0).
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        for frame in container.decode(stream):
            image = frame.to_ndarray(format="rgb24")
            matrix = frame.side_data.get("DISPLAYMATRIX")  # FFmpeg attaches the stream's to every frame
            op = display_op(np.frombuffer(bytes(matrix), np.int32)) if matrix is not None else tag_op
            seconds = frame.time - start if frame.time is not None else None
            yield (np.ascontiguousarray(_OPS[op](image)) if op else image), seconds


# FFmpeg's transpose filter's directions and flips, on (H, W, C) arrays.
_OPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "clock": lambda a: np.rot90(a, -1),  # a quarter turn clockwise
    "cclock": lambda a: np.rot90(a, 1),
    "cclock_flip": lambda a: a.transpose(1, 0, 2),  # counter-clockwise, then upside down: the transpose
    "clock_flip": lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    "hflip": lambda a: a[:, ::-1],
    "vflip": lambda a: a[::-1],
    "rot180": lambda a: a[::-1, ::-1],
}
_ROTATE_TAG = {90: "clock", 180: "rot180", 270: "cclock"}  # the old `rotate` tag: degrees clockwise


def display_op(matrix: np.ndarray) -> str:
    """The turn or flip (a key of _OPS, "" for none) that shows a frame upright, from its display matrix (FFmpeg's
    3x3 int32 layout, 16.16 fixed point, row-major).

    The rule of FFmpeg's own players (fftools' autorotate): the matrix's rotation rounded to a quarter turn, and
    its flips. Other angles are left as they are (no phone writes them)."""
    m = matrix.astype(np.float64)
    s0, s1 = np.hypot(m[0], m[3]), np.hypot(m[1], m[4])
    if s0 == 0 or s1 == 0:  # a degenerate matrix (a broken file): show the pixels as stored
        return ""
    # fftools' theta: the clockwise turn to display, in [0, 360).
    theta = round(float(np.degrees(np.arctan2(m[1] / s1, m[0] / s0)))) % 360
    if theta == 90:
        return "cclock_flip" if m[3] > 0 else "clock"
    if theta == 180:
        return {(True, True): "rot180", (True, False): "hflip", (False, True): "vflip"}.get((m[0] < 0, m[4] < 0), "")
    if theta == 270:
        return "clock_flip" if m[3] < 0 else "cclock"
    return "vflip" if theta == 0 and m[4] < 0 else ""


def _int(value: str | None) -> int:
    try:
        return int(float(value)) if value is not None else 0
    except ValueError:
        return 0


def frame_count(path: Path) -> int | None:
    """Frames the container announces (None when it does not: some formats only know at the end)."""
    with _open(path) as container:
        if not container.streams.video:
            return 0
        return int(container.streams.video[0].frames) or None


def frame_rate(path: Path) -> Fraction:
    with _open(path) as container:
        rate = container.streams.video[0].average_rate if container.streams.video else None
        return Fraction(rate) if rate else Fraction(25)


class VideoWriter:
    """Frames (H, W, 3) uint8 RGB -> an .mp4; odd sizes padded by a pixel (4:2:0 chroma needs even ones).

    The frames are written as given, upright, with no display rotation: every player (and OpenCV, browsers,
    editors that ignore the display matrix) then shows them as the viewer saw the input, and the drawn boxes and
    the JSON lines' pixels stay in the same frame as the written pixels."""

    def __init__(self, path: Path, fps: Fraction) -> None:
        import av

        self.path, self.fps = path, fps
        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w")
        self.stream: Any = None

    def write(self, image: np.ndarray) -> None:
        import av

        h, w = image.shape[:2]
        if self.stream is None:
            codec = next(c for c in _CODECS if c in av.codecs_available)
            self.stream = self.container.add_stream(codec, rate=self.fps)
            self.stream.width, self.stream.height = w + w % 2, h + h % 2
            self.stream.pix_fmt = "yuv420p"
        if h % 2 or w % 2:
            image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        if self.stream is not None:
            for packet in self.stream.encode():  # flush the encoder's delayed frames
                self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

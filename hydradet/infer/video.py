"""Video in, annotated video and per-frame detections (JSON lines) out, with PyAV (FFmpeg's libraries)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hydradet.errors import DataError

if TYPE_CHECKING:
    from hydradet.infer.model import Model
    from hydradet.infer.results import Result

# H.264 plays everywhere; MPEG-4 part 2 where an FFmpeg build lacks libx264.
_CODECS = ("libx264", "mpeg4")


def _open(path: Path) -> Any:
    import av

    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise DataError(f"{path}: not a readable video ({e})") from None


def read_frames(path: Path) -> Iterator[np.ndarray]:
    """Every frame as (H, W, 3) uint8 RGB, in order, decoded one at a time."""
    with _open(path) as container:
        if not container.streams.video:
            raise DataError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # FFmpeg's frame threads: decoding keeps up with the model
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


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
    """Frames (H, W, 3) uint8 RGB -> an .mp4; odd sizes padded by a pixel (4:2:0 chroma needs even ones)."""

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


def predict_video(
    model: Model,
    path: Path,
    out_dir: Path,
    on_result: Callable[[Result], None] | None = None,
    name: str | None = None,
    **predict_options: Any,
) -> tuple[Path, Path]:
    """Detect on every frame of `path`; write out_dir/<name>.mp4 (annotated) and out_dir/<name>.jsonl (one line
    per frame: frame number, time in seconds, per-head detections in pixels). name: default the video's stem.
    Returns both paths."""
    fps = frame_rate(path)
    name = name or path.stem
    video_out, lines_out = out_dir / f"{name}.mp4", out_dir / f"{name}.jsonl"
    if video_out.resolve() == path.resolve():  # never overwrite the input
        video_out = out_dir / f"{name}_pred.mp4"
    with VideoWriter(video_out, fps) as writer, lines_out.open("w") as lines:
        for result in model.predict(path, stream=True, **predict_options):
            writer.write(result.plot())
            record = result.to_json()
            record["time"] = round(float((result.frame or 0) / fps), 3)
            lines.write(json.dumps(record) + "\n")
            if on_result is not None:
                on_result(result)
    return video_out, lines_out

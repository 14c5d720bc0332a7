"""What `predict` accepts, turned into one stream of RGB frames: paths, folders, globs, lists of them, PIL images,
numpy arrays (HWC RGB, uint8, uint16 or float) and video files (one frame after another). A path, a PIL image and
an array of the same picture give the same pixels (`data/image.py`: 16-bit scaled, floats by their range, alpha
composited on the letterbox grey)."""

from __future__ import annotations

import glob
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
from PIL import Image, ImageOps

from hydradet.data.image import array_rgb8, load_image, pil_rgb8
from hydradet.data.walk import walk_files
from hydradet.data.yolo import IMAGE_SUFFIXES
from hydradet.infer.settings import SettingError

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
_GLOB_CHARS = set("*?[")

Item: TypeAlias = str | Path | np.ndarray | Image.Image
OnSkip: TypeAlias = Callable[[Path, str], None]  # (the file, why it was skipped)
Source: TypeAlias = Item | Sequence[Item]


class SkippedInputWarning(UserWarning):
    """An input file that is not a readable image was skipped (predict continues with the others)."""


@dataclass
class Frame:
    image: np.ndarray  # (H, W, 3) uint8 RGB, as a viewer shows it (EXIF orientation applied)
    path: Path | None  # the file it came from; None for an in-memory image
    frame: int | None = None  # frame number within a video file
    time: float | None = None  # a video frame's presentation time, seconds from the video's start


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def expand(source: Source) -> list[Path | np.ndarray | Image.Image]:
    """Folders -> their images and videos (recursive, sorted); globs -> their matches; files and arrays as given."""
    items = [source] if isinstance(source, str | Path | np.ndarray | Image.Image) else list(source)
    out: list[Path | np.ndarray | Image.Image] = []
    for item in items:
        if isinstance(item, np.ndarray | Image.Image):
            out.append(item)
        elif isinstance(item, str | Path):
            out += expand_path(item)
        else:
            raise SettingError(f"source: {type(item).__name__} is not a path, folder, glob, PIL image or numpy array")
    return out


def expand_path(item: str | Path) -> list[Path]:
    p = Path(item)
    if p.is_dir():
        return walk_files(p, IMAGE_SUFFIXES | VIDEO_SUFFIXES)  # linked folders too
    if p.is_file():
        return [p]
    if _GLOB_CHARS & set(str(item)):
        matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True) if Path(m).is_file())
        if matches:
            return matches
        raise FileNotFoundError(f"{item}: the pattern matches no file")
    raise FileNotFoundError(f"{item}: no such image, video or folder")


def frames(items: Iterable[Path | np.ndarray | Image.Image], on_skip: OnSkip | None = None) -> Iterator[Frame]:
    """Decode lazily, one frame at a time, so a long video or a large folder never sits in memory.

    An image file that cannot be decoded (not an image, corrupt, truncated) is skipped, never the end of the
    stream: `on_skip(path, reason)` is called, or without one a SkippedInputWarning names the file."""
    from hydradet.infer.video import read_timed_frames  # PyAV loads only when a video is given

    for item in items:
        if isinstance(item, np.ndarray):
            yield Frame(as_rgb(item), None)
        elif isinstance(item, Image.Image):
            yield Frame(pil_rgb8(ImageOps.exif_transpose(item)), None)
        elif is_video(item):
            for i, (image, seconds) in enumerate(read_timed_frames(item)):
                yield Frame(image, item, i, seconds)
        else:
            try:
                image = load_image(item)
            except Exception as e:  # PIL raises many types for files it cannot read; each means "skip this one"
                reason = f"{type(e).__name__}: {e}"
                if on_skip is not None:
                    on_skip(item, reason)
                else:
                    warnings.warn(f"{item}: skipped, not a readable image ({reason})", SkippedInputWarning, 2)
                continue
            yield Frame(image.permute(1, 2, 0).numpy(), item)


def count(items: Sequence[Path | np.ndarray | Image.Image]) -> int | None:
    """Frames to expect (for a progress bar); None when a video does not say how many it holds."""
    from hydradet.infer.video import frame_count

    total = 0
    for item in items:
        n = frame_count(item) if isinstance(item, Path) and is_video(item) else 1
        if n is None:
            return None
        total += n
    return total


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a numpy image (`data/image.py:array_rgb8`); SettingError naming a dtype or shape
    that it cannot be (refused rather than guessed at)."""
    try:
        return array_rgb8(image)
    except ValueError as e:
        raise SettingError(str(e)) from None

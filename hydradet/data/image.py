"""Pictures as a viewer shows them, as 8-bit RGB: one conversion for a file (training, evaluation, `predict` on a
path), a PIL image and a numpy array (`predict` in memory), so that the model sees the same pixels from each.

PIL's own `convert("RGB")` is not that picture for several modes: it clips 16-bit and 32-bit integers to 255 (a
16-bit PNG becomes white), truncates floats (a float TIFF in [0, 1] becomes black), and drops alpha, leaving the
colour under transparent pixels (often black or garbage) where a viewer shows the background. So:

- 16-bit (PIL `I;16*`, `I` holding 16-bit values, uint16 arrays): value / 257, i.e. 65535 -> 255.
- float (PIL `F`, float arrays): [0, 1] when no value exceeds 1 (x 255), else [0, 255]; clipped; NaN -> 0.
- alpha (`RGBA`, `LA`, `PA`, a palette or grey or RGB image with a transparent colour; (H, W, 4) arrays):
  composited on the letterbox grey (`PAD_VALUE`), the colour the model sees around every picture anyway.
- everything else PIL opens (1-bit, L, P, RGB, CMYK, YCbCr, LAB, HSV, ...): PIL's conversion to RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from hydradet.data.augment import PAD_VALUE

__all__ = ["ARRAY_DTYPES", "array_rgb8", "load_image", "pil_rgb8"]

ARRAY_DTYPES = "uint8, uint16 or float"  # what a numpy image may hold, as messages say it
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def load_image(path: Path) -> Tensor:
    """RGB uint8 (3, H, W) of the picture in `path` as a viewer shows it: EXIF orientation applied (boxes refer
    to that picture), then `pil_rgb8`. Raises whatever PIL raises for a file it cannot decode."""
    with Image.open(path) as im:
        arr = pil_rgb8(ImageOps.exif_transpose(im))
    return torch.from_numpy(arr).permute(2, 0, 1)


def pil_rgb8(im: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a PIL image, by the rules above (EXIF orientation is the caller's)."""
    if im.mode.startswith("I") or im.mode == "F":
        return _to_rgb8(np.asarray(im))
    if im.mode == "La":  # premultiplied: PIL converts it to nothing but LA
        im = im.convert("LA")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        return _to_rgb8(np.asarray(im.convert("RGBA")))
    return np.array(im.convert("RGB"))


def array_rgb8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an array: (H, W) or (H, W, 1) grey, (H, W, 3) RGB or (H, W, 4) RGBA, of uint8,
    uint16 or float values (the rules above). Raises ValueError naming the dtype or shape otherwise."""
    if image.dtype != np.uint8 and image.dtype != np.uint16 and image.dtype.kind != "f":
        raise ValueError(f"numpy image: dtype {image.dtype.name}; expected {ARRAY_DTYPES} (HWC RGB)")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))):
        raise ValueError(f"numpy image: shape {image.shape}; expected (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) grey")
    return _to_rgb8(image)


def _to_rgb8(a: np.ndarray) -> np.ndarray:
    """Any of the arrays above (PIL's int32 `I` too) -> (H, W, 3) uint8: scaled to [0, 255], alpha composited."""
    if a.dtype == np.uint8:
        out = a
    else:
        f = np.nan_to_num(a.astype(np.float32), nan=0.0)
        # Integers here are 16-bit: uint16, or PIL's int32 `I`, as which PIL opens 16-bit PNGs and integer TIFFs.
        scale = 255.0 if a.dtype.kind == "f" and f.size and f.max() <= 1 else 1.0 if a.dtype.kind == "f" else 1 / 257
        out = np.rint(f.clip(0, 65535) * scale).clip(0, 255).astype(np.uint8)
    if out.ndim == 3 and out.shape[2] == 4:
        rgb, alpha = out[..., :3].astype(np.float32), out[..., 3:].astype(np.float32)
        out = np.rint((rgb * alpha + PAD_VALUE * (255 - alpha)) / 255).astype(np.uint8)
    if out.ndim == 2:
        out = out[..., None]
    return np.ascontiguousarray(np.repeat(out, 3, 2) if out.shape[2] == 1 else out)

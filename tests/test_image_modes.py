"""Every PIL mode gives the model the picture a viewer shows, the same whether `predict` gets a path, a PIL image or
a numpy array (ultralytics#1039): 16-bit scaled to 8-bit, float by its range ([0, 1] or [0, 255]), palette and
alpha composited on the letterbox grey; arrays of uint8, uint16 or float, other dtypes refused naming the dtype."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hydradet.data.augment import PAD_VALUE
from hydradet.data.dataset import load_image
from hydradet.infer.settings import SettingError
from hydradet.infer.sources import frames

H, W = 6, 8


def _grey(value: float, mode: str) -> Image.Image:
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    im = Image.fromarray(np.full((H, W), value, dtype))
    assert im.mode == mode
    return im


def _alpha(mode: str) -> Image.Image:
    """Left half opaque red, right half: top rows fully transparent, bottom rows half transparent."""
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0], rgba[:, : W // 2, 3], rgba[: H // 2, W // 2 :, 3], rgba[H // 2 :, W // 2 :, 3] = 200, 255, 0, 128
    im = Image.fromarray(rgba, "RGBA")
    return im if mode == "RGBA" else im.convert(mode)


def _via_frames(item) -> np.ndarray:
    (frame,) = list(frames([item]))
    return frame.image


def _via_path(im: Image.Image, path: Path) -> np.ndarray:
    im.save(path)
    return load_image(path).permute(1, 2, 0).numpy()


# mode, image, the value a viewer shows everywhere (grey images)
GREYS = [
    ("I;16", 128 * 257, 128),  # a 16-bit PNG: scaled, where convert("RGB") clips every pixel to 255
    ("I;16", 65535, 255),
    ("I", 200 * 257, 200),  # an int32 TIFF holding 16-bit values
    ("F", 0.5, 128),  # a float TIFF in [0, 1]: convert("RGB") makes it 0
    ("F", 200.0, 200),  # ... in [0, 255]
]


@pytest.mark.parametrize(("mode", "value", "shown"), GREYS)
def test_16_bit_and_float_images_are_scaled_the_same_by_path_pil_and_array(tmp_path, mode, value, shown):
    im = _grey(value, mode)
    expected = np.full((H, W, 3), shown, np.uint8)
    np.testing.assert_array_equal(_via_frames(im), expected)
    suffix = ".png" if mode == "I;16" else ".tif"
    np.testing.assert_array_equal(_via_path(im, tmp_path / f"a{suffix}"), expected)
    array = np.asarray(im)
    if array.dtype != np.int32:  # an int32 array is refused (below); its image is not
        np.testing.assert_array_equal(_via_frames(array), expected)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "P"])
def test_alpha_and_palette_transparency_are_composited_on_the_letterbox_grey(tmp_path, mode):
    im = _alpha(mode) if mode != "P" else _alpha("RGBA").convert("P")
    if mode == "P":  # a palette with one transparent index, as GIF and many PNGs have
        im = Image.fromarray(np.where(np.asarray(_alpha("RGBA"))[..., 3] == 255, 1, 0).astype(np.uint8), "P")
        im.putpalette([0, 0, 0, 200, 0, 0])
        im.info["transparency"] = 0
    got = _via_frames(im)
    red = (60, 60, 60) if mode == "LA" else (200, 0, 0)  # LA: the red seen in grey (L of 200, 0, 0 is 60)
    np.testing.assert_array_equal(got[0, 0], red)  # opaque: its colour
    np.testing.assert_array_equal(got[0, -1], [PAD_VALUE] * 3)  # transparent: the letterbox grey, not black
    if mode != "P":
        half = np.rint((np.array(red) * 128 + PAD_VALUE * 127) / 255)
        np.testing.assert_array_equal(got[-1, -1], half)
    if mode != "PA":  # no file format PIL writes holds PA
        path = tmp_path / "a.png"
        im.save(path, **({"transparency": 0} if mode == "P" else {}))
        np.testing.assert_array_equal(load_image(path).permute(1, 2, 0).numpy(), got)
    if mode == "RGBA":
        np.testing.assert_array_equal(_via_frames(np.asarray(im)), got)  # an (H, W, 4) array is RGBA too


def test_every_mode_gives_the_same_picture_by_path_pil_and_array(tmp_path):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), np.uint8))
    images = {m: rgb.convert(m) for m in ("1", "L", "P", "RGB", "CMYK", "YCbCr", "LAB", "HSV")}
    images |= {m: _alpha(m) for m in ("RGBA", "LA", "PA")}
    images |= {m: _grey(v, m) for m, v, _ in GREYS}
    for mode, im in images.items():
        got = _via_frames(im)
        assert got.shape == (H, W, 3) and got.dtype == np.uint8, mode
        if mode not in ("LAB", "HSV", "PA"):  # no file format PIL writes holds these
            suffix = ".png" if mode in ("1", "L", "P", "RGB", "RGBA", "LA", "I;16") else ".tif"
            np.testing.assert_array_equal(_via_path(im, tmp_path / f"{len(mode)}{suffix}"), got, err_msg=mode)
        if mode in ("L", "RGB", "RGBA", "I;16", "F"):  # modes whose values are what an array's would mean
            np.testing.assert_array_equal(_via_frames(np.asarray(im)), got, err_msg=mode)


def test_arrays_of_uint8_uint16_and_float_give_the_same_picture():
    base = np.random.default_rng(1).integers(0, 256, (H, W, 3)).astype(np.uint8)
    np.testing.assert_array_equal(_via_frames(base), base)
    np.testing.assert_array_equal(_via_frames(base.astype(np.uint16) * 257), base)
    np.testing.assert_array_equal(_via_frames(base.astype(np.float32) / 255), base)
    np.testing.assert_array_equal(_via_frames(base.astype(np.float64)), base)
    np.testing.assert_array_equal(_via_frames(base[..., 0]), np.repeat(base[..., :1], 3, 2))  # grey (H, W)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.complex64])
def test_other_array_dtypes_are_refused_naming_the_dtype(dtype):
    with pytest.raises(SettingError, match=f"dtype {np.dtype(dtype).name}.*uint8, uint16 or float"):
        _via_frames(np.zeros((H, W, 3), dtype))

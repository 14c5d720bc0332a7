"""Video: a clip in (built here from real images, or synthetic ones without ../shared), an annotated video and a
JSON-lines file of per-frame detections out, the same detections as predicting on the decoded frames."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from test_infer_api import IMAGES, REAL, assert_same, synthetic_images, write_weights

import hydradet
from hydradet.cli import main
from hydradet.infer.video import VideoWriter, read_frames

SIZE = (160, 120)  # (w, h)
FPS = 5


def clip_frames() -> list[np.ndarray]:
    if IMAGES.is_dir():
        return [np.array(Image.open(p).convert("RGB").resize(SIZE)) for p in REAL[:4]]
    return [np.array(Image.fromarray(a).resize(SIZE)) for a in synthetic_images(4)]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_weights(tmp_path_factory.mktemp("w") / "model.safetensors")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """Written with PyAV directly, not with our writer, so a writer bug cannot hide a reader bug."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        for image in clip_frames():
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_video_in_gives_an_annotated_video_and_jsonl_with_the_frames_detections(weights: Path, clip: Path, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", str(weights), str(clip), "--conf", "person=0.9,animal=0.7", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in lines] == [0, 1, 2, 3]
    assert [r["time"] for r in lines] == [i / FPS for i in range(4)]
    assert all(r["width"] == SIZE[0] and r["height"] == SIZE[1] for r in lines)

    # The same detections as the API on the frames as decoded.
    decoded = list(read_frames(clip))
    assert len(decoded) == 4 and decoded[0].shape == (SIZE[1], SIZE[0], 3)
    api = hydradet.load(weights).predict(decoded, conf={"person": 0.9, "animal": 0.7})
    assert [r["heads"] for r in lines] == [r.to_json()["heads"] for r in api]
    assert sum(len(d) for r in lines for d in r["heads"].values()) > 0  # something was drawn
    for r in lines:
        assert all(d["score"] > 0.9 for d in r["heads"]["person"])  # per-head conf honoured
        assert all(d["score"] > 0.7 for d in r["heads"]["animal"])

    annotated = list(read_frames(out / "clip.mp4"))
    assert len(annotated) == 4 and annotated[0].shape == decoded[0].shape
    drawn = [a.plot() for a in api]
    # Lossy codecs: the annotated frames resemble the drawings far more than the undrawn frames do.
    for got, want, plain in zip(annotated, drawn, decoded, strict=True):
        if not np.array_equal(want, plain):
            assert np.abs(got.astype(int) - want).mean() < np.abs(got.astype(int) - plain).mean()


def test_predict_on_a_video_path_gives_one_result_per_frame(weights: Path, clip: Path):
    model = hydradet.load(weights)
    results = model.predict(clip, conf=0.7, heads=["person"])
    assert [r.frame for r in results] == [0, 1, 2, 3] and all(r.path == clip for r in results)
    assert_same(results, model.predict(list(read_frames(clip)), conf=0.7, heads=["person"]), atol=1e-5)


def test_videos_and_images_together_from_the_cli(weights: Path, clip: Path, tmp_path: Path, capsys):
    image = tmp_path / "still.png"
    Image.fromarray(synthetic_images(1)[0]).save(image)
    out = tmp_path / "out"
    assert main(["predict", str(weights), str(clip), str(image), "--heads", "person", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip.jsonl", "clip.mp4", "predictions.json", "still.jpg"]
    assert all(list(r["heads"]) == ["person"] for r in map(json.loads, (out / "clip.jsonl").read_text().splitlines()))
    summary = capsys.readouterr().out
    assert "1 images, 1 videos: 5 frames" in summary and "animal" not in summary


def test_odd_frame_sizes_are_padded_for_the_encoder(tmp_path: Path):
    frames = [np.full((121, 161, 3), v, np.uint8) for v in (0, 128, 255)]
    with VideoWriter(tmp_path / "odd.mp4", Fraction(10)) as writer:
        for f in frames:
            writer.write(f)
    back = list(read_frames(tmp_path / "odd.mp4"))
    assert len(back) == 3 and back[0].shape == (122, 162, 3)
    assert abs(int(back[1][:121, :161].mean()) - 128) <= 3


def test_an_unreadable_video_is_a_user_error(weights: Path, tmp_path: Path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    assert main(["predict", str(weights), str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "broken.mp4: not a readable video" in capsys.readouterr().err


# Display rotation: phones store landscape pixels and say how to turn them for display.
STORED = (64, 48)  # (w, h) as stored


def stored_frame() -> np.ndarray:
    """Dark, with a bright block in the stored top-left corner."""
    image = np.full((STORED[1], STORED[0], 3), 30, np.uint8)
    image[:16, :24] = 250
    return image


def write_rotated(path: Path, degrees: int = 0, hflip: bool = False, vflip: bool = False, tag: str | None = None):
    """Three frames written with PyAV directly: a display matrix (degrees counter-clockwise, then mirrors, as PyAV
    defines it), or the old `rotate` metadata tag (degrees clockwise)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = *STORED, "yuv420p"
        if tag is not None:
            stream.metadata["rotate"] = tag
        else:
            stream.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(stored_frame(), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def bright_corner(image: np.ndarray) -> str:
    """Which corner holds the bright block: 'top-left', 'top-right', 'bottom-left' or 'bottom-right'."""
    h, w = image.shape[:2]
    quads = {
        "top-left": image[: h // 3, : w // 3],
        "top-right": image[: h // 3, -w // 3 :],
        "bottom-left": image[-h // 3 :, : w // 3],
        "bottom-right": image[-h // 3 :, -w // 3 :],
    }
    return max(quads, key=lambda q: quads[q].mean())


def test_a_portrait_phone_video_is_read_upright(tmp_path: Path):
    """An iPhone held upright records landscape pixels with a display matrix turning them a quarter clockwise
    (ffprobe: "rotation of -90 degrees"): the viewer sees a portrait picture, the stored top-left at top-right."""
    path = write_rotated(tmp_path / "portrait.mp4", degrees=-90)
    frames = list(read_frames(path))
    assert len(frames) == 3 and frames[0].shape == (STORED[0], STORED[1], 3)  # portrait: 64 high, 48 wide
    assert bright_corner(frames[0]) == "top-right"
    assert frames[0].flags.c_contiguous


ORIENTATIONS = [(90, False, False), (180, False, False), (0, True, False), (0, False, True)]
ORIENTATIONS += [(90, True, False), (-90, False, True), (0, False, False)]


@pytest.mark.parametrize(("degrees", "hflip", "vflip"), ORIENTATIONS)
def test_every_display_matrix_orientation_is_applied(tmp_path: Path, degrees: int, hflip: bool, vflip: bool):
    """PyAV's set_display_rotation: turn counter-clockwise by `degrees`, then mirror (EXIF's eight orientations)."""
    expected = np.rot90(stored_frame(), degrees // 90)
    expected = expected[:, ::-1] if hflip else expected
    expected = expected[::-1] if vflip else expected
    (got,) = list(read_frames(write_rotated(tmp_path / "r.mp4", degrees, hflip, vflip)))[:1]
    assert got.shape == expected.shape
    assert bright_corner(got) == bright_corner(expected)
    assert np.abs(got.astype(int) - expected).mean() < 8  # the same picture, up to the codec's loss


def test_the_old_rotate_tag_is_honoured(tmp_path: Path):
    """Files from before the display matrix carry a `rotate` tag (degrees clockwise); FFmpeg reads it back from
    Matroska as ROTATE."""
    frames = list(read_frames(write_rotated(tmp_path / "tagged.mkv", tag="90")))
    assert frames[0].shape == (STORED[0], STORED[1], 3) and bright_corner(frames[0]) == "top-right"


def test_predict_writes_the_video_upright_without_a_display_rotation(weights: Path, tmp_path: Path):
    """Upright pixels and no display matrix: every player (also those that ignore the matrix) shows the output as
    the viewer saw the input, with the boxes where the JSON lines put them."""
    clip = write_rotated(tmp_path / "portrait.mp4", degrees=-90)
    out = tmp_path / "out"
    assert main(["predict", str(weights), str(clip), "--conf", "0.99", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in (out / "portrait.jsonl").read_text().splitlines()]
    assert [(r["width"], r["height"]) for r in lines] == [(STORED[1], STORED[0])] * 3  # portrait, as seen
    with av.open(str(out / "portrait.mp4")) as container:
        frame = next(container.decode(video=0))
        assert frame.side_data.get("DISPLAYMATRIX") is None and frame.rotation == 0
        raw = frame.to_ndarray(format="rgb24")  # the stored pixels, without any turn applied
    assert raw.shape == (STORED[0], STORED[1], 3) and bright_corner(raw) == "top-right"


# ---------------------------------------------------------------- time stamps
VFR_MS = [0, 40, 200, 240, 1000]  # a variable frame rate: bursts and a pause, as phones and screen recorders write


def write_vfr(path: Path) -> Path:
    """A clip whose frames are at VFR_MS milliseconds (their presentation time stamps), written with PyAV."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for image, ms in zip(clip_frames() + clip_frames()[:1], VFR_MS, strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_each_frame_of_a_variable_frame_rate_clip_has_its_own_presentation_time(weights: Path, tmp_path: Path):
    clip = write_vfr(tmp_path / "vfr.mp4")
    seconds = [ms / 1000 for ms in VFR_MS]  # not index / average rate (0, 0.2, 0.4, ... at its 4.8 fps)
    assert [r.time for r in hydradet.load(weights).predict(clip, conf=0.99)] == pytest.approx(seconds)
    assert main(["predict", str(weights), str(clip), "--out", str(tmp_path / "out")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "out" / "vfr.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(len(VFR_MS))) and [r["time"] for r in lines] == seconds

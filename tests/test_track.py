"""Tracking (`Model.track`, `hydradet track`): one track id for an object moving across the frames of a small
synthetic video, one tracker per head, low-score frames bridged (ByteTrack's second stage), unique tracks per head
and class counted, track ids in the JSON lines and on the drawn boxes, and a clear message without the optional
package.

A tiny trained model does not detect reliably enough for this, so most tests run a stub backend that "detects" the
bright square in each frame (through the real letterbox, un-letterbox, video decoding and tracking); one CLI run on
a tiny model checks the files and JSON fields end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from test_infer_api import write_weights
from torch import Tensor

from hydradet.cli import main
from hydradet.errors import MissingDependency
from hydradet.infer.model import Model
from hydradet.infer.settings import HeadSettings, default_settings
from hydradet.infer.track import TrackCounts
from hydradet.model.detect_head import Detections

pytest.importorskip("trackers")

SIZE = (160, 120)  # (w, h)
FPS = 10
SQUARE = 24  # px


def frame_with_square(i: int, brightness: int = 255) -> np.ndarray:
    """A dark frame with a bright square moving 8 px right per frame."""
    image = np.full((SIZE[1], SIZE[0], 3), 20, np.uint8)
    x, y = 10 + 8 * i, 40
    image[y : y + SQUARE, x : x + SQUARE] = brightness
    return image


class SquareBackend:
    """A detector whose predictions the test controls: the bright pixels' bounding box, score 0.9 for a white
    square and 0.2 for a grey one; in the `person` head as class 0 and in the `animal` head as class 2."""

    def __init__(self) -> None:
        self.classes = {"person": ["person"], "animal": ["dog", "bird", "giraffe"]}
        self.tasks = {"person": "detect", "animal": "detect"}
        self.imgsz = 160

    def defaults(self) -> dict[str, HeadSettings]:
        return default_settings(self.classes, {"person": 0.5, "animal": 0.5})

    def check_imgsz(self, imgsz: int | None) -> int:
        return imgsz or self.imgsz

    def check_settings(self, settings: dict[str, HeadSettings]) -> None:
        pass

    def detect(self, images: Tensor, settings: dict[str, HeadSettings]) -> dict[str, list[Detections | Tensor]]:
        out: dict[str, list[Detections | Tensor]] = {h: [] for h in settings}
        for image in images:
            grey = image.mean(0)
            ys, xs = (grey > 0.5).nonzero(as_tuple=True)
            box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
            score = torch.tensor([0.9 if grey.max() > 0.9 else 0.2])
            for h, s in settings.items():
                keep = score > s.conf
                label = torch.tensor([0 if h == "person" else 2])
                out[h].append(Detections(box[keep], score[keep], label[keep]))
        return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """8 frames of the moving square, written with PyAV directly (as tests/test_video.py does)."""
    path = tmp_path_factory.mktemp("clip") / "square.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        for i in range(8):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_with_square(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_an_object_moving_across_a_video_keeps_one_track_id_per_head(clip: Path):
    results = Model(SquareBackend()).track(clip)
    assert [r.frame for r in results] == list(range(8))
    for head in ("person", "animal"):
        tracked = [r.heads[head] for r in results]
        # A new track is confirmed on its second frame; from then on the square is one track.
        assert len(tracked[0]) == 0 and all(len(t) == 1 for t in tracked[1:])
        assert {int(t.track_ids[0]) for t in tracked[1:]} == {0}  # each head's tracker numbers its own tracks
        # The reported box is the detector's, not the tracker's prediction: it moves with the square.
        xs = [float(t.boxes[0, 0]) for t in tracked[1:]]
        assert np.allclose(np.diff(xs), 8, atol=1.5)
    assert results[3].heads["animal"].names == ["giraffe"]
    assert results[3].heads["person"].labels("person") == ["person:person 0.90 #0"]
    assert results[3].to_json()["heads"]["person"][0]["track_id"] == 0
    counts = TrackCounts()
    for r in results:
        counts.add(r)
    assert counts.counts() == {("person", "person"): 1, ("animal", "giraffe"): 1}


def test_a_low_score_frame_keeps_the_track_alive():
    """Frame 4's square scores 0.2, under the heads' conf 0.5: it cannot start a track, but it extends the existing
    one (the detector runs at 0.1 while tracking), so the object keeps its id instead of getting a new one."""
    frames = [frame_with_square(i, 160 if i == 4 else 255) for i in range(8)]
    results = Model(SquareBackend()).track(frames, heads="person")
    tracked = [r.heads["person"] for r in results]
    assert all(len(t) == 1 for t in tracked[1:])
    assert float(tracked[4].scores[0]) == pytest.approx(0.2)
    assert {int(t.track_ids[0]) for t in tracked[1:]} == {0}
    # predict, by contrast, drops the grey square: its score is under the head's conf.
    assert len(Model(SquareBackend()).predict(frames[4], heads="person")[0].heads["person"]) == 0


def test_hydradet_track_writes_a_video_and_jsonl_with_track_ids(tmp_path: Path, clip: Path, capsys):
    weights = write_weights(tmp_path / "model.safetensors")
    out = tmp_path / "out"
    assert main(["track", str(weights), str(clip), "--conf", "0.5", "--out", str(out)]) == 0
    assert (out / "square.mp4").is_file()
    lines = [json.loads(line) for line in (out / "square.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(8))
    assert all(set(r["heads"]) == {"person", "animal"} and "time" in r for r in lines)
    boxes = [d for r in lines for ds in r["heads"].values() for d in ds]
    assert boxes and all(isinstance(d["track_id"], int) and d["track_id"] >= 0 for d in boxes)
    printed = capsys.readouterr().out
    assert "tracks" in printed and "0 images, 1 videos: 8 frames" in printed
    # Images are not something to track.
    image = tmp_path / "frame.png"
    Image.fromarray(frame_with_square(0)).save(image)
    assert main(["track", str(weights), str(image), "--out", str(tmp_path / "img")]) == 2
    assert "not a video" in capsys.readouterr().err


def test_without_the_trackers_package_a_clear_message_not_a_traceback(monkeypatch, tmp_path: Path, clip: Path, capsys):
    monkeypatch.setitem(sys.modules, "trackers", None)  # `import trackers` now raises ImportError
    with pytest.raises(MissingDependency, match=r"pip install 'hydradet\[track\]'"):
        Model(SquareBackend()).track(clip)
    weights = write_weights(tmp_path / "model.safetensors")
    assert main(["track", str(weights), str(clip), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'hydradet[track]'" in err and "Traceback" not in err


def test_tracked_results_convert_to_supervision_with_their_ids(clip: Path):
    results = Model(SquareBackend()).track(clip, heads="person")
    detections = results[2].to_supervision()["person"]
    assert detections.tracker_id.tolist() == [0]

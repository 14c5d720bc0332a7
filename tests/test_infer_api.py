"""The Python API: `hydradet.load(path).predict(source)` on every kind of source, per-head settings, heads that
are not asked for never run, results that draw, save and convert, the CLI giving the same detections, and
weights loading that never runs code from the file.

The model is randomly initialised with its output layers spread out (weights std 0.3 instead of 0.01), so
that scores differ from place to place and a threshold keeps a handful of distinct detections per image.
"""

from __future__ import annotations

import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image

import hydradet
from hydradet.cli import main
from hydradet.data.dataset import letterbox, load_image, unletterbox
from hydradet.errors import WeightsError
from hydradet.infer.results import Result
from hydradet.infer.settings import SettingError
from hydradet.model.detector import HydraDetector
from hydradet.model.weights import save_weights

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-train" / "images"
# Landscape, portrait, small portrait, greyscale, square: every letterbox case.
REAL = [IMAGES / f"000000000{n}.jpg" for n in ("009", "036", "049", "086", "078")]
needs_images = pytest.mark.skipif(not IMAGES.is_dir(), reason=f"{IMAGES} not present (shared data missing)")
CONF = 0.8


def spread_model(seed: int = 0, imgsz: int = 128) -> HydraDetector:
    # Per-head towers, not the default shared one: random prediction layers on a head's own random tower spread
    # its scores over (0, 1) at every seed, which these plumbing tests need; behind the shared tower they rarely
    # pass 0.8. (The shared tower's export is covered by the trained models of test_export and the demo's.)
    layout = ("model.shared_convs=0", "model.head_convs=2")
    cfg = tiny_config("model.backbone=shufflenet_v2_x0_5", f"model.imgsz={imgsz}", *layout)
    torch.manual_seed(seed)
    model = HydraDetector(cfg.model, cfg.heads)
    with torch.no_grad():
        for head in model.heads.values():
            for conv in (head.cls_logits, head.ctr_pred, head.box_pred):
                torch.nn.init.normal_(conv.weight, std=0.3)
            head.cls_logits.bias.fill_(-2.0)
            head.box_pred.bias.fill_(1.0)
    return model.eval()


def write_weights(path: Path, seed: int = 0) -> Path:
    save_weights(spread_model(seed), path)
    return path


def synthetic_images(n: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random pictures of a few sizes (noise alone would give the same scores everywhere)."""
    g = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = [(120, 160), (160, 96), (100, 100)][i % 3]
        small = g.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        out.append(np.array(Image.fromarray(small).resize((w, h), Image.BILINEAR)))
    return out


def assert_same(a: list[Result], b: list[Result], atol: float = 1e-3) -> None:
    """Same heads, same number of detections, same classes, boxes and scores within atol."""
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert ra.heads.keys() == rb.heads.keys()
        for h in ra.heads:
            x, y = ra.heads[h], rb.heads[h]
            assert len(x) == len(y), (h, len(x), len(y))
            assert x.class_ids.tolist() == y.class_ids.tolist()
            assert x.names == y.names
            np.testing.assert_allclose(x.boxes, y.boxes, atol=atol * 100)  # pixels
            np.testing.assert_allclose(x.scores, y.scores, atol=atol)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_weights(tmp_path_factory.mktemp("w") / "model.safetensors")


@pytest.fixture(scope="module")
def model(weights: Path):
    return hydradet.load(weights)


@needs_images
def test_load_then_predict_gives_per_head_detections_in_original_pixels(model, weights: Path):
    results = model.predict(REAL, conf=CONF)
    assert [r.path for r in results] == REAL
    assert model.heads == ["person", "animal"] and model.classes["animal"] == ["dog", "bird", "giraffe"]
    total = 0
    for r, path in zip(results, REAL, strict=True):
        with Image.open(path) as im:
            assert (r.width, r.height) == im.size
        assert r.orig_img.shape == (r.height, r.width, 3)
        for h, hr in r.heads.items():
            total += len(hr)
            assert (hr.scores > CONF).all() and (np.diff(hr.scores) <= 0).all()  # best first
            assert hr.names == [model.classes[h][c] for c in hr.class_ids]
            assert (hr.boxes >= 0).all() and (hr.boxes[:, [0, 2]] <= r.width).all()
            assert (hr.boxes[:, [1, 3]] <= r.height).all()
    assert total > 5  # the test means something only with detections

    # The same numbers as the model's own forward and postprocess, mapped back by the letterbox scale.
    net = spread_model()
    x, scale = letterbox(load_image(REAL[1]), 128)
    with torch.no_grad():
        det = net.heads["person"].postprocess(net(x[None].float() / 255)["person"], CONF, 0.5, 100)[0]
    expected = unletterbox(det.boxes, scale, (results[1].width, results[1].height)).numpy()
    np.testing.assert_allclose(results[1].heads["person"].boxes, expected, atol=1e-3)


def test_every_kind_of_source_gives_the_same_detections(model, tmp_path: Path):
    arrays = synthetic_images(3)
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for i, a in enumerate(arrays):
        paths.append(folder / f"im{i}.png")
        Image.fromarray(a).save(paths[-1])
    expected = model.predict(arrays, conf=CONF)
    assert sum(len(h) for r in expected for h in r.heads.values()) > 0
    assert expected[0].path is None
    for source in (paths, [str(p) for p in paths], folder, str(folder / "im*.png")):
        assert_same(model.predict(source, conf=CONF), expected, atol=1e-5)
    assert_same(model.predict(paths[1], conf=CONF), expected[1:2], atol=1e-5)
    assert_same(model.predict(Image.fromarray(arrays[2]), conf=CONF), expected[2:], atol=1e-5)
    # Batching is an implementation detail: one at a time gives the same as all together.
    assert_same(model.predict(arrays, conf=CONF, batch=1), expected, atol=1e-5)
    streamed = model.predict(arrays, conf=CONF, stream=True)
    assert not isinstance(streamed, list)
    assert_same(list(streamed), expected, atol=1e-5)


def test_heads_runs_only_those_heads_and_the_others_do_not_run(weights: Path):
    model = hydradet.load(weights)
    calls = {h: 0 for h in model.heads}
    net = model.backend.model
    for h in calls:
        net.heads[h].register_forward_hook(lambda *_a, h=h: calls.__setitem__(h, calls[h] + 1))
    images = synthetic_images(2)
    only = model.predict(images, heads=["person"], conf=CONF)
    assert calls == {"person": 1, "animal": 0}
    assert all(list(r.heads) == ["person"] for r in only)
    both = model.predict(images, conf=CONF)
    assert_same(only, [Result({"person": r.heads["person"]}, r.orig_img) for r in both], atol=1e-5)
    assert model.predict(images, heads="animal")[0].heads.keys() == {"animal"}


def test_per_head_conf_and_iou_are_each_honoured(model):
    images = synthetic_images(3)
    loose = model.predict(images, conf=0.5)
    mixed = model.predict(images, conf={"person": 0.9, "animal": 0.5})
    for lo, mi in zip(loose, mixed, strict=True):
        assert (mi.heads["person"].scores > 0.9).all()
        keep = lo.heads["person"].scores > 0.9
        np.testing.assert_allclose(mi.heads["person"].boxes, lo.heads["person"].boxes[keep])
        np.testing.assert_allclose(mi.heads["animal"].boxes, lo.heads["animal"].boxes)  # untouched: 0.5 as before
    assert any((lo.heads["person"].scores <= 0.9).any() for lo in loose)  # the filter had something to drop
    # A stricter IoU for one head suppresses more of its boxes and none of the other head's.
    strict = model.predict(images, conf=0.5, iou={"animal": 0.05})
    assert sum(len(r.heads["animal"]) for r in strict) < sum(len(r.heads["animal"]) for r in loose)
    assert [len(r.heads["person"]) for r in strict] == [len(r.heads["person"]) for r in loose]


def test_calibrated_conf_in_the_weights_is_each_heads_default_and_an_explicit_conf_wins(tmp_path: Path):
    model = spread_model()
    model.calibrated_conf = {"person": 0.9}  # as training stores it; animal has none: predict.conf applies
    save_weights(model, tmp_path / "w.safetensors")
    loaded = hydradet.load(tmp_path / "w.safetensors")
    images = synthetic_images(3)
    default, explicit = loaded.predict(images), loaded.predict(images, conf={"person": 0.5})
    assert {h: s.conf for h, s in loaded.settings(None)[0].items()} == {"person": 0.9, "animal": 0.4}
    assert all(float(r.heads["person"].scores.min(initial=1)) > 0.9 for r in default)
    assert sum(len(r.heads["person"].boxes) for r in explicit) > sum(len(r.heads["person"].boxes) for r in default)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"heads": ["person", "cat"]}, "unknown ['cat']"),
        ({"conf": 1.5}, "not in [0, 1]"),
        ({"conf": {"cat": 0.3}}, "no head named ['cat']"),
        ({"iou": 0}, "not in (0, 1]"),
        ({"imgsz": 100}, "multiple of 32"),
        ({"batch": 0}, "batch"),
    ],
)
def test_bad_settings_raise_a_value_error_that_names_the_problem(model, kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        model.predict(synthetic_images(1), **kwargs)


def test_bad_sources_are_refused_clearly(model, tmp_path: Path):
    with pytest.raises(SettingError, match="dtype int64"):  # float and uint16 are pictures (test_image_modes.py)
        model.predict(np.zeros((8, 8, 3), np.int64))
    with pytest.raises(FileNotFoundError, match="no such image"):
        model.predict(tmp_path / "missing.jpg")
    with pytest.raises(FileNotFoundError, match="matches no file"):
        model.predict(str(tmp_path / "*.jpg"))


def test_plot_save_and_to_coco(model, tmp_path: Path):
    image = synthetic_images(1)[0]
    r = model.predict(image, conf=0.5)[0]
    assert len(r.heads["person"]) > 0
    drawn = r.plot()
    assert drawn.shape == image.shape and drawn.dtype == np.uint8 and not np.array_equal(drawn, image)
    assert np.array_equal(r.orig_img, image)  # drawing works on a copy
    saved = r.save(tmp_path / "sub" / "drawn.png")
    assert np.array_equal(np.asarray(Image.open(saved)), drawn)
    coco = r.to_coco(image_id=7)
    assert len(coco) == sum(len(h) for h in r.heads.values())
    first = coco[0]
    x0, y0, x1, y1 = r.heads[first["head"]].boxes[0]
    assert first["image_id"] == 7 and first["category_name"] == r.heads[first["head"]].names[0]
    np.testing.assert_allclose(first["bbox"], [x0, y0, x1 - x0, y1 - y0], atol=0.01)
    json.dumps(coco)  # plain Python types only


def test_to_coco_takes_the_image_id_from_a_coco_file_name(model, tmp_path: Path):
    path = tmp_path / "000000000139.jpg"
    Image.fromarray(synthetic_images(1)[0]).save(path)
    r = model.predict(path, conf=0.5)[0]
    assert {d["image_id"] for d in r.to_coco()} == {139}


def test_to_supervision_needs_supervision_and_says_so(model, monkeypatch):
    r = model.predict(synthetic_images(1), conf=0.5)[0]
    monkeypatch.setitem(sys.modules, "supervision", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install supervision"):
        r.to_supervision()

    class Detections:  # supervision's constructor signature, enough to check what we pass
        def __init__(self, xyxy, confidence, class_id, data):
            self.xyxy, self.confidence, self.class_id, self.data = xyxy, confidence, class_id, data

    monkeypatch.setitem(sys.modules, "supervision", types.SimpleNamespace(Detections=Detections))
    sv = r.to_supervision()
    assert sv.keys() == r.heads.keys()
    np.testing.assert_array_equal(sv["person"].xyxy, r.heads["person"].boxes)
    assert list(sv["animal"].data["class_name"]) == r.heads["animal"].names


def test_cli_predict_writes_the_same_detections_as_the_api(model, weights: Path, tmp_path: Path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, a in enumerate(synthetic_images(3)):
        Image.fromarray(a).save(folder / f"im{i}.png")
    out = tmp_path / "out"
    assert main(["predict", str(weights), str(folder), "--conf", "person=0.9,animal=0.5", "--out", str(out)]) == 0
    records = json.loads((out / "predictions.json").read_text())
    api = model.predict(folder, conf={"person": 0.9, "animal": 0.5})
    assert records == [r.to_json() for r in api]
    assert sorted(p.name for p in out.glob("*.jpg")) == ["im0.jpg", "im1.jpg", "im2.jpg"]


def test_cli_predict_prints_counts_per_head_and_class(weights: Path, tmp_path: Path, capsys):
    Image.fromarray(synthetic_images(1)[0]).save(tmp_path / "a.png")
    assert main(["predict", str(weights), str(tmp_path / "a.png"), "--conf", "0.5", "--out", str(tmp_path / "o")]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.startswith(("person ", "animal "))]
    assert {r[0] for r in rows} == {"person", "animal"}
    counted = sum(int(r[2]) for r in rows)
    records = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert counted == sum(len(d) for d in records[0]["heads"].values()) > 0


def test_cli_predict_bad_conf_exits_2(weights: Path, tmp_path: Path, capsys):
    assert main(["predict", str(weights), str(tmp_path), "--conf", "person=high"]) == 2
    assert "head=number pairs" in capsys.readouterr().err


class _Trap:
    """Unpickling this creates a file: proof that the loader would have run code from the weights file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["model.pt", "model.safetensors"])
def test_loading_weights_never_runs_code_from_the_file(tmp_path: Path, name: str):
    marker = tmp_path / "code_ran"
    path = tmp_path / name
    path.write_bytes(pickle.dumps({"w": _Trap(marker)}))
    with pytest.raises(WeightsError):
        hydradet.load(path)
    assert not marker.exists()

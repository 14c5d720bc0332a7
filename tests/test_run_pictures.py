"""Pictures of a run (train.plots) and TensorBoard (train.tensorboard), through the CLI on a tiny synthetic world:
every picture is written and is a valid image; train.plots=false writes none and never imports matplotlib; the
train batch picture shows a head's colour only on samples whose source labels it; balancing weights land in
results.csv and TensorBoard; a missing tensorboard package is a config error naming the fix."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CLI_FAST as FAST
from conftest import make_batch, tiny_config
from PIL import Image

from hydradet.cli import main
from hydradet.config.schema import HeadConfig
from hydradet.eval.batch_pictures import batch_picture
from hydradet.eval.coco_map import ImageBoxes
from hydradet.eval.confusion import detect_confusion
from hydradet.eval.evaluate import EvalDetails
from hydradet.eval.run_log import eval_pictures
from hydradet.palette import head_colour

HEADS = ("person", "animal")
EVAL_PICTURES = [
    *(f"{kind}_{h}.png" for h in HEADS for kind in ("PR_curve", "F1_curve", "confusion_matrix")),
    "val_batch0_labels.jpg",
    "val_batch0_pred.jpg",
]
RUN_PICTURES = ["results.png", "train_batch0.jpg", "train_batch1.jpg", "train_batch2.jpg", *EVAL_PICTURES]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    assert main(["synth", str(root), "--train-images", "8", "--val-images", "4", "--seed", "3"]) == 0
    return root


@pytest.fixture(scope="module")
def run(world: Path, tmp_path_factory) -> Path:
    """One epoch with pictures (on by default; FAST turns them off), TensorBoard, and learned balancing weights
    (uncertainty)."""
    project = tmp_path_factory.mktemp("runs")
    args = ["train", str(world / "hydradet.yaml"), "train.epochs=1", f"project={project}", "name=a", *FAST]
    assert main([*args, "train.plots=true", "train.tensorboard=true", "train.balance.method=uncertainty"]) == 0
    return project / "a"


def assert_image(path: Path) -> None:
    assert path.is_file(), path.name
    with Image.open(path) as im:
        im.verify()  # a whole, decodable file
    with Image.open(path) as im:
        assert min(im.size) >= 150 and max(im.size) <= 4000, (path.name, im.size)
    assert path.stat().st_size < 1_000_000, path.name


def test_every_picture_of_a_run_is_written_and_a_valid_image(run: Path):
    for name in RUN_PICTURES:
        assert_image(run / name)


def test_plots_off_writes_no_picture_and_never_imports_matplotlib(world: Path, tmp_path: Path, monkeypatch):
    # A None entry in sys.modules makes any `import matplotlib` raise: the run would fail if it drew anything.
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    args = ["train", str(world / "hydradet.yaml"), "train.epochs=1", f"project={tmp_path}", "name=no_plots", *FAST]
    assert main([*args, "train.plots=false"]) == 0  # as in FAST; said here as it is what is tested
    run = tmp_path / "no_plots"
    assert (run / "results.csv").is_file()
    assert not [p.name for p in run.iterdir() if p.suffix in (".png", ".jpg")]


def test_train_batch_picture_shows_a_head_only_on_samples_whose_source_labels_it():
    """Black images, so that a head's colour can only come from what was drawn for it: its boxes and its chip."""
    cfg = tiny_config()
    sources = ["persons", "animals", "both", "animals"]
    batch = make_batch(cfg, sources)
    batch.images.zero_()
    classes = {h: cfg.heads[h].classes for h in cfg.heads}
    picture = np.asarray(batch_picture(batch.images, batch.targets, batch.sources, classes))
    tile = picture.shape[0] // 2  # 4 samples: a 2 x 2 grid of 64-pixel tiles
    for i, source in enumerate(sources):
        cell = picture[(i // 2) * tile : (i // 2 + 1) * tile, (i % 2) * tile : (i % 2 + 1) * tile]
        for head in cfg.heads:
            rgb = np.array(Image.new("RGB", (1, 1), head_colour(head, list(cfg.heads))).getpixel((0, 0)))
            shown = bool((cell == rgb).all(-1).any())
            assert shown == (head in cfg.sources[source].labels), (source, head)


def test_balance_weights_are_results_csv_columns(run: Path):
    rows = list(csv.DictReader((run / "results.csv").open()))
    for head in HEADS:
        w = float(rows[0][f"balance/{head}"])
        assert 0.3 < w < 0.7  # exp(-s) / 2 with s learned from 0 for a handful of steps


def test_tensorboard_holds_the_scalars_and_pictures(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ["lr", *(f"loss/{h}" for h in HEADS), *(f"{h}/mAP50" for h in HEADS), *(f"balance/{h}" for h in HEADS)]:
        assert tag in scalars, tag
    assert [e.step for e in events.Scalars("loss/person")] == [1]  # one value per epoch
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert events.Scalars("lr")[0].value == pytest.approx(float(rows[0]["lr"]), rel=1e-5)
    assert {"train_batch0", "val_batch0_pred"} <= set(events.Tags()["images"])


def test_missing_tensorboard_is_a_config_error_naming_the_fix(world: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` raises ImportError
    args = ["train", str(world / "hydradet.yaml"), f"project={tmp_path}", "name=tb", "train.tensorboard=true", *FAST]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "train.tensorboard" in err and "pip install tensorboard" in err and "Traceback" not in err
    assert not (tmp_path / "tb").exists()  # stopped before the run got a folder


def test_val_writes_the_evaluation_pictures(world: Path, run: Path, tmp_path: Path):
    out = tmp_path / "val"
    weights = run / "weights" / "best.safetensors"
    assert main(["val", str(world / "hydradet.yaml"), str(weights), *FAST, "train.plots=true", "--out", str(out)]) == 0
    for name in EVAL_PICTURES:
        assert_image(out / name)


def test_classify_head_gets_a_confusion_matrix_and_no_curves(tmp_path: Path):
    heads = {
        "gender": HeadConfig(task="classify", classes=["female", "male"]),
        "age": HeadConfig(task="regress"),
    }
    details = EvalDetails(pairs={"gender": [(0, 0), (1, 0), (1, 1)], "age": [(30.0, 28.0)]})
    eval_pictures(details, heads, {}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion_matrix_gender.png"]
    assert_image(tmp_path / "confusion_matrix_gender.png")


def test_detect_confusion_counts_hits_confusions_misses_and_false_positives():
    gt = ImageBoxes(
        np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], np.float32),
        np.array([0, 1, 1]),
        ignore=np.array([[80, 80, 100, 100]], np.float32),
    )
    pred = ImageBoxes(
        np.array([[0, 0, 10, 11], [20, 20, 30, 30], [40, 0, 48, 8], [82, 82, 90, 90], [0, 0, 10, 10]], np.float32),
        np.array([0, 0, 1, 1, 1]),
        scores=np.array([0.9, 0.8, 0.7, 0.9, 0.1]),  # the last is below conf: not counted
    )
    m = detect_confusion([gt], [pred], n_classes=2, conf=0.25)
    expected = np.zeros((3, 3), np.int64)
    expected[0, 0] = 1  # class 0 found as 0
    expected[0, 1] = 1  # a class 1 object detected as class 0 (matched whatever the class, as Ultralytics)
    expected[2, 1] = 1  # a class 1 object missed: background row
    expected[1, 2] = 1  # a class 1 detection on nothing: background column (the one on the ignore region is not)
    np.testing.assert_array_equal(m, expected)

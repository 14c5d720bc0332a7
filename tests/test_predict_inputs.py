"""What `hydradet predict` does with inputs a real folder holds: a file that is not an image, a corrupt or a
truncated JPEG is skipped, named and counted, and the good images still get their outputs; the summary says
which thresholds each head ran with. A run folder or checkpoint.pt given as weights is answered with its
best.safetensors."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config, tiny_model
from PIL import Image

import hydradet
from hydradet.cli import main
from hydradet.infer.sources import SkippedInputWarning
from hydradet.model.weights import save_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "exp"
    (run / "weights").mkdir(parents=True)
    model = tiny_model(tiny_config())
    model.calibrated_conf = {"person": 0.37}
    save_weights(model, run / "weights" / "best.safetensors")
    (run / "weights" / "checkpoint.pt").write_bytes(b"not read")
    return run / "weights" / "best.safetensors"


def _jpeg(path: Path, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_predict_skips_and_counts_files_that_are_not_readable_images(weights: Path, tmp_path: Path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _jpeg(folder / "a.jpg", 0)
    good = _jpeg(folder / "b.jpg", 1)
    (folder / "c_truncated.jpg").write_bytes(good[: len(good) // 2])  # cut off, as a failed copy leaves it
    (folder / "d_fake.jpg").write_text("not a picture")
    notes = tmp_path / "notes.txt"
    notes.write_text("a text file given by name")
    out = tmp_path / "out"
    assert main(["predict", str(weights), str(folder), str(notes), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    records = json.loads((out / "predictions.json").read_text())
    assert [Path(r["image"]).name for r in records] == ["a.jpg", "b.jpg"]
    assert sorted(p.name for p in out.glob("*.jpg")) == ["a.jpg", "b.jpg"]
    assert printed.startswith("2 images, 0 videos: 2 frames")
    assert "skipped: 3 input(s) that are not readable images:" in printed
    for name in ("c_truncated.jpg", "d_fake.jpg", "notes.txt"):
        assert f"{name} (" in printed
    # The thresholds used: person's calibrated conf from the weights, animal's predict.conf default.
    assert "person: conf > 0.37, NMS IoU " in printed and "animal: conf > 0.4, NMS IoU " in printed


def test_the_python_api_warns_naming_a_skipped_file_and_goes_on(weights: Path, tmp_path: Path):
    _jpeg(tmp_path / "a.jpg", 0)
    (tmp_path / "b.jpg").write_text("not a picture")
    model = hydradet.load(weights)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = model.predict(tmp_path)
    assert [r.path.name for r in results] == ["a.jpg"]
    skipped = [w for w in caught if issubclass(w.category, SkippedInputWarning)]
    assert len(skipped) == 1 and str(tmp_path / "b.jpg") in str(skipped[0].message)


@pytest.mark.parametrize("given", ["run", "weights_folder", "checkpoint"])
def test_a_run_folder_or_checkpoint_as_weights_names_its_best_safetensors(weights: Path, given: str, capsys):
    run, folder = weights.parent.parent, weights.parent
    path = {"run": run, "weights_folder": folder, "checkpoint": folder / "checkpoint.pt"}
    for command in (["predict", str(path[given]), str(weights)], ["export", str(path[given])]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"its weights are {weights}" in err, err
        assert "openvino" not in err.lower() and "save_file" not in err


def test_predict_with_no_readable_input_exits_2_saying_so(weights: Path, tmp_path: Path, capsys):
    (tmp_path / "fake.jpg").write_text("not a picture")
    assert main(["predict", str(weights), str(tmp_path / "fake.jpg"), "--out", str(tmp_path / "out")]) == 2
    assert "none of the inputs is a readable image or video" in capsys.readouterr().err


def test_a_run_stopped_before_its_first_best_is_answered_with_the_resume_command(tmp_path: Path, capsys):
    run = tmp_path / "stopped"
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "checkpoint.pt").write_bytes(b"not read")
    for given in (run, run / "weights" / "checkpoint.pt"):
        assert main(["export", str(given)]) == 2
        assert f"continue it: hydradet train --resume {run}" in capsys.readouterr().err

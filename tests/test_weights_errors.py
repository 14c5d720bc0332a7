"""Weights files whose metadata disagrees with their tensors: a WeightsError naming the file, the mismatching
tensors and what it means, from every entry point (load_model, init_from, hydradet.load, predict, val, export),
before any tensor is loaded; and a warning for tensors holding NaN or inf."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLI_FAST, snapshot, tiny_config, tiny_model
from PIL import Image
from safetensors.torch import load_file, save_file

import hydradet
import hydradet.model.weights as weights_module
from hydradet.cli import main
from hydradet.errors import WeightsError
from hydradet.model.weights import NonFiniteWeightsWarning, init_from, load_model, read_metadata, save_weights


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "good.safetensors"
    save_weights(tiny_model(tiny_config()), path)
    return path


def rewrite(src: Path, dst: Path, meta: object = None, raw_meta: str | None = None, edit=None) -> Path:
    """A copy of src with its metadata replaced (meta as JSON, or raw text) and/or its tensors edited."""
    state = load_file(str(src))
    if edit is not None:
        edit(state)
    text = raw_meta if raw_meta is not None else json.dumps(meta if meta is not None else read_metadata(src))
    save_file(state, str(dst), metadata={"hydradet": text})
    return dst


def _meta(good: Path, change: Callable[[dict], None]) -> dict:
    meta = read_metadata(good)
    change(meta)
    return meta


def _resnet_with_shufflenet_meta(m: dict) -> None:
    m["model"]["backbone"] = "shufflenet_v2_x0_5"


# kind -> (how to break the good file, words the error must hold)
CASES: dict[str, tuple[Callable[[Path, Path], Path], list[str]]] = {
    "class count": (
        lambda g, d: rewrite(g, d, _meta(g, lambda m: m["heads"]["person"].update(classes=["person", "rider", "kid"]))),
        [
            "metadata says 3 classes for head person",
            "tensors have 1",
            "heads.person.cls_logits.weight: expected (3, 16, 3, 3), found (1, 16, 3, 3)",
        ],
    ),
    "neck width": (
        lambda g, d: rewrite(g, d, _meta(g, lambda m: m["model"].update(neck_width=32))),
        ["model.neck_width=32, the neck tensors have 16 channels", "expected (32,", "found (16,", "more"],
    ),
    "backbone": (
        lambda g, d: rewrite(g, d, _meta(g, _resnet_with_shufflenet_meta)),
        ["do not fit the metadata's model.backbone='shufflenet_v2_x0_5'", "not in the file", "more"],
    ),
    "missing tensor": (
        lambda g, d: rewrite(g, d, edit=lambda s: s.pop("heads.animal.box_pred.bias")),
        ["heads.animal.box_pred.bias: expected (4,), not in the file", "tensors: 1 missing from the file"],
    ),
    "missing head": (
        lambda g, d: rewrite(g, d, edit=lambda s: [s.pop(k) for k in list(s) if k.startswith("heads.person.")]),
        ["metadata lists head 'person' (detect) but the file holds no heads.person.* tensor"],
    ),
    "unlisted head": (
        lambda g, d: rewrite(g, d, _meta(g, lambda m: m["heads"].pop("person"))),
        ["the file holds tensors of heads ['person'] that the metadata does not list", "not in the model"],
    ),
    "not json": (lambda g, d: rewrite(g, d, raw_meta="{model: resnet"), ["metadata is not valid JSON"]),
    "no model": (lambda g, d: rewrite(g, d, _meta(g, lambda m: m.pop("model"))), ["has no `model` entry"]),
    "no heads": (lambda g, d: rewrite(g, d, _meta(g, lambda m: m.pop("heads"))), ["has no `heads` entry"]),
    "bad value": (
        lambda g, d: rewrite(g, d, _meta(g, lambda m: m["model"].update(neck_width="wide"))),
        ["metadata `model.neck_width`", "'wide'"],
    ),
    "bad head task": (
        lambda g, d: rewrite(g, d, _meta(g, lambda m: m["heads"]["animal"].update(task="segment"))),
        ["metadata `heads.animal.task`", "'segment'"],
    ),
}


@pytest.fixture(params=list(CASES))
def broken(request, good: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    make, words = CASES[request.param]
    return make(good, tmp_path / "broken.safetensors"), words


def assert_names(message: str, path: Path, words: list[str]) -> None:
    assert str(path) in message
    for w in words:
        assert w in message, f"{w!r} not in:\n{message}"


def test_load_model_raises_before_loading_any_tensor(broken, monkeypatch):
    path, words = broken
    monkeypatch.setattr(weights_module, "load_file", lambda *a: pytest.fail("tensors loaded before the check"))
    with pytest.raises(WeightsError) as e:
        load_model(path)
    assert_names(str(e.value), path, words)


def test_hydradet_load_raises_the_same(broken):
    path, words = broken
    with pytest.raises(WeightsError) as e:
        hydradet.load(path)
    assert_names(str(e.value), path, words)


def test_init_from_raises_and_leaves_the_model_untouched(broken):
    path, words = broken
    model = tiny_model(tiny_config(), seed=3)
    before = snapshot(model)
    with pytest.raises(WeightsError) as e:
        init_from(model, path)
    assert_names(str(e.value), path, words)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("command", ["predict", "val", "export"])
def test_cli_prints_the_error_and_exits_2(broken, command: str, tmp_path: Path, capsys):
    path, words = broken
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    config = tmp_path / "c.yaml"
    config.write_text("heads: {person: {task: detect, classes: [person]}}\n")
    argv = {
        "predict": ["predict", str(path), str(image), "--out", str(tmp_path / "out")],
        "val": ["val", str(config), str(path)],
        "export": ["export", str(path), "--out", str(tmp_path / "m.onnx")],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert_names(err, path, words)
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "out").exists()


def test_a_consistent_file_loads_without_warning(good: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_model(good)
        init_from(tiny_model(tiny_config(), seed=1), good)
    assert set(model.heads) == {"person", "animal"}


def nan_weights(dst: Path) -> Path:
    model = tiny_model(tiny_config())
    with torch.no_grad():
        model.heads["person"].cls_logits.weight[0, 0, 0, 0] = float("nan")
        model.neck.inner_blocks[0][0].bias[0] = float("inf")
    save_weights(model, dst)
    return dst


def test_non_finite_tensors_warn_on_load_and_init(tmp_path: Path):
    path = nan_weights(tmp_path / "nan.safetensors")
    total = len(load_file(str(path)))
    for load in (load_model, lambda p: init_from(tiny_model(tiny_config(), seed=1), p)):
        with pytest.warns(NonFiniteWeightsWarning) as record:
            load(path)
        message = str(record[0].message)
        assert str(path) in message and f"2 of {total} tensors hold NaN or inf" in message
        assert "heads.person.cls_logits.weight" in message and "loss diverged" in message


def test_the_cli_shows_the_non_finite_warning(tmp_path: Path):
    path = nan_weights(tmp_path / "nan.safetensors")
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    argv = [sys.executable, "-m", "hydradet", "predict", str(path), str(image), "--out", str(tmp_path / "out")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "NonFiniteWeightsWarning" in done.stderr and "2 of" in done.stderr and "NaN or inf" in done.stderr


@pytest.mark.parametrize("kind", ["class count", "not json", "no heads"])
def test_train_with_an_inconsistent_model_init_exits_2(kind: str, good: Path, tmp_path: Path, capsys):
    world = tmp_path / "world"
    assert main(["synth", str(world), "--train-images", "2", "--val-images", "2"]) == 0
    make, words = CASES[kind]
    path = make(good, tmp_path / "init.safetensors")
    # The file's model (resnet18, neck 16) is the run's: the check, not a shape difference, must stop it.
    argv = ["train", str(world / "hydradet.yaml"), f"model.init={path}", *CLI_FAST, "model.backbone=resnet18"]
    argv += [f"project={tmp_path / 'runs'}", "train.epochs=1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert_names(err, path, words)

"""What a user of Ultralytics types first works or is answered with the full key: `data=CONFIG`, `epochs=`,
`imgsz=`, `batch=` as shortcuts, `model=` answered with model.init / model.backbone, a top-level name of a nested
key (`mosaic`, `hflip`) answered with that key; `--version`; `train --help` lists the common keys with their
defaults and default.yaml's path; `val WEIGHTS` alone uses the config the weights were trained with."""

from __future__ import annotations

import csv
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import CLI_FAST

from hydradet.cli import main
from hydradet.config.load import DEFAULT_YAML, load_config


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    assert main(["synth", str(root), "--train-images", "6", "--val-images", "4", "--seed", "2"]) == 0
    return root


def test_shortcuts_set_the_full_keys(world: Path):
    cfg = load_config(world / "hydradet.yaml", ["epochs=7", "imgsz=256", "batch=3", "lr0=0.01", "device=cpu"])
    assert (cfg.train.epochs, cfg.model.imgsz, cfg.train.batch, cfg.train.lr, cfg.train.device) == (
        7,
        256,
        3,
        0.01,
        "cpu",
    )


def test_data_equals_config_trains_and_val_without_a_config_uses_the_run_s(world: Path, tmp_path: Path, capsys):
    args = [*CLI_FAST, "train.steps_per_epoch=1", f"project={tmp_path}"]
    assert main(["data", "check", f"data={world / 'hydradet.yaml'}", f"project={tmp_path}"]) == 0
    assert main(["train", f"data={world / 'hydradet.yaml'}", "epochs=2", *args]) == 0
    rows = list(csv.DictReader((tmp_path / "train" / "results.csv").open()))
    assert len(rows) == 2  # epochs=2 took effect
    capsys.readouterr()
    weights = tmp_path / "train" / "weights" / "best.safetensors"
    assert main(["val", str(weights), *CLI_FAST]) == 0
    out = capsys.readouterr().out
    assert f"val: the config {weights} was trained with: {(tmp_path / 'train' / 'config.yaml').resolve()}" in out
    assert "mAP50-95" in out and any(line.startswith("person") for line in out.splitlines())
    # The older order still works, and data= names the config in val too.
    assert main(["val", str(world / "hydradet.yaml"), str(weights), *CLI_FAST]) == 0
    assert main(["val", str(weights), f"data={world / 'hydradet.yaml'}", *CLI_FAST]) == 0


def test_val_of_weights_whose_config_is_gone_says_what_to_pass(world: Path, tmp_path: Path, capsys):
    args = [*CLI_FAST, "train.steps_per_epoch=1", "train.epochs=1", f"project={tmp_path}"]
    assert main(["train", str(world / "hydradet.yaml"), *args]) == 0
    (tmp_path / "train" / "config.yaml").unlink()
    capsys.readouterr()
    weights = tmp_path / "train" / "weights" / "best.safetensors"
    assert main(["val", str(weights)]) == 2
    assert f"give the config whose val data to use: hydradet val CONFIG {weights}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("word", "answer"),
    [
        ("mosaic=0.5", "did you mean `augment.mosaic`?"),
        ("hflip=0.2", "did you mean `augment.hflip`?"),
        ("warmup_epochs=1", "did you mean `train.warmup_epochs`?"),
        ("model=yolo11n.pt", "model.init=yolo11n.pt"),
    ],
)
def test_ultralytics_names_that_are_not_shortcuts_get_the_full_key(world: Path, word: str, answer: str, capsys):
    assert main(["train", str(world / "hydradet.yaml"), word]) == 2
    err = capsys.readouterr().err
    assert answer in err, err


def test_version_and_train_help_list_what_a_user_needs(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"hydradet {version('hydradet')}"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert str(DEFAULT_YAML) in out
    for key, default in (("train.epochs", "30"), ("train.batch", "16"), ("model.imgsz", "320"), ("model.init", "null")):
        assert any(line.split()[:2] == [key, f"[{default}]"] for line in out.splitlines()), key
    assert "epochs= (train.epochs)" in out

"""The CLI end to end on a tiny synthetic world: synth -> train -> val -> predict, and the weights check
users will run: start from `model.init`, train on the animal source only, every heads.person.* tensor is
bit-identical in the saved weights."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from conftest import CLI_FAST as FAST
from safetensors import safe_open
from safetensors.torch import load_file

from hydradet.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    assert main(["synth", str(root), "--train-images", "8", "--val-images", "4", "--seed", "3"]) == 0
    return root


@pytest.fixture(scope="module")
def first_run(world: Path, tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("runs")
    code = main(["train", str(world / "hydradet.yaml"), "train.epochs=1", f"project={project}", "name=a", *FAST])
    assert code == 0
    return project / "a"


def test_train_writes_config_results_and_self_describing_weights(first_run: Path):
    assert (first_run / "config.yaml").is_file()
    rows = list(csv.DictReader((first_run / "results.csv").open()))
    assert len(rows) == 1
    for col in ("loss/person", "loss/animal", "person/mAP50-95", "person/mAP50", "animal/mAP50-95", "animal/mAP50"):
        assert rows[0][col] != "", col
    for name in ("last", "best"):
        path = first_run / "weights" / f"{name}.safetensors"
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            meta = json.loads(f.metadata()["hydradet"])
        assert {k.split(".")[0] for k in keys} == {"backbone", "neck", "heads"}
        assert {k.split(".")[1] for k in keys if k.startswith("heads.")} == {"person", "animal"}
        assert meta["heads"]["animal"]["classes"] == ["dog", "bird", "giraffe"]
        assert meta["model"]["backbone"] == "shufflenet_v2_x0_5"
        # Each detect head's predict default: its F1-optimal conf on its own val data, as results.csv records it.
        assert set(meta["conf"]) <= {"person", "animal"}
        for head, conf in meta["conf"].items():
            assert conf == pytest.approx(float(rows[0][f"{head}/f1_conf"]), abs=1e-3)


def test_val_prints_a_map_row_per_head(world: Path, first_run: Path, capsys):
    weights = first_run / "weights" / "best.safetensors"
    assert main(["val", str(world / "hydradet.yaml"), str(weights), *FAST]) == 0
    out = capsys.readouterr().out
    assert "mAP50-95" in out
    assert any(line.startswith("person") for line in out.splitlines())
    assert any(line.startswith("animal") for line in out.splitlines())


def test_predict_writes_pictures_and_json_from_the_weights_file_alone(world: Path, first_run: Path, tmp_path: Path):
    out = tmp_path / "pred"
    images = sorted((world / "val" / "images").glob("*.jpg"))[:2]
    weights = first_run / "weights" / "best.safetensors"
    assert main(["predict", str(weights), *map(str, images), "--out", str(out), "--conf", "0.01"]) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert [Path(r["image"]).name for r in records] == [p.name for p in images]
    assert set(records[0]["heads"]) == {"person", "animal"}
    assert sorted(p.name for p in out.glob("*.jpg")) == sorted(p.name for p in images)


def test_predict_refuses_pickled_weights_with_a_fix(tmp_path: Path, capsys):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not really a pickle")
    assert main(["predict", str(bad), str(tmp_path)]) == 2
    assert "pickled weights are refused" in capsys.readouterr().err


def test_init_then_training_on_animals_only_leaves_person_head_bit_identical(world: Path, first_run: Path, tmp_path):
    cfg = yaml.safe_load((world / "hydradet.yaml").read_text())
    del cfg["sources"]["persons"]
    for src in cfg["sources"].values():  # keep paths valid from the new file's folder
        for key in ("train", "val"):
            if key in src:
                src[key] = str(world / src[key])
    animals_only = tmp_path / "animals_only.yaml"
    animals_only.write_text(yaml.safe_dump(cfg))
    init = first_run / "weights" / "last.safetensors"
    args = ["train", str(animals_only), "train.epochs=2", f"project={tmp_path}", "name=b", f"model.init={init}"]
    assert main([*args, "train.optimizer=sgd", "train.weight_decay=0.01", "eval.every=2", *FAST]) == 0
    rows = list(csv.DictReader((tmp_path / "b" / "results.csv").open()))
    assert [r["animal/mAP50"] != "" for r in rows] == [False, True]  # eval.every=2 keeps columns aligned
    assert rows[1]["person/mAP50"] != "" and rows[0]["loss/person"] == ""  # person evaluated, never trained

    before, after = load_file(str(init)), load_file(str(tmp_path / "b" / "weights" / "last.safetensors"))
    person = [k for k in before if k.startswith("heads.person.")]
    assert person
    for k in person:
        assert after[k].equal(before[k]), k
    assert any(not after[k].equal(before[k]) for k in before if k.startswith("heads.animal."))
    assert any(not after[k].equal(before[k]) for k in before if k.startswith("backbone."))


@pytest.mark.parametrize("epochs", [1, 0])
def test_without_val_data_best_is_the_final_model_and_both_files_exist(world: Path, tmp_path: Path, epochs: int):
    cfg = yaml.safe_load((world / "hydradet.yaml").read_text())
    del cfg["sources"]["synth_val"]
    for src in cfg["sources"].values():
        src["train"] = str(world / src["train"])
    no_val = tmp_path / "no_val.yaml"
    no_val.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(no_val), f"train.epochs={epochs}", f"project={tmp_path}", "name=n", *FAST]) == 0
    best, last = (load_file(str(tmp_path / "n" / "weights" / f"{w}.safetensors")) for w in ("best", "last"))
    assert best.keys() == last.keys() and all(best[k].equal(last[k]) for k in best)

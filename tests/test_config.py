"""A bad config is refused before any work starts: exit code 2, the key named, what is wrong and accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hydradet.cli import main
from hydradet.config import load_config
from hydradet.config.load import DEFAULT_YAML
from hydradet.config.schema import Config


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    (tmp_path / "p.json").write_text('{"images": [], "annotations": [], "categories": []}')
    cfg = {
        "heads": {"person": {"task": "detect", "classes": ["person"]}},
        "sources": {"persons": {"format": "coco", "train": "p.json", "labels": {"person": {"person": "person"}}}},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(["train", *argv])
    return code, capsys.readouterr().err


def _edit(path: Path, fn) -> Path:
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_key_exits_2_naming_the_key_a_suggestion_and_the_accepted_keys(config_file, capsys):
    code, err = _run(capsys, str(config_file), "train.epoch=3")
    assert code == 2
    assert "train.epoch: unknown key; did you mean `epochs`?" in err
    assert "Accepted keys here:" in err and "batch" in err


def test_unknown_head_under_labels_exits_2(config_file, capsys):
    _edit(config_file, lambda d: d["sources"]["persons"]["labels"].update({"animal": {"dog": "dog"}}))
    code, err = _run(capsys, str(config_file))
    assert code == 2
    assert "sources.persons.labels.animal: unknown head 'animal'; configured heads: ['person']" in err


def test_unknown_class_under_labels_exits_2(config_file, capsys):
    _edit(config_file, lambda d: d["sources"]["persons"]["labels"]["person"].update({"man": "pedestrian"}))
    code, err = _run(capsys, str(config_file))
    assert code == 2
    assert "sources.persons.labels.person.man: unknown class 'pedestrian' for head 'person'" in err
    assert "its classes: ['person']" in err


def test_missing_path_exits_2_naming_the_key_and_the_path(config_file, capsys):
    _edit(config_file, lambda d: d["sources"]["persons"].update({"train": "nowhere.json"}))
    code, err = _run(capsys, str(config_file))
    assert code == 2
    assert "sources.persons.train: path does not exist:" in err and "nowhere.json" in err


def test_wrong_type_exits_2_with_what_is_accepted(config_file, capsys):
    code, err = _run(capsys, str(config_file), "train.epochs=many")
    assert code == 2
    assert "train.epochs: Input should be a valid integer" in err and "'many'" in err
    code, err = _run(capsys, str(config_file), "train.optimizer=lion")
    assert code == 2
    assert "train.optimizer: Input should be 'sgd' or 'adamw'" in err


def test_malformed_yaml_exits_2_with_its_position(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("heads:\n  person: {task: detect, classes: [person]\n")
    code, err = _run(capsys, str(bad))
    assert code == 2
    assert f"{bad}:" in err and "not valid YAML" in err


def test_overrides_and_relative_paths_resolve(config_file):
    cfg = load_config(config_file, ["train.epochs=3", "train.sampling.ratios={temperature: 2}"])
    assert cfg.train.epochs == 3
    assert cfg.train.sampling.ratios.temperature == 2  # type: ignore[union-attr]
    assert cfg.sources["persons"].train == config_file.parent / "p.json"


def test_every_schema_field_has_its_default_in_default_yaml():
    # default.yaml is the one documented place for defaults: the schema itself holds none for these.
    defaults = yaml.safe_load(DEFAULT_YAML.read_text())
    for section in ("model", "train", "eval", "predict"):
        fields = Config.model_fields[section].annotation.model_fields  # type: ignore[union-attr]
        assert set(fields) == set(defaults[section]), section


def test_a_moved_key_says_where_it_went(config_file, capsys):
    code, err = _run(capsys, str(config_file), "train.hflip=0.5")
    assert code == 2
    assert "train.hflip: this key moved to `augment.hflip`" in err


def test_trunk_balancing_without_its_running_counts_is_refused_naming_both_keys(config_file, capsys):
    assert main(["train", str(config_file), "model.loss_norm=batch", "train.balance.trunk=positives"]) == 2
    err = capsys.readouterr().err
    assert "train.balance.trunk" in err and "model.loss_norm=running" in err

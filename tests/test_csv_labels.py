"""csv sources: bad config and bad rows are refused before training (naming key, file and line) or skipped and
counted; never a crash halfway or a silent loss."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from PIL import Image

from hydradet.config import load_config
from hydradet.data.check import check_data
from hydradet.data.csv_labels import LABEL_EMPTY, NOT_A_NUMBER
from hydradet.data.dataset import SourceDataset
from hydradet.data.records import IMAGE_MISSING
from hydradet.errors import ConfigError, DataError

HEADS = {"age": {"task": "regress"}, "gender": {"task": "classify", "classes": ["male", "female"]}}


def _setup(tmp_path: Path, rows: list[str], labels: dict | None = None, **source) -> Path:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.new("RGB", (40, 30), (200, 50, 50)).save(tmp_path / name)
    (tmp_path / "train.csv").write_text("file,age,gender\n" + "\n".join(rows) + "\n")
    labels = labels or {"age": "age", "gender": {"column": "gender", "values": {0: "male", 1: "female"}}}
    source = {"format": "csv", "train": "train.csv", "labels": labels, **source}
    return copy.deepcopy({"heads": HEADS, "sources": {"faces": source}})


def _read(tmp_path: Path, cfg: dict) -> SourceDataset:
    import json

    (tmp_path / "cfg.yaml").write_text(json.dumps(cfg))
    return SourceDataset(load_config(tmp_path / "cfg.yaml", ["model.imgsz=64"]), "faces", "train", train=False)


def test_a_column_not_in_the_header_names_the_key_the_csv_and_a_suggestion(tmp_path):
    cfg = _setup(tmp_path, ["a.jpg,30,0"], labels={"age": "Age", "gender": "gender"})
    with pytest.raises(ConfigError) as e:
        _read(tmp_path, cfg)
    msg = str(e.value)
    assert "sources.faces.labels.age.column: no column 'Age'" in msg and "train.csv" in msg
    assert "did you mean 'age'?" in msg


def test_an_unknown_class_cell_is_an_error_naming_file_line_and_the_fix(tmp_path):
    cfg = _setup(tmp_path, ["a.jpg,30,0", "b.jpg,31,2", "c.jpg,40,1"])
    with pytest.raises(DataError) as e:
        _read(tmp_path, cfg)
    msg = str(e.value)
    assert "gender: '2' in 1 rows" in msg and "train.csv:3" in msg
    assert "sources.faces.labels.HEAD.values" in msg


def test_bad_rows_are_skipped_and_counted_with_their_place(tmp_path):
    rows = ["a.jpg,30,0", "b.jpg,old,1", "c.jpg,,1", "missing.jpg,20,1", "a.jpg,25,female"]
    cfg = _setup(
        tmp_path,
        rows,
        labels={"age": "age", "gender": {"column": "gender", "values": {0: "male", 1: "female", "female": "female"}}},
    )
    ds = _read(tmp_path, cfg)
    assert [r.image_labels for r in ds.records] == [{"age": 30.0, "gender": 0.0}, {"age": 25.0, "gender": 1.0}]
    skipped = ds.data.skipped
    assert skipped == {NOT_A_NUMBER: 1, LABEL_EMPTY: 1, IMAGE_MISSING: 1}
    assert ds.data.examples[NOT_A_NUMBER][0].endswith("train.csv:3 (age: 'old')")
    assert "train.csv:4" in ds.data.examples[LABEL_EMPTY][0]
    report = check_data(load_config(tmp_path / "cfg.yaml")).text()
    assert "head gender: male 1, female 1" in report and "skipped: 1 x " + NOT_A_NUMBER in report


def test_every_row_skipped_is_an_error_that_suggests_the_images_folder(tmp_path):
    cfg = _setup(tmp_path, ["x.jpg,30,0", "y.jpg,31,1"])
    with pytest.raises(DataError, match=r"every row was skipped.*sources\.faces\.images"):
        _read(tmp_path, cfg)


def test_the_image_column_is_the_first_unless_named(tmp_path):
    cfg = _setup(tmp_path, ["a.jpg,30,0"], image_column="gender")
    with pytest.raises(DataError, match="every row was skipped"):  # the gender cell '0' is no image
        _read(tmp_path, cfg)
    cfg = _setup(tmp_path, ["a.jpg,30,0"], image_column="fiel")
    with pytest.raises(ConfigError, match=r"sources\.faces\.image_column: no column 'fiel'.*did you mean 'file'"):
        _read(tmp_path, cfg)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda c: c["heads"]["gender"].update(classes=["male"]),
            "heads.gender.classes: a classify head needs at least 2",
        ),
        (lambda c: c["heads"]["age"].update(classes=["x"]), "heads.age.classes: a regress head predicts one number"),
        (lambda c: c["heads"].update(p={"task": "detect"}), "heads.p.classes: a detect head needs its class names"),
        (
            lambda c: c["sources"]["faces"].update(format="coco", labels={"age": {"a": "b"}}),
            "sources.faces.labels.age: 'age' is a regress head: its labels come from a csv source",
        ),
        (
            lambda c: (
                c["heads"].update(p={"task": "detect", "classes": ["p"]}),
                c["sources"]["faces"]["labels"].update(p="p"),
            ),
            "sources.faces.labels.p: 'p' is a detect head: its boxes come from a coco, yolo or voc source",
        ),
        (
            lambda c: c["sources"]["faces"]["labels"].update(age={"column": "age", "values": {1: "x"}}),
            "sources.faces.labels.age.values: a regress column holds numbers",
        ),
        (
            lambda c: c["sources"]["faces"]["labels"]["gender"]["values"].update({2: "other"}),
            "sources.faces.labels.gender.values.2: unknown class 'other' for head 'gender'",
        ),
        (
            lambda c: c["sources"]["faces"]["labels"].update(gender={"colum": "gender"}),
            "sources.faces.labels: head 'gender': column: Field required; colum: Extra inputs",
        ),
        (lambda c: c["heads"]["gender"].update(mean=3.0), "heads.gender.mean: for regress heads only"),
    ],
)
def test_config_errors_name_the_key(tmp_path, edit, expected):
    cfg = _setup(tmp_path, ["a.jpg,30,0"])
    edit(cfg)
    with pytest.raises(ConfigError) as e:
        load_config(cfg, check_paths=False)
    assert expected in str(e.value)

"""Every text input (config and data YAML, COCO JSON, VOC XML and image-set lists, YOLO labels and image lists, CSV)
is read as UTF-8 with or without a byte-order mark, whatever the machine's locale (hydradet/errors.read_text); a
file in another encoding is refused naming the file and the byte offset and line of its first bad byte."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from hydradet.cli import main
from hydradet.config import load_config
from hydradet.data.coco import read_coco
from hydradet.data.csv_labels import read_csv_labels
from hydradet.data.voc import read_voc
from hydradet.data.yolo import read_yolo
from hydradet.errors import ConfigError, DataError, read_text

BOM = codecs.BOM_UTF8
NAME = "café"  # a class name outside ASCII: what a wrong encoding would silently turn into "cafÃ©"


def _write(path: Path, text: str, encoding: str = "utf-8", bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((BOM if bom else b"") + text.encode(encoding))
    return path


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 20)).save(path)


def _yolo(root: Path, bom: bool) -> Path:
    for n in "ab":
        _image(root / "images" / f"{n}.jpg")
        _write(root / "labels" / f"{n}.txt", "0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.1 0.1\n", bom=bom)
    _write(root / "train.txt", "images/a.jpg\nimages/b.jpg\n", bom=bom)
    return _write(root / "data.yaml", f"path: .\ntrain: train.txt\nnames: [{NAME}, dog]\n", bom=bom)


def _coco(root: Path, text_of=json.dumps, bom: bool = False) -> Path:
    _image(root / "a.jpg")
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 20}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]}],
        "categories": [{"id": 1, "name": NAME}],
    }
    return _write(root / "ann.json", json.dumps(data, ensure_ascii=False), bom=bom)


def _voc_xml(name: str = NAME, declaration: str = "") -> str:
    obj = (
        f"<object><name>{name}</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
    )
    return f"{declaration}<annotation><filename>a.jpg</filename>{obj}</annotation>"


def _voc(root: Path, bom: bool) -> Path:
    _image(root / "JPEGImages" / "a.jpg")
    _write(root / "Annotations" / "a.xml", _voc_xml(declaration='<?xml version="1.0" encoding="utf-8"?>'), bom=bom)
    return _write(root / "ImageSets" / "Main" / "train.txt", "a\n", bom=bom)


def _csv_config(root: Path, bom: bool) -> tuple:
    _image(root / "a.jpg")
    _write(root / "train.csv", f"file,age,kind\na.jpg,30,{NAME}\n", bom=bom)
    heads = {"age": {"task": "regress"}, "kind": {"task": "classify", "classes": [NAME, "tea"]}}
    source = {"format": "csv", "train": str(root / "train.csv"), "labels": {"age": "age", "kind": "kind"}}
    return load_config({"heads": heads, "sources": {"faces": source}}), "faces"


@pytest.mark.parametrize("bom", [False, True], ids=["utf-8", "utf-8 with BOM"])
def test_every_reader_reads_utf8_with_or_without_a_byte_order_mark(tmp_path, bom):
    yolo = read_yolo(_yolo(tmp_path / "yolo", bom), "train")
    assert yolo.class_names == [NAME, "dog"] and yolo.box_counts() == {NAME: 2, "dog": 2}
    assert not yolo.skipped  # the list's first path and each label's first class id read despite the mark

    assert read_coco(_coco(tmp_path / "coco", bom=bom)).box_counts() == {NAME: 1}
    assert read_voc(_voc(tmp_path / "voc", bom)).box_counts() == {NAME: 1}

    cfg, source = _csv_config(tmp_path / "csv", bom)
    (record,) = read_csv_labels(cfg, source, "train").records
    assert record.image_labels == {"age": 30.0, "kind": 0.0}  # the header's first column is `file`, not "\ufefffile"

    heads = f"heads:\n  {NAME}: {{task: detect, classes: [{NAME}]}}\n"
    source = f"sources:\n  s: {{format: yolo, train: yolo/data.yaml, labels: {{{NAME}: {{{NAME}: {NAME}}}}}}}\n"
    config = load_config(_write(tmp_path / "cfg.yaml", heads + source, bom=bom))
    assert list(config.heads) == [NAME] and config.sources["s"].train == tmp_path / "yolo" / "data.yaml"


def _bad_byte_at(path: Path, text: str, offset: int) -> int:
    """`text` as UTF-8 with Latin-1's é (0xe9, not UTF-8 on its own) at `offset`; returns the offset."""
    data = text.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[:offset] + b"\xe9" + data[offset:])
    return offset


def test_read_text_names_file_offset_and_line_of_the_first_bad_byte_counting_the_byte_order_mark(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(BOM + b"ok\nfine\ncaf\xe9\n")
    with pytest.raises(DataError) as e:
        read_text(path, DataError)
    assert str(e.value).startswith(f"{path}: not UTF-8 text: the byte at offset 14 (line 3) is 0xe9")
    assert "save the file as UTF-8" in str(e.value)
    path.write_bytes("a: 1\n".encode("utf-16"))
    with pytest.raises(ConfigError, match=r"x\.txt: UTF-16 text .*; save it as UTF-8"):
        read_text(path, ConfigError)


def _case(case: str, root: Path) -> tuple:
    """A set with a file that will get a bad byte: (read the set, that file, the byte's offset, its line)."""
    if case.startswith("yolo") or case == "data yaml":
        data = _yolo(root, False)
        bad = {"yolo label": (root / "labels" / "a.txt", 0, 1), "yolo list": (root / "train.txt", 7, 1)}
        return (lambda: read_yolo(data, "train"), *bad.get(case, (data, 30, 3)))
    if case == "coco json":
        data = _coco(root)
        return lambda: read_coco(data), data, 5, 1
    data = _voc(root, False)
    return (lambda: read_voc(data), *((root / "Annotations" / "a.xml", 60, 1) if case == "voc xml" else (data, 0, 1)))


@pytest.mark.parametrize("case", ["yolo label", "yolo list", "data yaml", "coco json", "voc xml", "voc list"])
def test_a_file_that_is_not_utf8_is_refused_naming_the_file_and_byte_offset(tmp_path, case):
    read, bad, offset, line = _case(case, tmp_path)
    _bad_byte_at(bad, bad.read_text(), offset)
    with pytest.raises(
        DataError, match=rf"^{bad}: not UTF-8 text: the byte at offset {offset} \(line {line}\) is 0xe9"
    ):
        read()


def test_a_csv_that_is_not_utf8_is_refused_and_data_check_reports_it_instead_of_a_traceback(tmp_path, capsys):
    cfg, _ = _csv_config(tmp_path, False)
    csv = tmp_path / "train.csv"
    offset = _bad_byte_at(csv, csv.read_text(), len("file,age,kind\na.jpg,30,caf"))
    path = _write(tmp_path / "c.yaml", yaml.safe_dump(json.loads(cfg.model_dump_json(include={"heads", "sources"}))))
    assert main(["data", "check", str(path), "--out", str(tmp_path / "check")]) == 2
    out = capsys.readouterr().out
    assert f"ERROR: {csv}: not UTF-8 text: the byte at offset {offset} (line 2) is 0xe9" in out


def test_a_config_that_is_not_utf8_exits_2_naming_file_and_offset(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(b"heads:\n  caf\xe9: {task: detect, classes: [x]}\n")
    assert main(["data", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: not UTF-8 text: the byte at offset 12 (line 2) is 0xe9")


def test_a_voc_xml_that_declares_another_encoding_is_read_in_it(tmp_path):
    # Valid XML names its encoding in the declaration; any XML parser reads it so, and so do we.
    _image(tmp_path / "JPEGImages" / "a.jpg")
    xml = _voc_xml(declaration='<?xml version="1.0" encoding="ISO-8859-1"?>')
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_bytes(xml.encode("latin-1"))
    assert read_voc(tmp_path).box_counts() == {NAME: 1}
    # The same bytes declared as UTF-8 (or not declared) are not UTF-8: refused, not misread.
    (tmp_path / "Annotations" / "a.xml").write_bytes(xml.replace("ISO-8859-1", "UTF-8").encode("latin-1"))
    with pytest.raises(DataError, match=r"a\.xml: not UTF-8 text: the byte at offset \d+ \(line 1\)"):
        read_voc(tmp_path)

"""The csv format: a folder of images and a CSV of per-image labels, for classify and regress heads.

One row per image: the image column (the first, or `image_column`) names the file relative to `images`
(default: the CSV's folder); each head the source labels reads its own column (`labels: {HEAD: {column: NAME}}`).
UTKFace-style, e.g. `image,age,gender,race` / `0001.jpg,34,1,2`.

Bad input never stops a run halfway. Before training: a missing column, or a class cell that the head does not
know (a mapping mistake that would silently drop a whole class), is an error naming the file, line and fix. Row
problems (an image file missing or corrupt, an empty label, a regress cell that is not a number) skip the row,
counted by reason with the first places named, as the box readers do (`SplitRecords`).
"""

from __future__ import annotations

import csv
import difflib
import io
import math
from pathlib import Path

import numpy as np

from hydradet.config.schema import ColumnLabel, Config
from hydradet.data.records import ImageRecord, SplitRecords, note_input
from hydradet.errors import ConfigError, DataError, read_text

ROW_SHORT = "row with fewer cells than the header (row skipped)"
IMAGE_NAME_EMPTY = "image name empty (row skipped)"
LABEL_EMPTY = "label empty or NA (row skipped)"
NOT_A_NUMBER = "regress label not a finite number (row skipped)"

# Cells that mean "no label", as pandas reads them by default (the common subset).
_NA = {"", "na", "n/a", "nan", "null", "none", "-"}


def read_csv_labels(cfg: Config, source: str, split: str) -> SplitRecords:
    """One split of a csv source: a record per usable row, with `image_labels` for every head it labels."""
    src = cfg.sources[source]
    path: Path = getattr(src, split)
    images = src.images or path.parent
    out = SplitRecords(records=[], class_names=[])
    out.looked_in = [f"labels: {path}", f"images: each row's image name in {images}"]
    note_input(path)
    try:
        text = read_text(path, DataError)  # a byte-order mark from Excel is dropped: it is not a column name
    except (IsADirectoryError, FileNotFoundError):
        raise DataError(f"{path}: not a CSV file (sources.{source}.{split} of a csv source names a .csv)") from None
    with io.StringIO(text, newline="") as f:  # newline="": quoted cells may hold line breaks, as csv wants
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if not any(header):
            raise DataError(f"{path}: empty; expected a header row, e.g. image,age,gender")
        image_col = _column(header, src.image_column or header[0], path, f"sources.{source}.image_column")
        heads = {h: _HeadColumn(cfg, source, h, spec, header, path) for h, spec in src.labels.items()}  # type: ignore[arg-type]
        unknown: dict[tuple[str, str], list[int]] = {}  # (head, cell) -> lines
        rows = 0
        for row in reader:
            line = reader.line_num
            if not any(c.strip() for c in row):
                continue  # blank lines, e.g. at the end
            rows += 1
            where = f"{path}:{line}"
            if len(row) < len(header):
                out.skip(ROW_SHORT, where=where)
                continue
            name = row[image_col].strip()
            if not name:
                out.skip(IMAGE_NAME_EMPTY, where=where)
                continue
            labels, problem = {}, None
            for head, col in heads.items():
                cell = row[col.index].strip()
                if cell.lower() in _NA:
                    problem = problem or (LABEL_EMPTY, f"{where} ({col.name})")
                elif col.classes is None:
                    value = _number(cell)
                    if value is None:
                        problem = problem or (NOT_A_NUMBER, f"{where} ({col.name}: {cell!r})")
                    else:
                        labels[head] = value
                elif cell in col.classes:
                    labels[head] = float(col.classes[cell])
                else:
                    unknown.setdefault((head, cell), []).append(line)
            if problem:
                out.skip(problem[0], where=problem[1])
                continue
            if len(labels) < len(heads):
                continue  # an unknown class: reported below, before any training
            image = images / name
            size = out.probe(image)
            if size is None:
                continue
            out.records.append(ImageRecord(image, np.zeros((0, 4), np.float32), [], *size, image_labels=labels))
    if unknown:
        raise DataError(_unknown_classes(unknown, heads, path, source))
    if rows and not out.records:
        reasons = "; ".join(f"{n} x {r}, e.g. {out.examples[r][0]}" for r, n in out.skipped.items())
        raise DataError(f"{path}: every row was skipped ({reasons}); is sources.{source}.images the right folder?")
    return out


class _HeadColumn:
    """Where a head's label is in the header, and for classify the cell -> class id map."""

    def __init__(self, cfg: Config, source: str, head: str, spec: ColumnLabel, header: list[str], path: Path) -> None:
        self.name = spec.column
        self.index = _column(header, spec.column, path, f"sources.{source}.labels.{head}.column")
        head_cfg = cfg.heads[head]
        self.classes: dict[str, int] | None = None
        if head_cfg.task == "classify":
            names = spec.values or {c: c for c in head_cfg.classes}
            self.classes = {cell: head_cfg.classes.index(cls) for cell, cls in names.items()}


def _column(header: list[str], name: str, path: Path, key: str) -> int:
    if name in header:
        return header.index(name)
    hint = difflib.get_close_matches(name, header, n=1)
    raise ConfigError(
        f"{key}: no column {name!r} in {path}{f'; did you mean {hint[0]!r}?' if hint else ''} Its header: {header}"
    )


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _unknown_classes(
    unknown: dict[tuple[str, str], list[int]], heads: dict[str, _HeadColumn], path: Path, source: str
) -> str:
    lines = []
    for (head, cell), where in unknown.items():
        known = sorted(heads[head].classes or {})
        first = ", ".join(f"{path}:{n}" for n in where[:3]) + (", ..." if len(where) > 3 else "")
        lines.append(f"  {head}: {cell!r} in {len(where)} rows ({first}); known cells: {known}")
    return (
        f"{path}: class cells that no class of the head is mapped from:\n" + "\n".join(lines) + "\n"
        f"map them under sources.{source}.labels.HEAD.values (e.g. `values: {{0: male, 1: female}}`), "
        "or fix or remove those rows"
    )

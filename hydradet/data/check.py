"""`hydradet data check`: what each source gives each head, and every problem found, before any training.

Per source and split: images, boxes per class and per head, images without boxes, classes mapped to no head,
and each problem grouped by kind with the first few places named. A split that cannot be read at all (the
error training would stop with) is reported too, and the other splits are still checked. So are the totals that
stop training (data/totals.py: a train split without images, a head without boxes) and its warnings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hydradet.config.schema import Config
from hydradet.data.dataset import SourceDataset, load_image
from hydradet.data.records import MAX_EXAMPLES
from hydradet.data.totals import Problem, find_problems, ignored_summary
from hydradet.errors import UserError
from hydradet.files import atomic_save, atomic_write_text

DECODE_FAILED = "image fails to decode (would be replaced by another sample in training)"


@dataclass
class SplitCheck:
    source: str
    split: str
    path: str
    images: int = 0
    without_boxes: int = 0  # images with no box at all
    boxes_per_class: dict[str, int] = field(default_factory=dict)  # source class -> boxes
    boxes_per_head: dict[str, int] = field(default_factory=dict)  # head -> boxes this split supervises it with
    without_head_boxes: dict[str, int] = field(default_factory=dict)  # head -> images that are all negatives
    unmapped: dict[str, int] = field(default_factory=dict)  # classes mapped to no head -> boxes (ignored)
    # image-level heads (csv sources): classify head -> images per class; regress head -> min, mean, max
    labels_per_head: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    looked_in: list[str] = field(default_factory=list)  # where the reader looked for images and labels
    error: str | None = None  # set when the split cannot be read: training would stop with this


@dataclass
class HeadBoxes:
    """Every box a head is trained or evaluated on, relative to its image: for the pictures."""

    wh: list[np.ndarray] = field(default_factory=list)  # (N, 2) width, height / image width, height
    centres: list[np.ndarray] = field(default_factory=list)  # (N, 2) in [0, 1]
    aspect: list[np.ndarray] = field(default_factory=list)  # (N,) width / height in pixels


@dataclass
class DataCheck:
    splits: list[SplitCheck]
    heads: dict[str, HeadBoxes]
    problems: list[Problem] = field(default_factory=list)  # the totals (data/totals.py): errors and warnings

    @property
    def ok(self) -> bool:
        return not any(s.error for s in self.splits) and not any(p.error for p in self.problems)

    def to_json(self) -> dict:
        problems = [asdict(p) for p in self.problems]
        return {"ok": self.ok, "splits": [asdict(s) for s in self.splits], "problems": problems}

    def text(self) -> str:
        lines = []
        for s in self.splits:
            lines.append(f"{s.source}/{s.split}: {s.path}")
            if s.error:
                lines.append(f"  ERROR: {s.error}")
                continue
            for p in self.problems:
                if (p.source, p.split) == (s.source, s.split):
                    lines += _problem_lines(p, "  ")
            if s.labels_per_head:  # a csv source: labels, no boxes
                lines.append(f"  images: {s.images}")
            else:
                lines.append(f"  images: {s.images} ({s.without_boxes} without boxes)")
                lines.append(f"  boxes per class: {_counts(s.boxes_per_class)}")
            for head, stats in s.labels_per_head.items():
                shown = _counts(stats) if "mean" not in stats else ", ".join(f"{k} {v:.4g}" for k, v in stats.items())
                lines.append(f"  head {head}: {shown}")
            for head, n in s.boxes_per_head.items():
                lines.append(f"  head {head}: {n} boxes; {s.without_head_boxes[head]} images without {head} boxes")
            if ignored := ignored_summary(s.unmapped):
                lines.append(f"  {ignored}")
            for kind, counts in (("skipped", s.skipped), ("warning", s.warnings)):
                for reason, n in counts.items():
                    lines.append(f"  {kind}: {n} x {reason}")
                    lines += [f"      {place}" for place in s.examples.get(reason, [])]
                    if n > len(s.examples.get(reason, [])) and s.examples.get(reason):
                        lines.append("      ...")
        for p in self.problems:
            if p.source is None:
                lines += _problem_lines(p, "")
        bad = [f"{s.source}/{s.split}" for s in self.splits if s.error]
        bad += [f"{p.source}/{p.split}" if p.source else f"head {p.head}" for p in self.problems if p.error]
        lines.append(f"errors in {', '.join(bad)}: training would stop; fix them first" if bad else "no errors")
        return "\n".join(lines)


def _problem_lines(p: Problem, indent: str) -> list[str]:
    first, *rest = p.message.splitlines()
    return [f"{indent}{'ERROR' if p.error else 'WARNING'}: {first}", *(f"{indent}  {line}" for line in rest)]


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items() if v) or "none"


def check_data(cfg: Config, decode: bool = False, init_heads: Mapping[str, Any] | None = None) -> DataCheck:
    """Read every split of every source as training would; decode=True also decodes every image (slow).
    init_heads: the heads of the `model.init` weights (data/totals.py)."""
    result = DataCheck(splits=[], heads={h: HeadBoxes() for h in cfg.heads})
    read: dict[str, list[SourceDataset]] = {"train": [], "val": []}
    unreadable: set[str] = set()  # sources whose train split failed: their heads' totals are not judged
    for source, src in cfg.sources.items():
        for split in ("train", "val"):
            if getattr(src, split) is None:
                continue
            try:
                ds = SourceDataset(cfg, source, split, train=False)
            except (UserError, OSError) as e:
                result.splits.append(SplitCheck(source, split, str(getattr(src, split)), error=str(e)))
                unreadable |= {source} if split == "train" else set()
                continue
            read[split].append(ds)
            result.splits.append(check_dataset(ds, str(getattr(src, split)), result.heads, decode))
    result.problems = find_problems(cfg, read["train"], read["val"], frozenset(unreadable), init_heads)
    return result


def check_dataset(
    ds: SourceDataset, path: str, heads: dict[str, HeadBoxes] | None = None, decode: bool = False
) -> SplitCheck:
    """The counts of one split already read (e.g. by the trainer); adds its boxes to `heads` when given."""
    data = ds.data
    out = SplitCheck(ds.source, ds.split, path, images=len(ds.records), unmapped=dict(ds.unmapped))
    out.skipped, out.warnings = dict(data.skipped), dict(data.warnings)
    out.examples = {k: list(v) for k, v in data.examples.items()}
    out.looked_in = list(data.looked_in)
    out.boxes_per_class = data.box_counts()
    # Counted over the records' arrays (data/table.py): no object per image, seconds saved per 100k images.
    out.without_boxes = ds.records.images_without()
    for head, cmap in ds.class_maps.items():
        out.boxes_per_head[head] = ds.records.count_boxes(cmap)
        out.without_head_boxes[head] = ds.records.images_without(cmap)
        if heads is not None and head in heads:
            _add_boxes(heads[head], *ds.records.boxes_of(cmap))
    for head, task in ds.image_heads.items():
        values = ds.records.label_values(head)
        if task == "classify":
            names = ds.class_names[head]
            out.labels_per_head[head] = {c: int((values == i).sum()) for i, c in enumerate(names)}
        elif len(values):
            out.labels_per_head[head] = {"min": values.min(), "mean": values.mean(), "max": values.max()}
    if decode:
        for r in tqdm(ds.records, desc=f"decode {ds.source}/{ds.split}", leave=False):
            try:
                load_image(r.path)
            except Exception as e:  # the same net as SourceDataset._decode
                out.skipped[DECODE_FAILED] = out.skipped.get(DECODE_FAILED, 0) + 1
                places = out.examples.setdefault(DECODE_FAILED, [])
                if len(places) < MAX_EXAMPLES:
                    places.append(f"{r.path} ({type(e).__name__}: {e})")
    return out


def _add_boxes(acc: HeadBoxes, b: np.ndarray, sizes: np.ndarray) -> None:
    """b: (K, 4) boxes xyxy in pixels; sizes: (K, 2) their images' (w, h), 0 when unknown."""
    size = np.where(sizes > 0, sizes, 1).astype(np.float32)
    wh = b[:, 2:] - b[:, :2]
    acc.wh.append(wh / size)
    acc.centres.append((b[:, :2] + wh / 2) / size)
    acc.aspect.append(wh[:, 0] / np.maximum(wh[:, 1], 1e-6))


def write_report(check: DataCheck, out_dir: Path, title: str = "") -> list[Path]:
    """report.txt, report.json and boxes_<head>.png for each head with boxes; returns the files written.

    Each is written crash-safe (hydradet/files.py): a report is either the old one or the new one, never half."""
    from hydradet.data.plots import box_picture

    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "report.txt", out_dir / "report.json"]
    atomic_write_text(files[0], (f"hydradet data check: {title}\n" if title else "") + check.text() + "\n")
    atomic_write_text(files[1], json.dumps(check.to_json(), indent=1))
    for head, boxes in check.heads.items():
        if boxes.wh:
            path = out_dir / f"boxes_{head}.png"
            picture = box_picture(
                head, np.concatenate(boxes.wh), np.concatenate(boxes.centres), np.concatenate(boxes.aspect)
            )
            atomic_save(path, partial(picture.save, format="PNG"))  # the temporary's name has no .png to go by
            files.append(path)
    return files

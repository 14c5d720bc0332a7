"""Totals, before training: every train split has images, every head gets boxes (or labels) from its sources.

The readers skip and count what they cannot use, file by file. That is right for one bad file and wrong for all
of them: an empty folder, annotations whose images are elsewhere, labels in a folder the reader never looks in.
Then training would crash mid-run (`stack expects a non-empty TensorList`) or run for hours with loss 0 and mAP
nan. So, before any training, from what the readers counted:

- a train split with no usable image is an error;
- a head that gets no box (detect) or no label (classify/regress) from any of its train sources is an error;
- a train source that gives one of its heads no box while other sources do is a warning: its images would
  teach that head only background;
- a val split with no usable image is a warning, and it is left out of evaluation;
- a head that no source with a train split labels is an error, unless `model.init` already has it (then it is
  kept, distilled or taught by its pseudo teacher): otherwise the run would save it untrained;
- a split where more than MISSING_LABELS_SHARE of the images have no label file is a warning: those images are
  read as background, which in a partial-label setup teaches the source's heads that their objects are absent.

Each message names the source, split and head, counts what was lost by reason (with the first places), says
where the reader looked for the images and labels, any hint it found (e.g. labels in `Labels/`), and the fix.
`hydradet data check` reports the same problems (hydradet/data/check.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hydradet.config.schema import Config
from hydradet.data import csv_labels as C
from hydradet.data import records as R
from hydradet.data.dataset import SourceDataset
from hydradet.data.sampler import source_probabilities
from hydradet.errors import DataError

# What to do about the biggest loss, by the reason the readers counted it. "NAME" is the source's name.
_FIXES = {
    R.IMAGE_MISSING: "put the image files where the reader looks (above), or correct the image names or folder "
    "(COCO: `sources.NAME.images` names the images folder)",
    R.IMAGE_EMPTY: "copy or export the image files again: they are empty",
    R.IMAGE_TRUNCATED: "copy or export the image files again: they are cut off",
    R.IMAGE_CORRUPT: "replace the files named: they are not images PIL can read",
    R.LABEL_MISSING: "put each image's label file where the reader looks (above)",
    R.LABEL_ORPHAN: "make image and label file names agree: label files were found that match no image",
    R.BOX_DROPPED: "fix the boxes named (zero or negative size, NaN or inf)",
    R.LABEL_IN_PIXELS: "YOLO labels must be normalised to 0-1: divide each x and width by the image's width and "
    "each y and height by its height (the label files named hold pixels)",
    R.ROW_NOT_NORMALISED: "YOLO labels must be normalised to 0-1: divide each x and width by the image's width "
    "and each y and height by its height (the rows named hold pixels)",
    C.ROW_SHORT: "give every CSV row as many cells as the header",
    C.IMAGE_NAME_EMPTY: "fill in the image names of the rows named",
    C.LABEL_EMPTY: "fill in the labels of the rows named",
    C.NOT_A_NUMBER: "make the regress cells numbers",
}


MISSING_LABELS_SHARE = 0.2  # a few images without objects are normal; a fifth without a label file is not
IGNORED_SHOWN = 5  # ignored classes named in the one-line summary, the largest first


@dataclass
class Problem:
    """One finding: `error` stops training; otherwise a warning. Where: a split (source, split) and/or a head."""

    message: str  # may span lines; the first names the source, split and head
    error: bool
    source: str | None = None
    split: str | None = None
    head: str | None = None


def check_totals(
    cfg: Config,
    train_sets: list[SourceDataset],
    val_sets: list[SourceDataset],
    init_heads: Mapping[str, Any] | None = None,
) -> tuple[list[SourceDataset], list[str]]:
    """DataError listing every error; else (the val sets that have images, the warnings to show).
    init_heads: the heads of the `model.init` weights (a head without a source is fine if it has them)."""
    problems = find_problems(cfg, train_sets, val_sets, init_heads=init_heads)
    errors = [p.message for p in problems if p.error]
    if errors:
        raise DataError(
            f"training cannot start: {len(errors)} problem{'s' * (len(errors) > 1)} with the data "
            "(`hydradet data check CONFIG` reports all of it):\n" + "\n".join(_indent(m) for m in errors)
        )
    warnings = [f"warning: {p.message}" for p in problems if not p.error]
    return [ds for ds in val_sets if len(ds)], warnings


def find_problems(
    cfg: Config,
    train_sets: list[SourceDataset],
    val_sets: list[SourceDataset],
    unreadable: frozenset[str] = frozenset(),
    init_heads: Mapping[str, Any] | None = None,
) -> list[Problem]:
    """Every totals problem of splits already read. unreadable: sources whose train split could not be read at
    all (`data check` reports those itself): the heads they label are not judged on the others alone.
    init_heads: the heads of the `model.init` weights (name -> their metadata: task, classes)."""
    init_heads = init_heads or {}
    problems = [_no_source(cfg, h) for h in heads_without_source(cfg) if not _same_head(cfg, h, init_heads.get(h))]
    for ds in [*train_sets, *val_sets]:
        if len(ds) == 0:
            problems.append(_no_image(cfg, ds))
        elif ds.data.skipped.get(R.LABEL_MISSING, 0) > MISSING_LABELS_SHARE * len(ds):
            problems.append(_labels_missing(cfg, ds))
    for head, head_cfg in cfg.heads.items():
        sets = [ds for ds in train_sets if head in cfg.sources[ds.source].labels and len(ds)]
        if not sets or any(head in cfg.sources[s].labels for s in unreadable):
            continue  # no train source (the summary notes it), or every one already an error, or unknown
        counts = {ds.source: _supervision(ds, head) for ds in sets}
        what = "boxes" if head_cfg.task == "detect" else "labels"
        if not sum(counts.values()):
            one = {"boxes": "box", "labels": "label"}[what]
            lines = [f"head {head}: no {one} from any train source ({', '.join(f'{s}/train' for s in counts)}):"]
            for ds in sets:
                lines += _indent_lines(_why_no_supervision(cfg, ds, head, what), "  ")
            problems.append(Problem("\n".join(lines), error=True, head=head))
            continue
        for ds in sets:
            if counts[ds.source] == 0:
                why = _why_no_supervision(cfg, ds, head, what)
                why[0] += f": its images would teach head {head} only background (other sources give it {what})"
                problems.append(Problem("\n".join(why), error=False, source=ds.source, split="train", head=head))
    return problems


def _same_head(cfg: Config, head: str, init: Any) -> bool:
    """Whether the `model.init` weights' head of this name is this head (same task and classes), so it is kept."""
    if not isinstance(init, Mapping):
        return False
    return init.get("task") == cfg.heads[head].task and list(init.get("classes") or []) == list(
        cfg.heads[head].classes or []
    )


def heads_without_source(cfg: Config) -> list[str]:
    """The heads that no source with a train split labels."""
    labelled = {h for src in cfg.sources.values() if src.train is not None for h in src.labels}
    return [h for h in cfg.heads if h not in labelled]


def _no_source(cfg: Config, head: str) -> Problem:
    task = cfg.heads[head].task
    how = "{SOURCE_CLASS: HEAD_CLASS, ...}" if task == "detect" else "{COLUMN: ...}"
    return Problem(
        f"head {head}: no source with a train split labels it, so training would save it untrained. Give it a "
        f"source (sources.NAME.labels.{head}: {how}, for a source whose images have its labels), start from "
        f"weights that have it (model.init=PATH), or remove heads.{head}",
        error=True,
        head=head,
    )


def _labels_missing(cfg: Config, ds: SourceDataset) -> Problem:
    n = ds.data.skipped[R.LABEL_MISSING]
    heads = ", ".join(cfg.sources[ds.source].labels)
    effect = (
        f"every object in them teaches heads {heads} that it is not there"
        if ds.split == "train"
        else f"every detection of an object in them counts as a false positive of heads {heads}"
    )
    return Problem(
        f"sources.{ds.source}.{ds.split}: {n} of {len(ds)} images ({n / len(ds):.0%}) have no label file and are "
        f"read as background: {effect}. If they are unlabelled rather than empty, label them or leave them out",
        error=False,
        source=ds.source,
        split=ds.split,
    )


def ignored_summary(unmapped: dict[str, int]) -> str:
    """Classes a source has that map to no head, in one line: how many, their boxes, the largest few."""
    counts = sorted(((n, c) for c, n in unmapped.items() if n), reverse=True)
    if not counts:
        return ""
    shown = ", ".join(f"{c} {n}" for n, c in counts[:IGNORED_SHOWN]) + ", ..." * (len(counts) > IGNORED_SHOWN)
    boxes = sum(n for n, _ in counts)
    classes = f"{len(counts)} class{'es' * (len(counts) > 1)}"
    return f"ignored classes (mapped to no head): {classes}, {boxes} boxes ({shown})"


def _no_image(cfg: Config, ds: SourceDataset) -> Problem:
    src = cfg.sources[ds.source]
    heads = ", ".join(src.labels)
    train = ds.split == "train"
    consequence = f"nothing to train heads {heads} on" if train else f"evaluation of {heads} on it is skipped"
    lines = [f"sources.{ds.source}.{ds.split} ({getattr(src, ds.split)}): no usable image; {consequence}"]
    lines += _lost(ds) or ["  the reader found no image at all"]
    lines += _where(ds)
    lines.append(f"  fix: {_fix(ds, 'point sources.NAME.SPLIT at the images (a folder, list or annotation file)')}")
    return Problem("\n".join(lines), error=train, source=ds.source, split=ds.split)


def _supervision(ds: SourceDataset, head: str) -> int:
    """Boxes (detect) or labels (classify/regress) the split gives the head."""
    if head in ds.class_maps:  # counted over the records' arrays: no object per image (data/table.py)
        return ds.records.count_boxes(ds.class_maps[head])
    return ds.records.count_labels(head)


def _why_no_supervision(cfg: Config, ds: SourceDataset, head: str, what: str) -> list[str]:
    src = cfg.sources[ds.source]
    lines = [f"sources.{ds.source}.train ({src.train}): {len(ds)} images, 0 {head} {what}"]
    cmap = ds.class_maps.get(head, {})
    counts = ds.data.box_counts()
    others = {c: n for c, n in counts.items() if n and c not in cmap}
    ignored = ds.records.count_boxes(cmap, ignore=True)
    if ignored:
        lines.append(f"  {ignored} boxes of its classes are ignore regions (VOC `difficult`, COCO `iscrowd`)")
    if others:
        shown = ", ".join(f"{c} {n}" for c, n in others.items())
        lines.append(f"  its boxes are of classes that sources.{ds.source}.labels.{head} does not map: {shown}")
    lost = _lost(ds)
    lines += lost
    if not (ignored or others or lost):
        lines.append("  every image has an empty label: all are background")
    lines += _where(ds)
    mapped = ", ".join(cmap) or "none"
    fallback = (
        f"map the classes it has under sources.{ds.source}.labels.{head} (now: {mapped})"
        if others
        else "give the images their labels"
    )
    lines.append(f"  fix: {_fix(ds, fallback)}")
    return lines


def _lost(ds: SourceDataset) -> list[str]:
    """What the reader skipped, by reason, biggest first, each with its first place."""
    out = []
    for reason, n in sorted(ds.data.skipped.items(), key=lambda kv: -kv[1]):
        places = ds.data.examples.get(reason) or []
        out.append(f"  lost: {n} x {reason}{f', e.g. {places[0]}' if places else ''}")
    return out


def _where(ds: SourceDataset) -> list[str]:
    return [f"  looked in: {w}" for w in ds.data.looked_in] + [f"  hint: {h}" for h in ds.data.hints]


def _fix(ds: SourceDataset, fallback: str) -> str:
    """The hint's fix when the reader found one (it ends in the fix), else the fix of the biggest loss."""
    if ds.data.hints:
        return "see the hint"
    reasons = sorted(ds.data.skipped.items(), key=lambda kv: -kv[1])
    fix = next((_FIXES[r] for r, _ in reasons if r in _FIXES), fallback)
    return fix.replace("NAME", ds.source).replace("SPLIT", ds.split)


def _indent_lines(lines: list[str], prefix: str) -> list[str]:
    return [prefix + line for line in lines]


def _indent(message: str) -> str:
    return "\n".join(_indent_lines(message.splitlines(), "  "))


def describe_data(cfg: Config, train_sets: list[SourceDataset], val_sets: list[SourceDataset]) -> list[str]:
    """The summary printed at start: what each source gives each head, what is ignored or skipped."""
    lines = ["data:"]
    probs = source_probabilities([len(d) for d in train_sets], cfg.train.sampling) if train_sets else []
    p_of = {d.source: p for d, p in zip(train_sets, probs, strict=True)}
    for ds in [*train_sets, *val_sets]:
        share = f", {p_of[ds.source]:.0%} of train samples" if ds.split == "train" else ""
        per_head = ", ".join(f"{h}: {what}" for h, what in ds.supervision().items())
        lines.append(f"  {ds.source}/{ds.split}: {len(ds)} images{share}; supervises {per_head}")
        if ignored := ignored_summary(ds.unmapped):
            lines.append(f"    {ignored}")
        for reason, n in ds.data.skipped.items():
            lines.append(f"    skipped: {n} x {reason}{_first(ds.data.examples.get(reason))}")
        for reason, n in ds.data.warnings.items():
            lines.append(f"    warning: {n} x {reason}{_first(ds.data.examples.get(reason))}")
    for head in cfg.heads:
        if not any(head in cfg.sources[d.source].labels for d in train_sets):
            moved_by = (
                "only distillation from model.init can move it"
                if cfg.train.distill_old_heads
                else "only its train.pseudo teacher can move it"
                if cfg.train.pseudo.enabled
                else "it will not change"
            )
            lines.append(f"  note: head {head!r} has no train source; {moved_by}")
    return lines


def _first(places: list[str] | None) -> str:
    return f", e.g. {places[0]}" if places else ""

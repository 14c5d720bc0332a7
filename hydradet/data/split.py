"""`hydradet split`: a fully labelled COCO set -> a partial-label benchmark.

The train images are cut into disjoint parts, one per head, and each part keeps only its own head's labels:
the situation hydradet is for (each dataset labels some heads, its images show the others' objects too).
The val images stay fully labelled, so every head is scored on all of its objects. A user can then train
hydradet on the parts and compare with a model trained on the full labels.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hydradet.data.coco import load_coco_json, read_coco
from hydradet.errors import ConfigError, DataError


@dataclass(frozen=True)
class SplitResult:
    config_yaml: Path
    parts: dict[str, Path]  # head -> its part's COCO JSON
    val_json: Path
    summary: list[str]


def parse_head_spec(spec: str) -> tuple[str, list[str]]:
    """`animal=bird,cat,dog` -> ("animal", ["bird", "cat", "dog"])."""
    name, _, classes = spec.partition("=")
    names = [c.strip() for c in classes.split(",") if c.strip()]
    if not name.strip() or not names:
        raise ConfigError(f"--head {spec!r}: expected NAME=CLASS[,CLASS...], e.g. --head animal=cat,dog")
    return name.strip(), names


def split_coco(
    json_path: Path,
    heads: dict[str, list[str]],
    out_dir: Path,
    seed: int = 0,
    val_fraction: float = 0.2,
    val_json: Path | None = None,
    images_dir: Path | None = None,
) -> SplitResult:
    """Writes out_dir/{HEAD}/annotations.json per head, out_dir/val/annotations.json and out_dir/hydradet.yaml.

    Without val_json, a val_fraction of the images (chosen by seed) becomes the val set; the rest is dealt out
    to the heads in equal parts. Annotation and image entries are copied unchanged; images are not copied
    (the config's `images` points at their folder).
    """
    if len(heads) < 2:
        raise ConfigError("--head: give at least two heads, e.g. --head person=person --head animal=cat,dog")
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"--val-fraction {val_fraction}: must be in [0, 1)")
    data = load_coco_json(json_path)
    records = read_coco(json_path, images_dir)  # the same checks and image probing as training
    if not records.records:
        raise DataError(f"{json_path}: none of its images was found or readable; give --images FOLDER")
    root = _images_root(records.records[0].path, data, json_path, images_dir)
    cat_id = {c["name"]: c["id"] for c in data["categories"]}
    for head, classes in heads.items():
        for c in classes:
            if c not in cat_id:
                hint = difflib.get_close_matches(c, list(cat_id), n=1)
                raise ConfigError(
                    f"--head {head}=...: {json_path} has no category {c!r}"
                    f"{f'; did you mean {hint[0]!r}?' if hint else ''} Its categories: {sorted(cat_id)}"
                )

    # Only images that training could use take part, so the parts are as large as they claim to be.
    usable = {r.path for r in records.records}
    ids = sorted(img["id"] for img in data["images"] if root / img["file_name"] in usable)
    order = [ids[k] for k in np.random.default_rng(seed).permutation(len(ids))]
    n_val = 0 if val_json else round(val_fraction * len(order))
    if val_json is None and n_val == 0:
        raise ConfigError(f"--val-fraction {val_fraction} leaves no val image out of {len(order)}; raise it")
    train_ids = order[n_val:]
    parts = {head: set(train_ids[k :: len(heads)]) for k, head in enumerate(heads)}

    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    summary = []
    for head, classes in heads.items():
        keep_cats = {cat_id[c] for c in classes}
        part = _subset(data, parts[head], keep_cats)
        written[head] = _write(out_dir / head / "annotations.json", part)
        summary.append(f"{head}: {len(part['images'])} images, {len(part['annotations'])} {head} annotations")
    if val_json is None:
        val = _subset(data, set(order[:n_val]), None)
        val_json = _write(out_dir / "val" / "annotations.json", val)
        summary.append(f"val: {len(val['images'])} images, {len(val['annotations'])} annotations (all classes)")
        val_root = root
    else:
        given = read_coco(val_json)
        if not given.records:
            raise DataError(f"{val_json}: none of its images was found beside it or in its images/ folder")
        val_root = _images_root(given.records[0].path, load_coco_json(val_json), val_json, None)
        summary.append(f"val: {val_json} (as given): {len(given.records)} images")
    config_yaml = out_dir / "hydradet.yaml"
    config_yaml.write_text(_config_text(heads, written, (val_json, val_root), root, out_dir, seed, json_path))
    return SplitResult(config_yaml, written, val_json, summary)


def _images_root(first: Path, data: dict[str, Any], json_path: Path, images_dir: Path | None) -> Path:
    """The folder that `file_name` is relative to, as read_coco found it."""
    if images_dir:
        return images_dir
    names = {img["file_name"] for img in data["images"]}
    for root in (json_path.parent, json_path.parent / "images"):
        if any(root / n == first for n in names):
            return root
    return json_path.parent


def _subset(data: dict[str, Any], image_ids: set, cat_ids: set | None) -> dict[str, Any]:
    """The images given, with their annotations of cat_ids (all if None); other keys kept as they are."""
    anns = [
        a
        for a in data["annotations"]
        if a["image_id"] in image_ids and (cat_ids is None or a["category_id"] in cat_ids)
    ]
    cats = [c for c in data["categories"] if cat_ids is None or c["id"] in cat_ids]
    images = [img for img in data["images"] if img["id"] in image_ids]
    return {**data, "images": images, "annotations": anns, "categories": cats}


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _config_text(
    heads: dict[str, list[str]],
    parts: dict[str, Path],
    val: tuple[Path, Path],  # the val JSON and its images folder
    images: Path,
    out_dir: Path,
    seed: int,
    source: Path,
) -> str:
    def rel(p: Path) -> str:
        try:
            return str(p.resolve().relative_to(out_dir.resolve()))
        except ValueError:
            return str(p.resolve())

    img = str(images.resolve())
    cfg: dict[str, Any] = {
        "heads": {h: {"task": "detect", "classes": list(c)} for h, c in heads.items()},
        "sources": {
            **{
                f"only_{h}": {"format": "coco", "train": rel(parts[h]), "images": img, "labels": {h: _same(c)}}
                for h, c in heads.items()
            },
            "full_val": {
                "format": "coco",
                "val": rel(val[0]),
                "images": str(val[1].resolve()),
                "labels": {h: _same(c) for h, c in heads.items()},
            },
        },
    }
    lines = [f"# generated by `hydradet split` from {source.resolve()} (seed {seed}); paths relative to this file"]
    for top, entries in cfg.items():
        lines += [f"{top}:"] + [f"  {k}: {_flow(v)}" for k, v in entries.items()]
    return "\n".join(lines) + "\n"


def _same(classes: list[str]) -> dict[str, str]:
    return {c: c for c in classes}


def _flow(obj: object) -> str:
    return yaml.safe_dump(obj, default_flow_style=True, sort_keys=False, width=10**6).strip()

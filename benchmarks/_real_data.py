"""The real-photo task of benchmarks/real_partial.py, built only from ../shared/data, seeded.

Heads: `person` (one class) and `animal` (one class). One animal class, not the animal kinds: the lion source
labels only lions, so with per-kind classes it would be a source "exhaustively labelled" for a head whose dog or
zebra classes it never marks; one `animal` class is a label space that both animal sources label completely.

  persons     persons-roboflow (YOLO)            labels person         (its own val split: in domain)
  pennfudan   pennfudan-voc (VOC), seeded 80/20  labels person         (its 20 %: in domain)
  lions       lions-roboflow (YOLO), Lion        labels animal         (its own val split: in domain)
  coco        coco-train, a seeded 70 %          labels animal only    (its persons unlabelled: the user's case)
  coco_val    coco-train, the other 30 %         labels both heads     (the cross-source truth; held out)

Every file the task writes (lists, COCO JSON subsets, VOC image sets, the config) goes under `out`; the images
stay where they are. `coco_val` is held out of training-time evaluation: the benchmark scores it itself.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from _common import restrict_labels

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
COCO_ANIMALS = ["bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"]
HEADS = {"person": ["person"], "animal": ["animal"]}
HELD_OUT = "coco_val"  # scored by the benchmark, never seen by training


def _pick(items: list, n: int | None, seed: int) -> list:
    items = sorted(items)
    random.Random(seed).shuffle(items)
    return sorted(items[:n] if n is not None else items)


def _yolo(out: Path, name: str, folder: str, names: list[str], caps: tuple[int | None, int | None], seed: int):
    """A data YAML whose train/val are .txt lists of a seeded subset of the source's images (all when cap None)."""
    root = SHARED / folder
    entry: dict[str, Any] = {"names": names}
    for split, cap in zip(("train", "val"), caps, strict=True):
        images = _pick([str(p) for p in (root / "images" / split).iterdir()], cap, seed)
        (out / f"{name}_{split}.txt").write_text("\n".join(images) + "\n")
        entry[split] = str(out / f"{name}_{split}.txt")
    path = out / f"{name}.yaml"
    path.write_text(json.dumps(entry))  # JSON is YAML
    return path


def _voc(out: Path, caps: tuple[int | None, int | None], seed: int) -> tuple[Path, Path]:
    """Penn-Fudan has no split: a seeded 80/20 one, as VOC image-set lists beside links to its folders."""
    root = out / "pennfudan"
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for sub in ("Annotations", "JPEGImages"):
        if not (root / sub).exists():
            (root / sub).symlink_to(SHARED / "pennfudan-voc" / sub)
    ids = _pick([p.stem for p in (SHARED / "pennfudan-voc" / "Annotations").glob("*.xml")], None, seed)
    cut = round(0.8 * len(ids))
    lists = []
    for split, part, cap in (("train", ids[:cut], caps[0]), ("val", ids[cut:], caps[1])):
        path = root / "ImageSets" / "Main" / f"{split}.txt"
        path.write_text("\n".join(_pick(part, cap, seed)) + "\n")
        lists.append(path)
    return lists[0], lists[1]


def _coco(out: Path, caps: tuple[int | None, int | None], seed: int) -> tuple[Path, Path]:
    """coco-train split by image, seeded 70/30; each part keeps all its annotations (the config's labels decide
    what a source supervises)."""
    data = json.loads((SHARED / "coco-train" / "instances.json").read_text())
    ids = _pick([im["id"] for im in data["images"]], None, seed)
    cut = round(0.7 * len(ids))
    paths = []
    for split, part, cap in (("train", ids[:cut], caps[0]), ("val", ids[cut:], caps[1])):
        keep = set(_pick(part, cap, seed))
        sub = {
            **data,
            "images": [im for im in data["images"] if im["id"] in keep],
            "annotations": [a for a in data["annotations"] if a["image_id"] in keep],
        }
        path = out / f"coco_{split}.json"
        path.write_text(json.dumps(sub))
        paths.append(path)
    return paths[0], paths[1]


def build_task(out: Path, quick: bool, seed: int = 0) -> dict[str, Any]:
    """Write the task's files under out/ and return the hydradet config dict (heads, sources; absolute paths).
    quick: seeded subsets (train / val images per source) for iterating; otherwise every image."""
    out.mkdir(parents=True, exist_ok=True)
    caps: dict[str, tuple[int | None, int | None]] = {
        "persons": (400, 120) if quick else (None, None),
        "lions": (250, 100) if quick else (None, None),
        "pennfudan": (None, None),
        "coco": (None, None),
    }
    persons = _yolo(out, "persons", "persons-roboflow", ["person"], caps["persons"], seed)
    lions = _yolo(out, "lions", "lions-roboflow", ["Lion"], caps["lions"], seed)
    penn_train, penn_val = _voc(out, caps["pennfudan"], seed)
    coco_train, coco_val = _coco(out, caps["coco"], seed)
    coco_images = str(SHARED / "coco-train" / "images")
    animal = {"animal": dict.fromkeys(COCO_ANIMALS, "animal")}
    person = {"person": {"person": "person"}}
    sources = {
        "persons": {"format": "yolo", "train": str(persons), "val": str(persons), "labels": person},
        "pennfudan": {"format": "voc", "train": str(penn_train), "val": str(penn_val), "labels": person},
        "lions": {"format": "yolo", "train": str(lions), "val": str(lions), "labels": {"animal": {"Lion": "animal"}}},
        "coco": {"format": "coco", "train": str(coco_train), "images": coco_images, "labels": animal},
        HELD_OUT: {"format": "coco", "val": str(coco_val), "images": coco_images, "labels": {**person, **animal}},
    }
    return {"heads": {h: {"task": "detect", "classes": c} for h, c in HEADS.items()}, "sources": sources}


def restrict(task: dict[str, Any], heads: dict[str, list[str]]) -> dict[str, Any]:
    """The task for a model with these heads (`restrict_labels`); the held-out val set is left out of training-time
    evaluation."""
    sources = restrict_labels({s: d for s, d in task["sources"].items() if s != HELD_OUT}, heads)
    return {"heads": {h: {"task": "detect", "classes": c} for h, c in heads.items()}, "sources": sources}

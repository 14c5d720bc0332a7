"""The partial-label task of benchmarks/partial_labels.py: its data (synthetic, or a `hydradet split` cut
down), the heads and which source labels what, per-variant hydradet configs, and the fully labelled val set
held in memory so that every model is scored on the very same batches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from _common import restrict_labels
from torch.utils.data import DataLoader

from hydradet.config import load_config
from hydradet.config.schema import Config
from hydradet.data.dataset import Batch, SourceDataset, collate
from hydradet.demo import DEMO_OVERRIDES
from hydradet.eval.coco_map import ImageBoxes
from hydradet.synth.world import SynthSpec, write_synthetic_world

TRAIN_BATCH = 16  # default.yaml's train.batch; YOLO trains with the same
# The demo's settings, minus where its runs go and how often it evaluates (here: after the last epoch only, so
# that training wall time is comparable with YOLO's, which validates once at the end).
HYDRA_OVERRIDES = [
    o for o in DEMO_OVERRIDES if o.split("=")[0] not in ("project", "name", "eval.every", "train.epochs")
]


# ---------------------------------------------------------------- the task: heads, sources
@dataclass
class Task:
    """A partial-label config read once: heads, which source labels what, the fully labelled val set."""

    cfg: Config  # the multi-head config with the demo's settings; paths absolute
    heads: dict[str, list[str]]
    sources: dict[str, dict[str, Any]]  # name -> {format, train, val, images, labels}, as a config's dict
    train_sources: list[str]
    n_train: dict[str, int]  # train source -> images


def read_task(config_yaml: Path, epochs: int) -> Task:
    cfg = load_config(config_yaml, [*HYDRA_OVERRIDES, f"train.epochs={epochs}"])
    heads = {h: list(c.classes) for h, c in cfg.heads.items() if c.task == "detect"}
    sources = {}
    for name, s in cfg.sources.items():
        d = {k: str(getattr(s, k)) for k in ("train", "val", "images") if getattr(s, k) is not None}
        sources[name] = {"format": s.format, **d, "labels": {h: dict(m) for h, m in s.labels.items()}}
    train_sources = [s for s, d in sources.items() if "train" in d]
    n_train = {s: len(SourceDataset(cfg, s, "train", train=False)) for s in train_sources}
    names = [c for cs in heads.values() for c in cs]
    if len(set(names)) != len(names):
        raise SystemExit(f"heads share class names ({names}): the merged model needs distinct names")
    return Task(cfg, heads, sources, train_sources, n_train)


def hydra_config(task: Task, heads: dict[str, list[str]], out: Path, name: str, extra: tuple[str, ...] = ()) -> Config:
    """A hydradet config over the same sources: `heads` as given, each source's labels restricted to their
    classes (the merged head takes the union of the original heads' class maps); a source left with no label
    for these heads is left out (a separate model trains on its own source only)."""
    sources = restrict_labels(task.sources, heads)
    user = {"heads": {h: {"task": "detect", "classes": c} for h, c in heads.items()}, "sources": sources}
    epochs = task.cfg.train.epochs
    overrides = [*HYDRA_OVERRIDES, f"train.epochs={epochs}", f"eval.every={epochs}", f"project={out}", f"name={name}"]
    return load_config(user, [*overrides, *extra])


# ---------------------------------------------------------------- data: synthetic, or a split cut down
def synthetic_split(out: Path, train_images: int, val_images: int) -> Path:
    spec = SynthSpec(train_images_per_source=train_images, val_images=val_images, seed=0)
    return write_synthetic_world(out / "world", spec).config_yaml


def cut_split(config_yaml: Path, out: Path, train_images: int | None, val_images: int | None) -> Path:
    """A `hydradet split` config with its COCO parts cut to their first N images (for quick runs)."""
    if train_images is None and val_images is None:
        return config_yaml
    raw = yaml.safe_load(config_yaml.read_text())
    for name, s in raw["sources"].items():
        for split, n in (("train", train_images), ("val", val_images)):
            if split in s and n is not None:
                if s["format"] != "coco":
                    raise SystemExit(f"--train-images/--val-images: source {name} is not COCO; cut it by hand")
                path = Path(s[split]) if Path(s[split]).is_absolute() else config_yaml.parent / s[split]
                data = json.loads(path.read_text())
                ids = {img["id"] for img in sorted(data["images"], key=lambda i: i["id"])[:n]}
                data["images"] = [i for i in data["images"] if i["id"] in ids]
                data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
                cut = out / "data" / f"{name}_{split}.json"
                cut.parent.mkdir(parents=True, exist_ok=True)
                cut.write_text(json.dumps(data))
                s[split] = str(cut)
        for key in ("images",):
            if key in s and not Path(s[key]).is_absolute():
                s[key] = str((config_yaml.parent / s[key]).resolve())
    path = out / "data" / "hydradet.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ---------------------------------------------------------------- the fully labelled val set
@dataclass
class Val:
    """Letterboxed val batches held in memory, and each image's ground truth per head in original pixels."""

    batches: list[Batch]
    gts: dict[str, list[ImageBoxes]]  # head -> one entry per val image, in batch order
    heads: dict[str, list[str]]


def read_val(task: Task) -> Val:
    gts: dict[str, list[ImageBoxes]] = {h: [] for h in task.heads}
    batches = []
    for s, d in task.sources.items():
        if "val" not in d:
            continue
        if set(d["labels"]) != set(task.heads):
            print(f"note: val source {s} labels {sorted(d['labels'])}, not every head: left out of scoring")
            continue
        ds = SourceDataset(task.cfg, s, "val", train=False)
        for batch in DataLoader(ds, batch_size=TRAIN_BATCH, collate_fn=collate):
            batches.append(batch)
            for i, size in zip(batch.indices, batch.orig_sizes, strict=True):
                for h, t in ds.head_targets(i, size).items():
                    gts[h].append(ImageBoxes.ground_truth(t))
    if not batches:
        raise SystemExit("no val source labels every head: a fully labelled val set is needed")
    return Val(batches, gts, task.heads)

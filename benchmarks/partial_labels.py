"""Partial labels, one equal budget: hydradet vs one merged head vs separate models (vs YOLO11n when installed).

Every model trains for the same epochs over the same images at the same image size on a partial-label split
(each train source labels one head; its images also show the other heads' objects, unlabelled), and is scored
by the same evaluator (hydradet's pycocotools `coco_map`) on the fully labelled val set, per head's classes:

  hydradet               one head per source; a sample supervises only the heads its source labels (the rule)
  hydradet, random init  the same from random init (YOLO11n below also starts from random init)
  merged                 one head over the union of classes, trained on both sources: each source's missing
                         labels count as background (what users do today)
  separate               one single-head model per source (their sum is the cost of "all tasks")
  YOLO11n merged / separate  (only with `ultralytics` installed: `pip install -e '.[bench]'`) YOLO11n from
                         yolo11n.yaml (random init; nothing is downloaded), Ultralytics' own training recipe

hydradet variants use the demo's settings (hydradet/demo.py DEMO_OVERRIDES: the ImageNet ShuffleNet backbone
from weights/, imgsz 256, lr, seed) with eval only after the last epoch. Also reported: training wall time and
throughput, achieved GFLOP/s of training and inference as a share of this machine's fp32 matmul rate measured
in the same run, latency per image for all tasks together (forward + NMS on ready letterboxed batches, batch
1 and 8, median of interleaved rounds; CUDA too when present), parameters and GFLOPs (FlopCounterMode).

    .venv/bin/python benchmarks/partial_labels.py                                  # synthetic split, ~30 min
    .venv/bin/python benchmarks/partial_labels.py --data split/hydradet.yaml       # a `hydradet split` output
    .venv/bin/python benchmarks/partial_labels.py --epochs 1 --train-images 16 --val-images 8 --rounds 3  # smoke
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from _common import (
    count_flops,
    hydra_detect,
    import_ultralytics,
    machine,
    machine_line,
    markdown_table,
    matmul_rate,
    n_params,
    pyplot,
    time_interleaved,
    write_json,
    yolo_detect,
)
from torch.utils.data import DataLoader

from hydradet.config import load_config
from hydradet.config.schema import Config
from hydradet.data.dataset import Batch, SourceDataset, collate, unletterbox
from hydradet.data.synth import SynthSpec, write_synthetic_world
from hydradet.demo import BACKBONE_WEIGHTS, DEMO_OVERRIDES
from hydradet.eval.coco_map import ImageBoxes, coco_map
from hydradet.model.detector import HydraDetector
from hydradet.model.weights import load_model
from hydradet.train.step import head_losses
from hydradet.train.trainer import train

TRAIN_BATCH = 16  # default.yaml's train.batch; YOLO trains with the same
# The demo's settings, minus where its runs go and how often it evaluates (here: after the last epoch only, so
# that training wall time is comparable with YOLO's, which validates once at the end).
HYDRA_OVERRIDES = [
    o for o in DEMO_OVERRIDES if o.split("=")[0] not in ("project", "name", "eval.every", "train.epochs")
]
TARGET_SEPARATE_GAP = 0.01  # hydradet >= separate - 1 mAP50-95 point per head
TARGET_MERGED_GAIN = 0.10  # hydradet >= merged + 10 mAP50 points on the head whose labels a source lacks


# ---------------------------------------------------------------- the task: heads, sources, val
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
    sources = {}
    for s, d in task.sources.items():
        labels: dict[str, dict[str, str]] = {}
        for h, classes in heads.items():
            m = {sc: hc for mapping in d["labels"].values() for sc, hc in mapping.items() if hc in classes}
            if m:
                labels[h] = m
        if labels:
            sources[s] = {**d, "labels": labels}
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
                    ign, ign_labels = t.get("ignore"), t.get("ignore_labels")
                    gts[h].append(
                        ImageBoxes(
                            t["boxes"].numpy(),
                            t["labels"].numpy(),
                            ignore=None if ign is None else ign.numpy(),
                            ignore_labels=None if ign_labels is None else ign_labels.numpy(),
                        )
                    )
    if not batches:
        raise SystemExit("no val source labels every head: a fully labelled val set is needed")
    return Val(batches, gts, task.heads)


# A predictor maps a ready batch (on the model's device) to, per image, (boxes xyxy letterboxed px, scores,
# class names): every model is scored through this one interface.
Prediction = list[tuple[np.ndarray, np.ndarray, np.ndarray]]
Predictor = Callable[[torch.Tensor, float, float, int], Prediction]


def hydra_predictor(model: HydraDetector) -> Predictor:
    def predict(x: torch.Tensor, conf: float, iou: float, max_det: int) -> Prediction:
        dets = hydra_detect(model, x, conf, iou, max_det)
        out = []
        for i in range(x.shape[0]):
            parts = [(d[i], np.array(model.head_cfgs[h].classes)) for h, d in dets.items()]
            out.append(
                (
                    np.concatenate([p.boxes.cpu().numpy().reshape(-1, 4) for p, _ in parts]),
                    np.concatenate([p.scores.cpu().numpy() for p, _ in parts]),
                    np.concatenate([names[p.labels.cpu().numpy()] for p, names in parts]),
                )
            )
        return out

    return predict


def yolo_predictor(net: torch.nn.Module, names: list[str]) -> Predictor:
    lookup = np.array(names)

    def predict(x: torch.Tensor, conf: float, iou: float, max_det: int) -> Prediction:
        rows = [r.cpu().numpy() for r in yolo_detect(net, x, conf, iou, max_det)]
        return [(r[:, :4], r[:, 4], lookup[r[:, 5].astype(int)]) for r in rows]

    return predict


def joined(predictors: list[Predictor]) -> Predictor:
    """Separate models as one: each runs on the batch, their detections are pooled per image."""

    def predict(x: torch.Tensor, conf: float, iou: float, max_det: int) -> Prediction:
        outs = [p(x, conf, iou, max_det) for p in predictors]
        return [
            tuple(np.concatenate(parts) for parts in zip(*per_image, strict=True))
            for per_image in zip(*outs, strict=True)
        ]

    return predict  # type: ignore[return-value]


def score(predict: Predictor, val: Val, cfg: Config, device: torch.device) -> dict[str, dict[str, float]]:
    """Per head: the model's detections of that head's classes, scored by coco_map against that head's ground
    truth. A merged model's detections are split by class name, so every model meets the same evaluator."""
    preds: dict[str, list[ImageBoxes]] = {h: [] for h in val.heads}
    for batch in val.batches:
        per_image = predict(batch.images.to(device), cfg.eval.conf, cfg.eval.iou, cfg.eval.max_det)
        for (boxes, scores, names), scale, size in zip(per_image, batch.scales, batch.orig_sizes, strict=True):
            boxes = unletterbox(torch.from_numpy(np.ascontiguousarray(boxes)).float(), scale, size).numpy()
            for h, classes in val.heads.items():
                keep = np.isin(names, classes)
                labels = np.array([classes.index(n) for n in names[keep]], dtype=np.int64)
                preds[h].append(ImageBoxes(boxes[keep].reshape(-1, 4), labels, scores[keep]))
    return {h: coco_map(val.gts[h], preds[h], val.heads[h]) for h in val.heads}


# ---------------------------------------------------------------- training
@dataclass
class Trained:
    """One trained model of a variant (separate variants have one per head)."""

    predict: Predictor
    module: torch.nn.Module
    wall_s: float  # the whole training call: data reading, epochs, the final evaluation, saving
    loop_s: float  # the epochs' batch loops only
    images_seen: int  # epochs x training images
    train_flops_per_image: float  # forward + backward of one training step, per image (FlopCounterMode)
    forward: Callable[[torch.Tensor], object]  # for FLOPs: the network's forward without NMS
    extra: dict[str, Any] = field(default_factory=dict)


def train_hydra(cfg: Config, device: torch.device) -> Trained:
    t0 = time.time()
    run = train(cfg, log=lambda _line: None)
    wall = time.time() - t0
    rows = list(csv.DictReader((run / "results.csv").open()))
    loop = sum(float(r["time_s"]) for r in rows)
    model = load_model(run / "weights" / "last.safetensors").to(device)
    n = sum(len(SourceDataset(cfg, s, "train", train=False)) for s, src in cfg.sources.items() if src.train)
    return Trained(
        hydra_predictor(model),
        model,
        wall,
        loop,
        n * cfg.train.epochs,
        _hydra_train_flops(cfg, model, device),
        lambda x: model(x),
        {"run": str(run)},
    )


def _hydra_train_flops(cfg: Config, model: HydraDetector, device: torch.device) -> float:
    """FLOPs per image of one training step (forward + loss + backward) on a batch drawn from every train
    source in proportion, as the trainer's mixed sampler draws them: each head runs on its own rows only."""
    sets = [SourceDataset(cfg, s, "train", train=True) for s, src in cfg.sources.items() if src.train]
    total = sum(len(d) for d in sets)
    samples = []
    for d in sets:
        samples += [d[i] for i in range(min(len(d), max(1, round(TRAIN_BATCH * len(d) / total))))]
    batch = collate(samples).to(device)
    model = HydraDetector(cfg.model, cfg.heads).to(device).train()  # a fresh copy: FLOPs need no trained weights

    def step() -> None:
        losses = head_losses(model, batch, cfg.source_heads())
        sum(sum(t.values()) for t in losses.values()).backward()  # type: ignore[union-attr]

    return count_flops(step) / len(samples)


# ---------------------------------------------------------------- YOLO11n (optional)
def yolo_layout(task: Task, out: Path, heads: list[str], names: list[str]) -> Path:
    """The task's data in Ultralytics' YOLO layout: each train source with the labels of `heads` only (the
    classes it labels), class ids into `names`; the val set with those heads' labels. Images are symlinked.
    Ignore regions (COCO crowds) have no YOLO equivalent and are left out of YOLO's training labels."""
    ids = {n: k for k, n in enumerate(names)}
    folders: dict[str, list[str]] = {"train": [], "val": []}
    for s, d in task.sources.items():
        for split in ("train", "val"):
            if split not in d:
                continue
            ds = SourceDataset(task.cfg, s, split, train=False)
            if not any(h in ds.class_maps for h in heads):
                continue
            img_dir, lbl_dir = out / f"{s}_{split}" / "images", out / f"{s}_{split}" / "labels"
            img_dir.mkdir(parents=True, exist_ok=True)
            lbl_dir.mkdir(parents=True, exist_ok=True)
            for i, rec in enumerate(ds.records):
                w, h = rec.width, rec.height
                if not (w and h):
                    from PIL import Image

                    w, h = Image.open(rec.path).size
                link = img_dir / f"{i:06d}{rec.path.suffix.lower()}"
                if not link.exists():
                    link.symlink_to(rec.path.resolve())
                lines = []
                for head, t in ds.head_targets(i, (w, h)).items():
                    if head not in heads:
                        continue
                    for (x0, y0, x1, y1), c in zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True):
                        k = ids[task.heads[head][c]]
                        cx, cy, bw, bh = (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h
                        lines.append(f"{k} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
                (lbl_dir / f"{i:06d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
            folders[split].append(str(img_dir))
    data = {"path": str(out), "train": folders["train"], "val": folders["val"], "names": dict(enumerate(names))}
    path = out / "data.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def train_yolo(
    data_yaml: Path, names: list[str], epochs: int, imgsz: int, out: Path, name: str, device: torch.device
) -> Trained:
    from ultralytics import YOLO

    threads = torch.get_num_threads()
    yolo = YOLO("yolo11n.yaml")  # the architecture only: random init, no weights file exists offline
    epoch_times: list[float] = []
    starts: list[float] = []
    yolo.add_callback("on_train_epoch_start", lambda _t: starts.append(time.time()))
    yolo.add_callback("on_train_epoch_end", lambda _t: epoch_times.append(time.time() - starts[-1]))
    t0 = time.time()
    yolo.train(
        data=str(data_yaml),
        epochs=epochs,
        imgsz=imgsz,
        batch=TRAIN_BATCH,
        workers=2,
        device=0 if device.type == "cuda" else "cpu",
        seed=0,
        pretrained=False,
        amp=False,  # its AMP check downloads yolo11n.pt
        plots=False,  # plots fetch a font
        val=False,  # validate once, after the last epoch, as the hydradet variants do
        project=str(out),
        name=name,
        exist_ok=True,
        verbose=False,
    )
    wall = time.time() - t0
    torch.set_num_threads(threads)  # in case its trainer changed them: every later measurement on the same threads
    net = yolo.model.float().to(device).eval()  # after training: the checkpoint's EMA weights, loaded back
    n_images = sum(len(list(Path(p).iterdir())) for p in yaml.safe_load(data_yaml.read_text())["train"])
    fused = _fused(net)
    return Trained(
        yolo_predictor(fused, names),
        fused,
        wall,
        sum(epoch_times),
        n_images * epochs,
        _yolo_train_flops(len(names), imgsz, device),
        lambda x: fused(x),
    )


def _fused(net: torch.nn.Module) -> torch.nn.Module:
    """Conv+BatchNorm folded, as Ultralytics' predict runs YOLO (its AutoBackend fuses by default)."""
    import copy

    return copy.deepcopy(net).fuse(verbose=False).eval()


def _yolo_train_flops(nc: int, imgsz: int, device: torch.device) -> float:
    """FLOPs per image of one YOLO11n training step (forward + its loss + backward) on a batch of TRAIN_BATCH."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    net = DetectionModel("yolo11n.yaml", nc=nc, verbose=False).to(device).train()
    net.args = get_cfg()  # the loss's hyperparameters (box, cls, dfl gains)
    g = torch.Generator().manual_seed(0)
    n = TRAIN_BATCH
    xy, wh = torch.rand(n * 3, 2, generator=g) * 0.6 + 0.2, torch.rand(n * 3, 2, generator=g) * 0.3 + 0.05
    batch = {
        "img": torch.rand(n, 3, imgsz, imgsz, generator=g).to(device),
        "batch_idx": torch.arange(n).repeat_interleave(3).float().to(device),
        "cls": torch.randint(0, nc, (n * 3, 1), generator=g).float().to(device),
        "bboxes": torch.cat([xy, wh], 1).to(device),
    }
    return count_flops(lambda: net.loss(batch)[0].sum().backward()) / n


# ---------------------------------------------------------------- the run
@dataclass
class Variant:
    name: str
    models: list[Trained]
    note: str = ""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="a `hydradet split` config (default: synthetic split)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train-images", type=int, default=None, help="per source (synthetic default: 400; --data: all)")
    ap.add_argument("--val-images", type=int, default=None, help="synthetic default: 120; --data: all")
    ap.add_argument("--rounds", type=int, default=20, help="interleaved latency rounds")
    ap.add_argument("--skip-yolo", action="store_true", help="leave out YOLO11n even when ultralytics is installed")
    ap.add_argument("--out", type=Path, default=Path("/tmp/hydradet-bench/partial_labels"))
    args = ap.parse_args()
    assert BACKBONE_WEIGHTS.is_file(), f"missing {BACKBONE_WEIGHTS}"
    args.out = args.out.resolve()
    m = machine()
    print(f"machine: {machine_line(m)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bound_before = {"cpu": matmul_rate("cpu")} | ({"cuda": matmul_rate("cuda")} if device.type == "cuda" else {})

    if args.data is None:
        config_yaml = synthetic_split(args.out, args.train_images or 400, args.val_images or 120)
        data_name = f"synthetic split (SynthSpec seed 0, {args.train_images or 400} images per source)"
    else:
        config_yaml = cut_split(args.data.resolve(), args.out, args.train_images, args.val_images)
        data_name = str(args.data)
    task = read_task(config_yaml, args.epochs)
    val = read_val(task)
    imgsz = task.cfg.model.imgsz
    runs = args.out / "runs"
    print(f"data: {data_name}; train sources {task.n_train}; val {len(val.gts[next(iter(task.heads))])} images")

    yolo_note = ""
    use_yolo = not args.skip_yolo and import_ultralytics() is not None
    if not args.skip_yolo and not use_yolo:
        yolo_note = "ultralytics is not installed: YOLO11n rows skipped (pip install -e '.[bench]')"
        print(f"note: {yolo_note}")

    variants: list[Variant] = []
    union = [c for cs in task.heads.values() for c in cs]

    def log(name: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] training {name} ...", flush=True)

    log("hydradet")
    variants.append(Variant("hydradet", [train_hydra(hydra_config(task, task.heads, runs, "hydradet"), device)]))
    log("hydradet, random init")
    cfg = hydra_config(task, task.heads, runs, "hydradet_scratch", ("model.backbone_weights=null",))
    variants.append(Variant("hydradet, random init", [train_hydra(cfg, device)]))
    log("merged")
    variants.append(Variant("merged", [train_hydra(hydra_config(task, {"merged": union}, runs, "merged"), device)]))
    sep = []
    for h, classes in task.heads.items():
        log(f"separate: {h}")
        sep.append(train_hydra(hydra_config(task, {h: classes}, runs, f"separate_{h}"), device))
    variants.append(Variant("separate", sep))
    if use_yolo:
        log("YOLO11n merged")
        data = yolo_layout(task, args.out / "yolo_data" / "merged", list(task.heads), union)
        yolo = train_yolo(data, union, args.epochs, imgsz, runs, "yolo_merged", device)
        variants.append(Variant("YOLO11n merged", [yolo]))
        ysep = []
        for h, classes in task.heads.items():
            log(f"YOLO11n separate: {h}")
            data = yolo_layout(task, args.out / "yolo_data" / f"separate_{h}", [h], classes)
            ysep.append(train_yolo(data, classes, args.epochs, imgsz, runs, f"yolo_separate_{h}", device))
        variants.append(Variant("YOLO11n separate", ysep))

    print(f"[{time.strftime('%H:%M:%S')}] scoring, FLOPs, latency ...", flush=True)
    for v in variants:
        v.metrics = score(joined([t.predict for t in v.models]), val, task.cfg, device)

    # Params, GFLOPs: one forward at imgsz, batch 1, every model of the variant (all tasks together).
    x1 = val.batches[0].images[:1].to(device)
    cost = {}
    for v in variants:
        with torch.no_grad():
            fl = sum(count_flops(lambda t=t: t.forward(x1)) for t in v.models)
        cost[v.name] = {"params": sum(n_params(t.module) for t in v.models), "flops": fl}

    # Latency: trained models, forward + NMS at predict's settings, ready letterboxed batches of val images.
    pcfg = task.cfg.predict
    first8 = torch.cat([b.images for b in val.batches])[:8]
    timed = [v for v in variants if v.name != "hydradet, random init"]  # the same network as hydradet
    latency: dict[str, dict[tuple[str, int], float]] = {}
    devices = ["cpu"] + (["cuda"] if device.type == "cuda" else [])
    for dev in devices:
        calls = {}
        for v in timed:
            mods = [(t.predict, t.module.to(dev)) for t in v.models]
            for n in (1, 8):
                xb = first8[:n].to(dev)
                calls[(v.name, n)] = lambda xb=xb, mods=mods: [
                    p(xb, pcfg.conf, pcfg.iou, pcfg.max_det) for p, _ in mods
                ]
        latency[dev] = {k: ms / k[1] for k, ms in time_interleaved(calls, args.rounds, dev).items()}
    bound_after = {"cpu": matmul_rate("cpu")} | ({"cuda": matmul_rate("cuda")} if device.type == "cuda" else {})

    report = _report(args, m, data_name, task, variants, cost, latency, devices, bound_before, bound_after, yolo_note)
    print("\n" + report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tables.md").write_text(report + "\n")
    raw = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": m,
        "matmul_gflops": {"before": bound_before, "after": bound_after},
        "variants": {
            v.name: {
                "metrics": v.metrics,
                **cost[v.name],
                "models": [
                    {k: getattr(t, k) for k in ("wall_s", "loop_s", "images_seen", "train_flops_per_image", "extra")}
                    for t in v.models
                ],
                "latency_ms_per_image": {d: {str(n): latency[d].get((v.name, n)) for n in (1, 8)} for d in devices},
            }
            for v in variants
        },
    }
    write_json(args.out / "results.json", raw)
    _plots(args.out, task, variants, latency, devices)
    print(f"\ntables: {args.out / 'tables.md'}; raw numbers: {args.out / 'results.json'}; plots: {args.out}/*.png")


def _report(
    args: argparse.Namespace,
    m: dict[str, Any],
    data_name: str,
    task: Task,
    variants: list[Variant],
    cost: dict[str, dict[str, int]],
    latency: dict[str, dict[tuple[str, int], float]],
    devices: list[str],
    before: dict[str, dict[str, float]],
    after: dict[str, dict[str, float]],
    yolo_note: str,
) -> str:
    """The markdown tables, ready for BENCHMARKS.md: ratios first, absolute numbers beside them."""
    bound = {d: max(before[d]["best"], after[d]["best"]) for d in before}
    heads = list(task.heads)
    ref = next(v for v in variants if v.name == "hydradet")
    out = [
        f"Machine: {machine_line(m)}.",
        "fp32 matmul rate (torch.mm 1024/2048, median of 5): "
        + "; ".join(
            f"{d}: {before[d]['best']:.1f} GFLOP/s before, {after[d]['best']:.1f} after the run" for d in before
        )
        + ". Shares below are of the higher.",
        f"Data: {data_name}; train sources: "
        + ", ".join(f"{s} {n} images" for s, n in task.n_train.items())
        + f"; {args.epochs} epochs at imgsz {task.cfg.model.imgsz}, batch {TRAIN_BATCH}; "
        "scored by hydradet's coco_map on the fully labelled val set, per head's classes.",
        "hydradet variants: the demo's settings (ImageNet ShuffleNetV2 0.5x from weights/ unless random init). "
        "YOLO11n: from yolo11n.yaml, random init (no pretrained weights offline), Ultralytics' default recipe.",
    ]
    if yolo_note:
        out.append(f"Note: {yolo_note}.")
    out.append(
        "\n**Accuracy** (mAP on the fully labelled val set, per head; the merged models' detections split by class)\n"
    )
    hdr = ["variant"] + [f"{h} {k}" for h in heads for k in ("mAP50-95", "mAP50")]
    out.append(
        markdown_table(
            hdr, [[v.name] + [v.metrics[h][k] for h in heads for k in ("mAP50-95", "mAP50")] for v in variants]
        )
    )

    out.append("\n**Targets**\n")
    rows = []
    sep = next((v for v in variants if v.name == "separate"), None)
    mer = next((v for v in variants if v.name == "merged"), None)
    for h in heads:
        if sep is not None:
            a, b = ref.metrics[h]["mAP50-95"], sep.metrics[h]["mAP50-95"]
            rows.append(
                [
                    f"{h}: hydradet >= separate - 0.01 mAP50-95",
                    f"{a:.3f} vs {b:.3f} ({a - b:+.3f})",
                    _met(a >= b - TARGET_SEPARATE_GAP),
                ]
            )
        if mer is not None:
            a, b = ref.metrics[h]["mAP50"], mer.metrics[h]["mAP50"]
            rows.append(
                [
                    f"{h}: hydradet >= merged + 0.10 mAP50",
                    f"{a:.3f} vs {b:.3f} ({a - b:+.3f})",
                    _met(a >= b + TARGET_MERGED_GAIN),
                ]
            )
    out.append(markdown_table(["target", "measured", ""], rows))
    out.append(
        "\n(The merged target is meant for the head whose labels the other source lacks: with one source per head "
        "that is every head.)"
    )

    out.append(
        "\n**Training** (wall: the whole training call incl. data reading and the final evaluation; "
        "loop: the epochs' batch loops; GFLOP/s: training FLOPs (forward + backward, FlopCounterMode) / loop time)\n"
    )
    rows = []
    wall_ref = sum(t.wall_s for t in ref.models)
    for v in variants:
        wall, loop = sum(t.wall_s for t in v.models), sum(t.loop_s for t in v.models)
        seen = sum(t.images_seen for t in v.models)
        flops = sum(t.train_flops_per_image * t.images_seen for t in v.models)
        gfs = flops / loop / 1e9
        rows.append(
            [
                v.name,
                f"{wall:.0f}",
                f"{wall / wall_ref:.2f}x",
                f"{loop:.0f}",
                f"{seen / loop:.1f}",
                f"{flops / seen / 1e9:.2f}",
                f"{gfs:.1f}",
                f"{gfs / bound[devices[-1]]:.1%}",
            ]
        )
    out.append(
        markdown_table(
            [
                "variant",
                "wall s",
                "wall / hydradet",
                "loop s",
                "images/s",
                "train GFLOPs/image",
                "achieved GFLOP/s",
                "share of matmul rate",
            ],
            rows,
        )
    )
    yolo = next((v for v in variants if v.name == "YOLO11n merged"), None)
    if yolo is not None:

        def gfs(v: Variant) -> float:
            return sum(t.train_flops_per_image * t.images_seen for t in v.models) / sum(t.loop_s for t in v.models)

        r = gfs(ref) / gfs(yolo)
        out.append(
            f"\nTarget: hydradet's training throughput at least YOLO11n's at equal GFLOPs "
            f"(achieved training GFLOP/s, hydradet / YOLO11n merged): {r:.2f}x: {_met(r >= 1)}"
        )

    for d in devices:
        out.append(
            f"\n**Inference, all tasks together ({d})**: ms per image, forward + NMS on ready letterboxed val "
            f"batches (conf {task.cfg.predict.conf}, IoU {task.cfg.predict.iou}), median of {args.rounds} "
            "interleaved rounds; separate = both models on the batch; YOLO11n with Conv+BN fused as Ultralytics "
            "predicts. GFLOPs: one forward at batch 1 (FlopCounterMode, 2 FLOPs per multiply-add)\n"
        )
        rows = []
        ref1, ref8 = latency[d][("hydradet", 1)], latency[d][("hydradet", 8)]
        for v in variants:
            if (v.name, 1) not in latency[d]:
                continue  # hydradet from random init: the same network as hydradet
            c, b1, b8 = cost[v.name], latency[d][(v.name, 1)], latency[d][(v.name, 8)]
            gf = c["flops"] / 1e9
            rate = gf / (b8 / 1000)  # GFLOP/s at batch 8
            rows.append([v.name, c["params"] / 1e6, gf, b1, f"{b1 / ref1:.2f}x", b8, f"{b8 / ref8:.2f}x", rate])
            rows[-1].append(f"{rate / bound[d]:.1%}")
        out.append(
            markdown_table(
                [
                    "variant",
                    "params M",
                    "GFLOPs",
                    "batch 1 ms/img",
                    "/ hydradet",
                    "batch 8 ms/img",
                    "/ hydradet",
                    "achieved GFLOP/s (batch 8)",
                    "share of matmul rate",
                ],
                rows,
            )
        )
    return "\n".join(out)


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _plots(out: Path, task: Task, variants: list[Variant], latency: dict, devices: list[str]) -> None:
    plt = pyplot()
    if plt is None:
        return
    heads = list(task.heads)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    w = 0.8 / len(variants)
    for ax, metric in zip(axes, ("mAP50-95", "mAP50"), strict=True):
        for k, v in enumerate(variants):
            ax.bar(np.arange(len(heads)) + k * w, [v.metrics[h][metric] for h in heads], w, label=v.name)
        ax.set_xticks(np.arange(len(heads)) + w * (len(variants) - 1) / 2, heads)
        ax.set_title(f"{metric}, fully labelled val")
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "partial_labels_map.png", dpi=120)
    fig, ax = plt.subplots(figsize=(7, 4))
    timed = [v.name for v in variants if (v.name, 1) in latency["cpu"]]
    for k, n in enumerate((1, 8)):
        ref = latency["cpu"][("hydradet", n)]
        ax.bar(np.arange(len(timed)) + k * 0.4, [latency["cpu"][(t, n)] / ref for t in timed], 0.4, label=f"batch {n}")
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xticks(np.arange(len(timed)) + 0.2, timed, rotation=15, fontsize=8)
    ax.set_ylabel("latency / hydradet (CPU, all tasks)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "partial_labels_latency.png", dpi=120)
    plt.close("all")


if __name__ == "__main__":
    main()

"""YOLO11n's side of benchmarks/partial_labels.py (only with `ultralytics` installed, a benchmark-only extra):
the task's data in Ultralytics' layout, training with Ultralytics' own recipe from random init (nothing is
downloaded), and the trained network wrapped as a Predictor with its training cost, like _hydra.py does.
"""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from _common import count_flops, yolo11n_net, yolo_detect
from _measure import Prediction, Predictor, Trained
from _partial_task import TRAIN_BATCH, Task
from PIL import Image

from hydradet.data.dataset import SourceDataset


def yolo_layout(task: Task, out: Path, heads: list[str], names: list[str]) -> Path:
    """The task's data in Ultralytics' YOLO layout: each train source with the labels of `heads` only (the
    classes it labels), class ids into `names`; the val set with those heads' labels. Images are symlinked.
    Ignore regions (COCO crowds) have no YOLO equivalent and are left out of YOLO's training labels."""
    if out.exists():  # links left from an earlier run would join this run's training set
        shutil.rmtree(out)
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
    return copy.deepcopy(net).fuse(verbose=False).eval()


def _yolo_train_flops(nc: int, imgsz: int, device: torch.device) -> float:
    """FLOPs per image of one YOLO11n training step (forward + its loss + backward) on a batch of TRAIN_BATCH."""
    from ultralytics.cfg import get_cfg

    net = yolo11n_net(nc)
    assert net is not None, "ultralytics is not installed"
    net = net.to(device).train()
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


def yolo_predictor(net: torch.nn.Module, names: list[str]) -> Predictor:
    lookup = np.array(names)

    def predict(x: torch.Tensor, conf: float, iou: float, max_det: int) -> Prediction:
        rows = [r.cpu().numpy() for r in yolo_detect(net, x, conf, iou, max_det)]
        return [(r[:, :4], r[:, 4], lookup[r[:, 5].astype(int)]) for r in rows]

    return predict

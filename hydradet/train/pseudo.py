"""Learn from every image (`train.pseudo`, off by default): a teacher's outputs for the detect heads a source does
not label.

The rule (train/rule.py) lets a head learn only from the sources that label it. Across sources that leaves the
other images unused: an animal head that never sees a person photo learns little about what is *not* an animal
(BENCHMARKS.md, "Learn from every image"). The published answer to missing annotations across datasets (Zhao et al.,
ECCV 2020, "Object Detection with a Unified Label Space from Multiple Datasets"; OMNIA Faster R-CNN, 2018; Unbiased
Teacher, ICLR 2021; Efficient Teacher, 2023) is a teacher that labels the other sources' images for the heads they
lack. Here the head's own teacher is the only voice on those images: another source's labels never reach a head,
and a source's own labels always win on the heads it labels (the teacher labels only rows whose source lacks the
head: `rule.rows_without_labels`).

Teachers (`train.pseudo.teacher`):
- `ema`: the run's own EMA copy (train/ema.py), from epoch `start_epoch` + 1, run on each batch as augmented
  (`label_batch`), so its boxes are already in the sample's pixels.
- a weights file: its boxes over every train image of the sources that lack the head, computed once before training
  (`cached_detections`), saved in the run folder (reused on resume), and set on the datasets (data/pseudo_labels.py)
  so that augmentation and mosaic move them exactly like real labels.
A teacher's detections become targets by score (data/pseudo_labels.py:split_by_score): >= high a positive,
low..high an ignore region, below low background. Soft dense targets (the teacher's scores at every location through
the distillation loss of train/distill.py, as Dense Teacher) were tried with the EMA teacher and measured far worse
(BENCHMARKS.md): the student chased its own lagging average until both detected nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from hydradet.config.schema import Config
from hydradet.data.dataset import Batch, SourceDataset, collate, unletterbox
from hydradet.data.pseudo_labels import CachedDetections, split_by_score, teacher_heads
from hydradet.data.workers import ignore_sigint
from hydradet.errors import ConfigError, WeightsError
from hydradet.files import atomic_save
from hydradet.model.detector import HydraDetector
from hydradet.model.weights import load_model
from hydradet.train.rule import rows_without_labels

CACHE = "pseudo_labels.pt"  # in the run folder: a file teacher's boxes


def pseudo_rows(batch: Batch, source_heads: Mapping[str, Iterable[str]]) -> dict[str, Tensor]:
    """head -> the samples whose targets for that head are its teacher's (data/pseudo_labels.py:teacher_heads)."""
    rows: dict[str, list[int]] = {}
    for i, heads in enumerate(teacher_heads(batch.sources, batch.targets, source_heads)):
        for head in heads:
            rows.setdefault(head, []).append(i)
    return {h: torch.tensor(idx, dtype=torch.long) for h, idx in rows.items()}


def pseudo_counts(batch: Batch, source_heads: Mapping[str, Iterable[str]]) -> dict[str, tuple[int, int]]:
    """head -> (pseudo boxes, ignore regions) that its teacher put on this batch (results.csv pseudo_boxes/HEAD...)."""
    counts: dict[str, tuple[int, int]] = {}
    for head, idx in pseudo_rows(batch, source_heads).items():
        ts = [batch.targets[i][head] for i in idx.tolist()]
        counts[head] = (sum(len(t["boxes"]) for t in ts), sum(len(t.get("ignore", ())) for t in ts))
    return counts


def load_teacher(cfg: Config) -> HydraDetector:
    """The teacher file as a frozen model. WeightsError (exit 2) when it lacks a pseudo head or its classes differ:
    a teacher's class ids must mean the student head's classes."""
    path = Path(cfg.train.pseudo.teacher)
    teacher = load_model(path)
    for head in cfg.pseudo_heads():
        want = cfg.heads[head].classes
        have = teacher.head_cfgs.get(head)
        if have is None or have.task != "detect" or have.classes != want:
            what = "has no detect head" if have is None or have.task != "detect" else f"has classes {have.classes} for"
            raise WeightsError(
                f"train.pseudo.teacher: {path} {what} head {head!r} (the run's: {want}); a teacher must hold every "
                f"head in train.pseudo.heads with the same classes in the same order, e.g. a finished run of this "
                f"config (runs/NAME/weights/best.safetensors), or name fewer heads in train.pseudo.heads"
            )
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def thresholds(cfg: Config, conf: Mapping[str, float], where: str) -> dict[str, float | None]:
    """head -> the score from which a teacher box is a positive (None: no positives). `calibrated` takes the teacher
    head's F1-optimal conf from `conf`; a head without one raises ConfigError, naming `where` it was looked for."""
    high = cfg.train.pseudo.high
    if high != "calibrated":
        return dict.fromkeys(cfg.pseudo_heads(), high)  # type: ignore[arg-type]
    missing = [h for h in cfg.pseudo_heads() if h not in conf]
    if missing:
        raise ConfigError(
            f"train.pseudo.high=calibrated: {where} has no calibrated conf for head(s) {', '.join(missing)} (it is "
            "measured on the head's val data); give the score instead, e.g. train.pseudo.high=0.5"
        )
    return {h: float(conf[h]) for h in cfg.pseudo_heads()}


@torch.no_grad()
def label_batch(
    teacher: HydraDetector,
    batch: Batch,
    source_heads: Mapping[str, Iterable[str]],
    high: Mapping[str, float | None],
    low: float,
    nms: tuple[float, int],
) -> None:
    """Put the teacher's targets into `batch.targets` for every head of `high` on the rows whose source does not
    label it (split_by_score on its detections at conf `low`, NMS (iou, max_det)); boxes in the batch's pixels."""
    rows = rows_without_labels(batch.sources, source_heads, high)
    if not rows:
        return
    device = batch.images.device
    union = torch.unique(torch.cat(list(rows.values())))
    outputs = teacher(
        batch.images[union.to(device)], {h: torch.searchsorted(union, r).to(device) for h, r in rows.items()}
    )
    for head, idx in rows.items():
        detections = teacher.heads[head].postprocess(outputs[head], low, *nms)
        for i, d in zip(idx.tolist(), detections, strict=True):
            batch.targets[i][head] = split_by_score(d.boxes, d.scores, d.labels, high[head], low)


@torch.no_grad()
def detect_all(
    teacher: HydraDetector, cfg: Config, ds: SourceDataset, heads: list[str], device: torch.device
) -> dict[str, list[tuple[Tensor, Tensor, Tensor]]]:
    """head -> per image of `ds` (its record order): the teacher's detections at conf >= low, in the pixels of the
    image as decoded (what data/dataset.py:head_targets uses). An image that fails to decode gets none."""
    plain = SourceDataset(cfg, ds.source, ds.split, train=False, records=ds.data)  # letterbox only
    empty = (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    out: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {h: [empty] * len(plain) for h in heads}
    workers = min(cfg.train.workers, 2)
    loader = DataLoader(plain, cfg.eval.batch, collate_fn=collate, num_workers=workers, worker_init_fn=ignore_sigint)
    for batch in tqdm(loader, f"pseudo-labels {ds.source}", leave=False, dynamic_ncols=True):
        outputs = teacher(batch.images.to(device), dict.fromkeys(heads))
        for head in heads:
            found = teacher.heads[head].postprocess(outputs[head], cfg.train.pseudo.low, cfg.eval.iou, cfg.eval.max_det)
            for i, scale, size, d in zip(batch.indices, batch.scales, batch.orig_sizes, found, strict=True):
                out[head][i] = (unletterbox(d.boxes.cpu(), scale, size), d.scores.cpu(), d.labels.cpu())
    return out


def cached_detections(
    teacher: HydraDetector,
    cfg: Config,
    train_sets: list[SourceDataset],
    run_dir: Path,
    device: torch.device,
    log: Callable[[str], None],
) -> dict[str, dict[str, list[tuple[Tensor, Tensor, Tensor]]]]:
    """source -> head -> per image: the file teacher's detections on every train image of the sources that lack the
    head, from the run folder's cache when it was made by this teacher file for these images and settings (a resumed
    run reuses it), else computed now and saved there."""
    ps, source_heads = cfg.train.pseudo, cfg.source_heads()
    need = {ds.source: [h for h in cfg.pseudo_heads() if h not in source_heads[ds.source]] for ds in train_sets}
    key = _cache_key(cfg, train_sets)
    path = run_dir / CACHE
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # truncated or foreign files raise many types; all mean "compute it again"
            saved = {}
        if isinstance(saved, dict) and saved.get("key") == key:
            log(f"pseudo: the teacher's boxes from {path}")
            return saved["detections"]
        log(f"pseudo: {path} is unreadable or was made by another teacher file or other data: computed again")
    log(f"pseudo: teacher {ps.teacher} labels {sum(len(ds) for ds in train_sets if need[ds.source])} train images")
    found = {ds.source: detect_all(teacher, cfg, ds, need[ds.source], device) for ds in train_sets if need[ds.source]}
    atomic_save(path, lambda tmp: torch.save({"key": key, "detections": found}, tmp))
    return found


def _cache_key(cfg: Config, train_sets: list[SourceDataset]) -> dict[str, object]:
    """What the cached boxes depend on: the teacher file (path, size, modification time), the settings that shape
    its detections, and each source's images in order."""
    ps, stat = cfg.train.pseudo, Path(cfg.train.pseudo.teacher).stat()
    images = hashlib.sha256("\n".join(f"{ds.source}:{r.path}" for ds in train_sets for r in ds.records).encode())
    return {
        "teacher": str(ps.teacher),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "settings": [ps.low, cfg.eval.iou, cfg.eval.max_det, cfg.model.imgsz],
        "images": images.hexdigest(),
    }


class PseudoTeacher:
    """What the trainer asks of `train.pseudo`: built before the run folder (a bad teacher file stops the run before
    any work, exit 2), `prepare`d once the folder exists, then asked before each step what the step learns from."""

    def __init__(self, cfg: Config, device: torch.device) -> None:
        self.cfg, self.ps = cfg, cfg.train.pseudo
        self.heads = cfg.pseudo_heads()
        self.source_heads = cfg.source_heads()
        self.nms = (cfg.eval.iou, cfg.eval.max_det)
        self.file = None if self.ps.teacher == "ema" else load_teacher(cfg).to(device)
        self.high = thresholds(cfg, self.file.calibrated_conf, str(self.ps.teacher)) if self.file else {}
        self.device = device
        self.log: Callable[[str], None] = print
        self.epoch = 0  # the epoch `high` was last set for (the EMA's calibrated conf moves at each evaluation)

    def prepare(self, train_sets: list[SourceDataset], run_dir: Path, log: Callable[[str], None]) -> None:
        """A file teacher: its boxes onto the datasets (computed, or read from the run folder's cache)."""
        self.log = log
        if self.file is None:
            return
        found = cached_detections(self.file, self.cfg, train_sets, run_dir, self.device, log)
        for ds in train_sets:
            if ds.source in found:
                ds.pseudo = CachedDetections(found[ds.source], self.high, self.ps.low)
        log(f"pseudo: {self._describe()}")
        self.file = None  # its boxes are cached: the model is not needed during training

    def starts(self, epoch: int) -> bool:
        """Whether the teacher takes part in this epoch's steps (ema: after start_epoch epochs; a file: always)."""
        return self.ps.teacher != "ema" or epoch > self.ps.start_epoch

    def before_step(self, batch: Batch, epoch: int, ema: HydraDetector | None) -> float | None:
        """The pseudo_weight for train_step (None while the teacher has not started); the EMA teacher first puts
        its targets into the batch (a file teacher's came with the samples)."""
        if not self.starts(epoch):
            return None
        if self.ps.teacher == "ema":
            assert ema is not None, "train.pseudo.teacher=ema needs train.ema.enabled (the config checks it)"
            if epoch != self.epoch:  # the latest evaluation's calibrated conf, fixed for the epoch
                self.high = self._ema_thresholds(ema)
                self.epoch = epoch
                self.log(f"pseudo: epoch {epoch}, {self._describe()}")
            label_batch(ema, batch, self.source_heads, self.high, self.ps.low, self.nms)
        return self.ps.weight

    def _ema_thresholds(self, ema: HydraDetector) -> dict[str, float | None]:
        """`calibrated`: each head's F1-optimal conf at the latest evaluation (the config ensures one took place and
        the head has val data); a head whose evaluation found no conf (nothing detected) takes predict.conf."""
        conf = {**dict.fromkeys(self.heads, self.cfg.predict.conf), **ema.calibrated_conf}
        return thresholds(self.cfg, conf, "the run's latest evaluation")

    def _describe(self) -> str:
        who = "the run's EMA" if self.ps.teacher == "ema" else str(self.ps.teacher)
        high = ", ".join(f"{h} {'none' if v is None else f'>= {v:.3g}'}" for h, v in self.high.items())
        return f"teacher {who}: positives {high}; ignore regions from {self.ps.low:g}; below: background"

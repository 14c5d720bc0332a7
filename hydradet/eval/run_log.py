"""What a run shows besides results.csv, in its folder (runs/NAME/), refreshed at each epoch's end:

- `train.plots` (on by default): results.png; per detect head PR_curve_<head>.png and F1_curve_<head>.png; per
  detect or classify head confusion_matrix_<head>.png; train_batch0..2.jpg (the run's first batches after
  augmentation, each sample's boxes in its heads' colours and the heads it supervises written on it; with
  `train.pseudo` also the first TRAIN_BATCHES batches that carry a teacher's targets, train_batch<step>.jpg, the
  teacher's boxes dashed and ignore regions hatched);
  val_batch<k>_labels.jpg / _pred.jpg (the first batch of each val source, up to three).
- `train.tensorboard` (off by default; optional package): each results.csv row as scalars, the train batches and
  each evaluated epoch's val prediction pictures.

Both off: nothing is drawn and matplotlib is never imported. `hydradet val` writes the same evaluation pictures
(`eval_pictures`)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from PIL import Image

from hydradet.config.schema import Config, HeadConfig
from hydradet.data.dataset import Batch
from hydradet.data.pseudo_labels import teacher_heads
from hydradet.eval.batch_pictures import batch_picture
from hydradet.eval.evaluate import EvalDetails
from hydradet.files import atomic_save

TRAIN_BATCHES = 3  # train_batch0..2.jpg, as Ultralytics draws its first three
_STEP = re.compile(r"train_batch(\d+)\.jpg")


class RunLog:
    """Built at the start of `train`, before the run has a folder: a missing optional package stops the run
    before anything is written. Then `start(run_dir)`; per step `train_batch`; per evaluation `details()` for
    `evaluate` to fill; per epoch `epoch_end`; `close` at the end."""

    def __init__(self, cfg: Config) -> None:
        self.heads = cfg.heads
        self.source_heads = cfg.source_heads()  # which targets are a teacher's (train.pseudo): the heads not here
        self._taught_pictures = 0  # pictures drawn of batches that carry a teacher's targets
        self.plots = cfg.train.plots
        self.default_conf = cfg.predict.conf  # a head without a kept calibrated conf: predict's threshold
        if cfg.train.tensorboard:
            from hydradet.eval.tensorboard import require_tensorboard

            require_tensorboard()
        self._tensorboard_on = cfg.train.tensorboard
        self.tensorboard = None
        self.run_dir: Path | None = None
        self._details: EvalDetails | None = None

    @property
    def on(self) -> bool:
        return self.plots or self._tensorboard_on

    def start(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        # A resumed run counts the teacher pictures its folder already holds (those after the first steps), so
        # that it does not draw three more; a fresh folder holds none.
        steps = [int(m[1]) for p in run_dir.glob("train_batch*.jpg") if (m := _STEP.fullmatch(p.name))]
        self._taught_pictures = sum(s >= TRAIN_BATCHES for s in steps)
        if self._tensorboard_on:
            from hydradet.eval.tensorboard import TensorBoardLog

            self.tensorboard = TensorBoardLog(run_dir)

    def train_batch(self, step: int, batch: Batch) -> None:
        """train_batch<step>.jpg for the run's first TRAIN_BATCHES steps (step counted over the run), and for the
        first TRAIN_BATCHES batches that carry a teacher's targets (train.pseudo; the EMA teacher starts only after
        `start_epoch` epochs), whichever step they come at."""
        done = step >= TRAIN_BATCHES and self._taught_pictures >= TRAIN_BATCHES
        if done or not self.on or self.run_dir is None:
            return
        taught = teacher_heads(batch.sources, batch.targets, self.source_heads)  # train.pseudo's rows
        teacher = any(taught)
        if step >= TRAIN_BATCHES and not teacher:  # past the first steps: only teacher batches, until done
            return
        self._taught_pictures += int(teacher)
        picture = batch_picture(batch.images, batch.targets, batch.sources, _classes(self.heads), taught=taught)
        if self.plots:
            save_jpg(picture, self.run_dir / f"train_batch{step}.jpg")
        if self.tensorboard is not None:
            self.tensorboard.image(f"train_batch{step}", picture, step)

    def details(self) -> EvalDetails | None:
        """A fresh EvalDetails for this epoch's `evaluate` to fill, or None when nothing is drawn."""
        self._details = EvalDetails() if self.on else None
        return self._details

    def epoch_end(self, epoch: int, rows: list[dict], conf: dict[str, float] | None = None) -> None:
        """After results.csv is written with `rows` (the last is this epoch's): results.png, this epoch's
        evaluation pictures if it was evaluated, and the row to TensorBoard. conf: each detect head's calibrated
        conf as kept (eval/calibration.py); the pictures use the threshold predict will use."""
        if not self.on or self.run_dir is None:
            return
        details, self._details = self._details, None
        conf = self.predict_conf(conf or {})
        pred_pictures = {}
        if details is not None and (details.gts or details.pairs):
            pred_pictures = eval_pictures(details, self.heads, conf, self.run_dir if self.plots else None)
        if self.plots:
            from hydradet.eval.plots import plot_results

            plot_results(self.run_dir / "results.csv", self.run_dir / "results.png")
        if self.tensorboard is not None:
            if rows:
                self.tensorboard.scalars(rows[-1], epoch)
            for name, picture in pred_pictures.items():
                self.tensorboard.image(name, picture, epoch)
            self.tensorboard.flush()

    def best_pictures(self, conf: dict[str, float]) -> None:
        """At the run's end, the evaluation pictures of best.safetensors (its evaluation having filled
        `details()`) in place of the last evaluated epoch's. conf: best's calibrated conf per detect head."""
        details, self._details = self._details, None
        if details is not None and self.plots and self.run_dir is not None:
            eval_pictures(details, self.heads, self.predict_conf(conf), self.run_dir)

    def predict_conf(self, kept: dict[str, float]) -> dict[str, float]:
        """Each head's threshold in predict: its kept calibrated conf, else predict.conf."""
        return {h: kept.get(h, self.default_conf) for h in self.heads}

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None


def eval_pictures(
    details: EvalDetails,
    heads: dict[str, HeadConfig],
    conf: dict[str, float],
    out: Path | None,
    order: list[str] | None = None,
) -> dict[str, Image.Image]:
    """An evaluation's pictures, written to `out` (None: only returned): per detect head PR_curve_<head>.png,
    F1_curve_<head>.png and confusion_matrix_<head>.png, per classify head its confusion matrix (a regress head
    gets none), and val_batch<k>_labels.jpg / _pred.jpg. conf: per detect head, the score above which its
    predictions are drawn and counted in its confusion matrix (its calibrated conf; NaN or missing: 0.25,
    Ultralytics' value). order: the model's heads, for the colours (default: `heads`). Returns the prediction
    pictures by name (val_batch<k>_pred), for TensorBoard."""
    from hydradet.eval.confusion import DEFAULT_CONF, classify_confusion, detect_confusion

    conf = {h: c if math.isfinite(c) else DEFAULT_CONF for h, c in conf.items()}
    if out is not None:
        from hydradet.eval.plots import plot_confusion, plot_f1, plot_pr

        for head, cfg in heads.items():
            names = cfg.classes or []
            if details.gts.get(head):
                curves = details.curves.get(head)
                plot_pr(curves, head, out / f"PR_curve_{head}.png")
                plot_f1(curves, head, out / f"F1_curve_{head}.png")
                c = conf.get(head, DEFAULT_CONF)
                matrix = detect_confusion(details.gts[head], details.preds[head], len(names), c)
                note = f" (conf > {c:.3f}, IoU > 0.5)"
                plot_confusion(matrix, [*names, "background"], head, out / f"confusion_matrix_{head}.png", note)
            elif cfg.task == "classify" and details.pairs.get(head):
                truth, predicted = np.array(details.pairs[head]).T
                matrix = classify_confusion(truth, predicted, len(names))
                plot_confusion(matrix, names, head, out / f"confusion_matrix_{head}.png")
    # Heads the model has but this evaluation left out keep their place in the colours.
    classes = {h: (list(heads[h].classes or []) if h in heads else None) for h in order or heads}
    shown_conf = {h: conf.get(h, DEFAULT_CONF) for h in heads}
    pictures = {}
    for k, b in enumerate(details.batches):
        labels = batch_picture(b.images, b.targets, b.sources, classes, caption="labels")
        pred = batch_picture(b.images, b.preds, b.sources, classes, shown_conf, caption="labels")
        pictures[f"val_batch{k}_pred"] = pred
        if out is not None:
            save_jpg(labels, out / f"val_batch{k}_labels.jpg")
            save_jpg(pred, out / f"val_batch{k}_pred.jpg")
    return pictures


def save_jpg(picture: Image.Image, path: Path) -> None:
    """JPEG at quality 85 (a 16-image grid stays ~100-300 KB), written whole or not at all (files.py)."""
    atomic_save(path, lambda tmp: picture.save(tmp, format="JPEG", quality=85))


def _classes(heads: dict[str, HeadConfig]) -> dict[str, list[str] | None]:
    return {h: (list(cfg.classes) if cfg.classes else None) for h, cfg in heads.items()}

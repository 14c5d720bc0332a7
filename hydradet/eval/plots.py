"""Matplotlib figures of a run and of an evaluation: results.png (from results.csv), PR_curve_<head>.png,
F1_curve_<head>.png and confusion_matrix_<head>.png. Ultralytics' layouts, one head at a time.

matplotlib's object API (Figure, rendered by its Agg canvas): no pyplot, so no GUI backend and nothing global is
touched in the process that trains. Imported only when pictures are on (`train.plots`)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from hydradet.eval.curves import DetectCurves
from hydradet.files import atomic_save

DPI = 100
ALL_CLASSES = "#1f4e9c"  # the thick "all classes" line
LEGEND_MAX = 20  # classes named in a legend; more and the per-class lines go unnamed, as Ultralytics does


def plot_results(results_csv: Path, out: Path) -> None:
    """results.png: a row per head (its loss, then its metrics, per epoch), then a row of the run's learning rate
    and balancing weights. Heads and metrics are read from the columns (`loss/<head>`, `<head>/<metric>`,
    `balance/<head>`, `lr`), so any run's results.csv can be drawn; empty cells (epochs not evaluated) are gaps."""
    with results_csv.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0]) if rows else []
    epochs = np.array([_number(r.get("epoch", "")) for r in rows])
    heads = [c.split("/", 1)[1] for c in columns if c.startswith("loss/")]
    panels: list[list[tuple[str, list[str]]]] = []  # per figure row: (title, columns drawn in it)
    for h in heads:
        metrics = [c for c in columns if c.startswith(f"{h}/")]
        panels.append([(f"loss/{h}", [f"loss/{h}"]), *((c, [c]) for c in metrics)])
    run_row = [("lr", ["lr"])] if "lr" in columns else []
    balance = [c for c in columns if c.startswith("balance/") and any(r[c] != "" for r in rows)]
    if balance:
        run_row.append(("balance weights", balance))
    panels.append(run_row)
    panels = [p for p in panels if p]
    n_cols = max((len(p) for p in panels), default=1)
    fig = Figure(figsize=(3.2 * n_cols, 2.4 * max(1, len(panels))), dpi=DPI, layout="tight")
    axes = fig.subplots(max(1, len(panels)), n_cols, squeeze=False)
    for r, row in enumerate(panels):
        for c in range(n_cols):
            ax = axes[r][c]
            if c >= len(row):
                ax.axis("off")
                continue
            title, cols = row[c]
            for col in cols:
                y = np.array([_number(v.get(col, "")) for v in rows])
                ok = ~np.isnan(y)
                label = col.split("/", 1)[1] if len(cols) > 1 else None
                ax.plot(epochs[ok], y[ok], marker=".", linewidth=1.5, label=label)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("epoch", fontsize=8)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
            if len(cols) > 1:
                ax.legend(fontsize=7)
    _save(fig, out)


def plot_pr(curves: DetectCurves | None, head: str, out: Path) -> None:
    """PR_curve_<head>.png: per class its interpolated precision against recall at IoU 0.5 (AP50 in the legend),
    and the mean over classes with ground truth (mAP50). Without ground truth or detections: an empty frame."""
    fig = Figure(figsize=(6, 5), dpi=DPI, layout="tight")
    ax = fig.subplots()
    if curves is not None and curves.has_truth.any():
        named = len(curves.names) <= LEGEND_MAX
        for k, name in enumerate(curves.names):
            if curves.has_truth[k]:
                label = f"{name} {curves.ap50[k]:.3f}" if named else None
                ax.plot(curves.recall, curves.precision[k], linewidth=1, label=label)
        mean = curves.mean(curves.precision)
        ax.plot(curves.recall, mean, linewidth=3, color=ALL_CLASSES, label=f"all classes {mean.mean():.3f} mAP@0.5")
        ax.legend(loc="lower left", fontsize=8)
    else:
        _nothing(ax)
    _frame(ax, "recall", "precision", f"{head}: precision-recall (IoU 0.5)")
    _save(fig, out)


def plot_f1(curves: DetectCurves | None, head: str, out: Path) -> None:
    """F1_curve_<head>.png: per class F1 (IoU 0.5) of the detections scored above each confidence, and the mean
    over classes with ground truth, its peak marked: the head's calibrated conf (`f1_conf`, used by predict)."""
    fig = Figure(figsize=(6, 5), dpi=DPI, layout="tight")
    ax = fig.subplots()
    if curves is not None and curves.has_truth.any():
        named = len(curves.names) <= LEGEND_MAX
        for k, name in enumerate(curves.names):
            if curves.has_truth[k]:
                ax.plot(curves.conf, curves.f1[k], linewidth=1, label=name if named else None)
        mean = curves.mean(curves.f1)
        best = int(np.argmax(mean))
        label = f"all classes {mean[best]:.2f} at {curves.conf[best]:.3f}"
        ax.plot(curves.conf, mean, linewidth=3, color=ALL_CLASSES, label=label)
        ax.axvline(curves.conf[best], color=ALL_CLASSES, linestyle="--", linewidth=1)
        ax.legend(loc="lower left", fontsize=8)
    else:
        _nothing(ax)
    _frame(ax, "confidence", "F1", f"{head}: F1 against confidence (IoU 0.5)")
    _save(fig, out)


def plot_confusion(matrix: np.ndarray, names: list[str], head: str, out: Path, note: str = "") -> None:
    """confusion_matrix_<head>.png: rows predicted, columns true (eval/confusion.py); each column normalised to
    the share of that true class (colour), its counts written in the cells. `names` label the rows/columns
    (with "background" last for a detect head)."""
    n = len(names)
    totals = matrix.sum(0, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape, float), where=totals > 0)
    side = min(12.0, 3.0 + 0.5 * n)
    fig = Figure(figsize=(side + 1, side), dpi=DPI, layout="tight")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= 30:  # counts readable up to here
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ink = "white" if share[i, j] > 0.5 else "black"
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", color=ink, fontsize=8)
    ticks = names if n <= LEGEND_MAX * 2 else []
    ax.set_xticks(range(len(ticks)), ticks, rotation=90, fontsize=8)
    ax.set_yticks(range(len(ticks)), ticks, fontsize=8)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(f"{head}: confusion matrix{note}", fontsize=10)
    _save(fig, out)


def _frame(ax: Axes, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)


def _nothing(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no ground truth or no detections", ha="center", va="center", transform=ax.transAxes)


def _number(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return math.nan


def _save(fig: Figure, out: Path) -> None:
    """Written whole or not at all (files.py): a viewer refreshing it each epoch never sees half a picture."""
    atomic_save(out, lambda tmp: fig.savefig(tmp, format=out.suffix.lstrip(".") or "png"))

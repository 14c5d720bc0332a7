"""The report of benchmarks/partial_labels.py: markdown tables (ratios first, absolute numbers beside them),
the raw numbers as JSON, and the PNG plots. Measures nothing: it only lays out what was measured.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine_line, markdown_table, parse_variant, pyplot, save_plot
from _measure import Variant
from _partial_task import TRAIN_BATCH, Task

TARGET_SEPARATE_GAP = 0.01  # hydradet >= separate - 1 mAP50-95 point per head
TARGET_MERGED_GAIN = 0.10  # hydradet >= merged + 10 mAP50 points on the head whose labels a source lacks


@dataclass
class Run:
    """Everything one run measured, as the report lays it out."""

    args: argparse.Namespace
    machine: dict[str, Any]
    data_name: str
    task: Task
    variants: list[Variant]
    cost: dict[str, dict[str, int]]  # variant -> params, FLOPs (one forward, batch 1, all its models)
    latency: dict[str, dict[tuple[str, int], float]]  # device -> (variant, batch) -> ms per image
    devices: list[str]
    before: dict[str, dict[str, float]]  # device -> matmul_rate() before the run
    after: dict[str, dict[str, float]]  # ... and after it
    yolo_note: str


def tables(run: Run) -> str:
    """The markdown tables, ready for BENCHMARKS.md: ratios first, absolute numbers beside them."""
    args, m, task, variants, cost, latency = run.args, run.machine, run.task, run.variants, run.cost, run.latency
    devices, before, after = run.devices, run.before, run.after
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
        f"Data: {run.data_name}; train sources: "
        + ", ".join(f"{s} {n} images" for s, n in task.n_train.items())
        + f"; {args.epochs} epochs at imgsz {task.cfg.model.imgsz}, batch {TRAIN_BATCH}; "
        "scored by hydradet's coco_map on the fully labelled val set, per head's classes.",
        "hydradet variants: the demo's settings (ImageNet ShuffleNetV2 0.5x from weights/ unless random init). "
        "YOLO11n: from yolo11n.yaml, random init (no pretrained weights offline), Ultralytics' default recipe.",
    ]
    if run.yolo_note:
        out.append(f"Note: {run.yolo_note}.")
    conf = task.cfg.predict.conf
    out.append(
        "\n**Accuracy** (on the fully labelled val set, per head; the merged models' detections split by class. "
        f"R50@{conf:g}: recall at IoU 0.5 of the detections a user keeps at predict's conf {conf:g})\n"
    )
    out.append(accuracy_table({v.name: v.metrics for v in variants}, heads, conf))

    out.append("\n**Targets**\n")
    rows = []
    targets = [  # (the variant compared with, metric, hydradet's margin over it, the target in words)
        ("separate", "mAP50-95", -TARGET_SEPARATE_GAP, "hydradet >= separate - 0.01 mAP50-95"),
        ("merged", "mAP50", TARGET_MERGED_GAIN, "hydradet >= merged + 0.10 mAP50"),
    ]
    extra = {parse_variant(spec)[0] for spec in args.variant}  # --variant rows are held to the same targets
    for hydra in [ref, *(v for v in variants if v.name in extra)]:
        for h in heads:
            for name, metric, margin, words in targets:
                other = next((v for v in variants if v.name == name), None)
                if other is None:
                    continue
                a, b = hydra.metrics[h][metric], other.metrics[h][metric]
                words = words.replace("hydradet", hydra.name)
                rows.append([f"{h}: {words}", f"{a:.3f} vs {b:.3f} ({a - b:+.3f})", _met(a >= b + margin)])
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


def results(run: Run) -> dict[str, Any]:
    """The raw numbers behind the tables, for results.json."""
    return {
        "args": {k: str(v) for k, v in vars(run.args).items()},
        "machine": run.machine,
        "matmul_gflops": {"before": run.before, "after": run.after},
        "variants": {
            v.name: {
                "metrics": v.metrics,
                **run.cost[v.name],
                "models": [
                    {k: getattr(t, k) for k in ("wall_s", "loop_s", "images_seen", "train_flops_per_image", "extra")}
                    for t in v.models
                ],
                "latency_ms_per_image": {
                    d: {str(n): run.latency[d].get((v.name, n)) for n in (1, 8)} for d in run.devices
                },
            }
            for v in run.variants
        },
    }


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def accuracy_table(metrics: dict[str, dict[str, dict[str, float]]], heads: list[str], conf: float) -> str:
    """variant -> head -> score()'s metrics, as one row per variant."""
    keys = ("mAP50-95", "mAP50", "recall50@conf")
    hdr = ["variant"] + [f"{h} {k}" for h in heads for k in ("mAP50-95", "mAP50", f"R50@{conf:g}")]
    return markdown_table(hdr, [[name] + [m[h].get(k) for h in heads for k in keys] for name, m in metrics.items()])


def plots(out: Path, run: Run) -> None:
    """mAP per head and variant; CPU latency of each variant relative to hydradet."""
    plt = pyplot()
    if plt is None:
        return
    heads, variants, latency = list(run.task.heads), run.variants, run.latency
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    w = 0.8 / len(variants)
    for ax, metric in zip(axes, ("mAP50-95", "mAP50"), strict=True):
        for k, v in enumerate(variants):
            ax.bar(np.arange(len(heads)) + k * w, [v.metrics[h][metric] for h in heads], w, label=v.name)
        ax.set_xticks(np.arange(len(heads)) + w * (len(variants) - 1) / 2, heads)
        ax.set_title(f"{metric}, fully labelled val")
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    save_plot(fig, out / "partial_labels_map.png")
    fig, ax = plt.subplots(figsize=(7, 4))
    timed = [v.name for v in variants if (v.name, 1) in latency["cpu"]]
    for k, n in enumerate((1, 8)):
        ref = latency["cpu"][("hydradet", n)]
        ax.bar(np.arange(len(timed)) + k * 0.4, [latency["cpu"][(t, n)] / ref for t in timed], 0.4, label=f"batch {n}")
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xticks(np.arange(len(timed)) + 0.2, timed, rotation=15, fontsize=8)
    ax.set_ylabel("latency / hydradet (CPU, all tasks)")
    ax.legend()
    save_plot(fig, out / "partial_labels_latency.png")
    plt.close("all")

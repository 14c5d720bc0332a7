"""What a head costs: K = 1, 2, 4, 8 detect heads (1 class each) on one trunk vs one head vs K separate models.

Per model variant (repeatable `--variant NAME:key=value,key=value`, config overrides on top of the demo's
settings; default: one variant `default` with none) and K: parameters, GFLOPs (FlopCounterMode, one forward at
imgsz, batch 1), latency per image (forward + every head's NMS on ready letterboxed batches, batch 1 and 8) and
the time of one training step on a batch of 8 (forward, losses, backward, AdamW step; every head labelled on
every image, the costliest case; "partial" columns: a batch from K sources that each label one head, so each
head runs on its own rows, as hydradet trains on partial labels). The same for K separate one-head models run
one after another. Everything is timed in the same interleaved rounds (median), so load on a shared machine
hits all alike, and reported as ratios to one head of the same variant.

Target (issue 4): K heads cost at most 1 + 0.15 (K - 1) times one head in latency; K separate models about K times.

    .venv/bin/python benchmarks/heads_scaling.py [--rounds 20] [--ks 1,2,4,8] \
        [--variant "default:"] [--variant "light:model.head_convs=1"]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from _common import (
    COCO_IMAGES,
    count_flops,
    hydra_detect,
    letterboxed,
    machine,
    machine_line,
    markdown_table,
    matmul_rate,
    n_params,
    parse_variant,
    pyplot,
    sample_images,
    save_plot,
    stamp,
    time_interleaved,
    write_json,
    write_tables,
)

from hydradet.config import load_config
from hydradet.config.schema import Config
from hydradet.data.dataset import Batch
from hydradet.demo import DEMO_OVERRIDES
from hydradet.model.detector import HydraDetector
from hydradet.train.optim import build_optimizer
from hydradet.train.step import train_step

KS = (1, 2, 4, 8)
TRAIN_BATCH = 8
MODEL_OVERRIDES = [o for o in DEMO_OVERRIDES if o.startswith("model.")]  # backbone, its weights, imgsz 256


def target(k: int) -> float:
    return 1 + 0.15 * (k - 1)


def k_head_config(k: int, overrides: list[str]) -> Config:
    """K detect heads h0..h{K-1} with one class each; source `all` labels every head, source s{i} only head i."""
    heads = {f"h{i}": {"task": "detect", "classes": [f"c{i}"]} for i in range(k)}
    labels = {f"h{i}": {f"c{i}": f"c{i}"} for i in range(k)}
    sources = {"all": {"format": "coco", "train": "unused.json", "labels": labels}}
    sources |= {
        f"s{i}": {"format": "coco", "train": "unused.json", "labels": {f"h{i}": labels[f"h{i}"]}} for i in range(k)
    }
    return load_config({"heads": heads, "sources": sources}, [*MODEL_OVERRIDES, *overrides], check_paths=False)


def build(cfg: Config) -> HydraDetector:
    torch.manual_seed(0)  # the same initial weights for every model of a given shape
    return HydraDetector(cfg.model, cfg.heads)


def fake_batch(x: torch.Tensor, heads: list[str], sources: list[str]) -> Batch:
    """A training batch on ready images: two boxes per image for each head its source labels (fixed seed)."""
    g = torch.Generator().manual_seed(0)
    size = x.shape[-1]
    targets = []
    for _ in range(x.shape[0]):
        t = {}
        for h in heads:
            xy = torch.rand(2, 2, generator=g) * size * 0.6
            wh = torch.rand(2, 2, generator=g) * size * 0.3 + 16
            t[h] = {"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.zeros(2, dtype=torch.long)}
        targets.append(t)
    n = x.shape[0]
    return Batch(x, targets, sources, list(range(n)), [1.0] * n, [(size, size)] * n)


@dataclass
class Measured:
    params: int
    flops: int
    calls: dict[str, Callable[[], object]]  # measurement name -> a call to time


def hydra_calls(cfg: Config, x1: torch.Tensor, x8: torch.Tensor) -> Measured:
    """One K-head model: its latency calls, its train steps (all heads on all rows; each head on its rows)."""
    net = build(cfg).eval()
    heads = list(cfg.heads)
    p = cfg.predict
    full = fake_batch(x8, heads, ["all"] * len(x8))
    srcs = [f"s{i % len(heads)}" for i in range(len(x8))]
    partial = fake_batch(x8, heads, srcs)
    partial.targets = [{f"h{i % len(heads)}": t[f"h{i % len(heads)}"]} for i, t in enumerate(partial.targets)]
    trainee = build(cfg).train()
    opt = build_optimizer(trainee, cfg.train)
    sh = cfg.source_heads()
    with torch.no_grad():
        flops = count_flops(lambda: net(x1))
    return Measured(
        n_params(net),
        flops,
        {
            "b1": lambda: hydra_detect(net, x1, p.conf, p.iou, p.max_det),
            "b8": lambda: hydra_detect(net, x8, p.conf, p.iou, p.max_det),
            "train": lambda: train_step(trainee, opt, full, sh, cfg.train.grad_clip),
            "train partial": lambda: train_step(trainee, opt, partial, sh, cfg.train.grad_clip),
        },
    )


def separate_calls(k: int, overrides: list[str], x1: torch.Tensor, x8: torch.Tensor) -> Measured:
    """K one-head models, run one after another: what serving K tasks costs without a shared trunk."""
    parts = [hydra_calls(k_head_config(1, overrides), x1, x8) for _ in range(k)]
    keys = ("b1", "b8", "train")

    def seq(key: str) -> Callable[[], object]:
        return lambda: [m.calls[key]() for m in parts]

    return Measured(sum(m.params for m in parts), sum(m.flops for m in parts), {key: seq(key) for key in keys})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", default=None, help="NAME:key=value,... (repeatable)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--ks", default=",".join(map(str, KS)), help="head counts, comma-separated (default 1,2,4,8)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/hydradet-bench/heads_scaling"))
    args = ap.parse_args()
    variants = dict(parse_variant(v) for v in (args.variant or ["default:"]))
    ks = [int(k) for k in args.ks.split(",")]
    if 1 not in ks:
        raise SystemExit("--ks must include 1: every ratio is against one head")
    m = machine()
    print(f"machine: {machine_line(m)}")
    bound_before = matmul_rate()

    imgsz = k_head_config(1, []).model.imgsz
    pics = sample_images(TRAIN_BATCH)
    x8 = letterboxed(pics, imgsz)
    x1 = x8[:1].clone()
    measured: dict[tuple[str, str, int], Measured] = {}
    for name, overrides in variants.items():
        for k in ks:
            measured[(name, "hydradet", k)] = hydra_calls(k_head_config(k, overrides), x1, x8)
            measured[(name, "separate", k)] = separate_calls(k, overrides, x1, x8)
    calls = {(*key, what): fn for key, meas in measured.items() for what, fn in meas.calls.items()}
    stamp(f"timing {len(calls)} calls x {args.rounds} interleaved rounds ...")
    ms = time_interleaved(calls, args.rounds)
    bound_after = matmul_rate()
    bound = max(bound_before["best"], bound_after["best"])

    out = [
        f"Machine: {machine_line(m)}.",
        f"fp32 matmul rate (torch.mm 1024/2048): {bound_before['best']:.1f} GFLOP/s before, "
        f"{bound_after['best']:.1f} after; shares are of the higher.",
        f"Demo settings ({', '.join(MODEL_OVERRIDES)}), random init heads, {len(pics)} "
        f"{'COCO' if COCO_IMAGES.is_dir() else 'random'} images letterboxed to {imgsz}; "
        f"median of {args.rounds} interleaved rounds. Latency: ms per image, forward + every head's NMS "
        f"(predict conf/IoU). Train: one step (forward, losses, backward, AdamW) on a batch of {TRAIN_BATCH}, "
        "every head labelled on every image; partial: image i labelled for head i mod K only "
        "(each head runs on its rows).",
    ]
    rows, abs_rows, raw = [], [], {}
    for name, overrides in variants.items():
        one = {w: ms[(name, "hydradet", 1, w)] for w in ("b1", "b8", "train", "train partial")}
        one_m = measured[(name, "hydradet", 1)]
        for kind in ("hydradet", "separate"):
            for k in ks:
                meas = measured[(name, kind, k)]
                t = {w: ms[(name, kind, k, w)] for w in meas.calls}
                lat = t["b1"] / one["b1"], t["b8"] / one["b8"]
                goal = target(k) if kind == "hydradet" else float(k)
                verdict = (
                    ("met" if max(lat) <= goal else "**missed**") if kind == "hydradet" else f"(about {k}x expected)"
                )
                rate = meas.flops / 1e9 / (t["b8"] / TRAIN_BATCH / 1000)
                partial = f"{t['train partial'] / one['train partial']:.2f}x" if "train partial" in t else "-"
                row = [name, kind, k, f"{meas.params / one_m.params:.2f}x", f"{lat[0]:.2f}x", f"{lat[1]:.2f}x"]
                rows.append([*row, f"{t['train'] / one['train']:.2f}x", partial, f"{goal:.2f}x", verdict])
                row = [name, kind, k, f"{meas.params / 1e6:.3f}", meas.flops / 1e9, t["b1"], t["b8"] / TRAIN_BATCH]
                abs_rows.append([*row, t["train"], f"{rate / bound:.1%}"])
                raw[f"{name}/{kind}/{k}"] = {
                    "overrides": overrides,
                    "params": meas.params,
                    "flops": meas.flops,
                    "ms": {
                        "b1": t["b1"],
                        "b8_per_image": t["b8"] / TRAIN_BATCH,
                        **{w: t[w] for w in t if "train" in w},
                    },
                }
    hdr = ["variant", "model", "K", "params / 1 head", "latency b1 / 1 head", "latency b8 / 1 head"]
    hdr += ["train step / 1 head", "train partial / 1 head", "latency target", ""]
    out += ["", "Ratios to one head of the same variant (the target applies to latency, both batch sizes):", ""]
    out += [markdown_table(hdr, rows), "", "Absolute numbers (noisy across runs: compare the ratios):", ""]
    hdr = ["variant", "model", "K", "params M", "GFLOPs", "b1 ms/img", "b8 ms/img", "train step ms"]
    out.append(markdown_table([*hdr, "inference GFLOP/s (b8) / matmul rate"], abs_rows))
    write_tables(args.out, "\n".join(out))
    write_json(args.out / "results.json", {"machine": m, "matmul_gflops": [bound_before, bound_after], "runs": raw})
    _plot(args.out, variants, ks, ms)
    print(f"\ntables: {args.out / 'tables.md'}; raw numbers: {args.out / 'results.json'}; plot: {args.out}/*.png")


def _plot(out: Path, variants: dict[str, list[str]], ks: list[int], ms: dict) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, what, title in zip(
        axes, ("b1", "b8", "train"), ("latency, batch 1", "latency, batch 8", "train step, batch 8"), strict=True
    ):
        for name in variants:
            for kind, style in (("hydradet", "-o"), ("separate", "--s")):
                one = ms[(name, "hydradet", 1, what)]
                ax.plot(ks, [ms[(name, kind, k, what)] / one for k in ks], style, label=f"{name}: {kind}")
        if what != "train":
            ax.plot(ks, [target(k) for k in ks], ":", color="grey", label="target 1 + 0.15 (K-1)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("K heads / models")
        ax.set_ylabel("/ one head")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    save_plot(fig, out / "heads_scaling.png")
    plt.close("all")


if __name__ == "__main__":
    main()

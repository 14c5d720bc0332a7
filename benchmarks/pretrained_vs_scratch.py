"""Why the demo ships a pretrained backbone: the demo's budget from random init vs from ImageNet weights.

Trains the demo's 2-head model on the synthetic world (same data, epochs, seed, schedule) with
(a) shufflenet_v2_x0_5_megvii from weights/ (the demo's setting), (b) the same network from random init,
(c) torchvision's shufflenet_v2_x1_0 from random init, and prints per-head mAP and wall time side by side.

    .venv/bin/python benchmarks/pretrained_vs_scratch.py [--epochs 10] [--out /tmp/bench]
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from hydradet.config import load_config
from hydradet.demo import BACKBONE_WEIGHTS, DEMO_OVERRIDES
from hydradet.synth.world import SynthSpec, write_synthetic_world
from hydradet.train.trainer import train

VARIANTS = {
    "megvii 0.5x, pretrained (demo)": [],
    "megvii 0.5x, random init": ["model.backbone_weights=null"],
    "torchvision x1.0, random init": ["model.backbone=shufflenet_v2_x1_0", "model.backbone_weights=null"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("/tmp/hydradet-bench"))
    args = ap.parse_args()
    assert BACKBONE_WEIGHTS.is_file(), f"missing {BACKBONE_WEIGHTS}"
    world = write_synthetic_world(args.out / "world", SynthSpec(seed=0))
    rows = []
    for name, extra in VARIANTS.items():
        overrides = [*DEMO_OVERRIDES, f"train.epochs={args.epochs}", f"project={args.out}", "eval.every=1", *extra]
        cfg = load_config(world.config_yaml, overrides)
        t0 = time.time()
        run = train(cfg, log=lambda _line: None)
        wall = time.time() - t0
        last = list(csv.DictReader((run / "results.csv").open()))[-1]
        rows.append((name, last, wall))
    print(f"\nsynthetic world (seed 0), {args.epochs} epochs, imgsz 256, demo schedule; mAP of the last epoch")
    print("| backbone | person mAP50 | person mAP50-95 | animal mAP50 | animal mAP50-95 | wall (s) |")
    print("|---|---|---|---|---|---|")
    for name, r, wall in rows:
        print(
            f"| {name} | {float(r['person/mAP50']):.3f} | {float(r['person/mAP50-95']):.3f} | "
            f"{float(r['animal/mAP50']):.3f} | {float(r['animal/mAP50-95']):.3f} | {wall:.0f} |"
        )


if __name__ == "__main__":
    main()

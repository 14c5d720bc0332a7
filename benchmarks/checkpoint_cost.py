"""What the training checkpoint costs: its size, the time one save takes, and that time as a share of an epoch.

The demo's settings (hydradet/demo.py DEMO_OVERRIDES: shufflenet_v2_x0_5_megvii, imgsz 256, two heads, EMA on,
AdamW) on the demo's synthetic world, written to a temporary folder. One real epoch is trained with `train()` at
the default `train.save_period`; its checkpoint is then saved again `--saves` times exactly as the trainer saves
it (torch.save through the temporary + fsync + rename of hydradet/files.py) to time one save. Saves per epoch =
1 at the epoch's end + one per full `train.save_period` minutes of the epoch. Target: under 2 % of the epoch.

    .venv/bin/python benchmarks/checkpoint_cost.py
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hydradet.config import load_config
from hydradet.demo import DEMO_OVERRIDES
from hydradet.files import atomic_save
from hydradet.synth.world import SynthSpec, write_synthetic_world
from hydradet.train.checkpoint import checkpoint_path
from hydradet.train.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        world = write_synthetic_world(root / "world", SynthSpec(seed=0))
        overrides = [*DEMO_OVERRIDES, "train.epochs=1", f"project={root / 'runs'}", "name=ckpt", "eval.every=1000"]
        cfg = load_config(world.config_yaml, overrides)
        run = train(cfg, log=lambda _: None)
        (row,) = csv.DictReader((run / "results.csv").open())
        epoch_s = float(row["time_s"]) - float(row["eval_s"] or 0)
        ckpt = checkpoint_path(run)
        payload = torch.load(ckpt, weights_only=True)
        times = []
        for _ in range(args.saves):
            t0 = time.perf_counter()
            atomic_save(ckpt, lambda p: torch.save(payload, p))
            times.append(time.perf_counter() - t0)
        save_s = statistics.median(times)
        period_s = cfg.train.save_period * 60
        saves = 1 + (int(epoch_s // period_s) if period_s > 0 else 0)
        weights_mb = (run / "weights" / "last.safetensors").stat().st_size / 1e6
        print("| setting | checkpoint MB | best/last weights MB | one save (s) | epoch (s) | saves per epoch | share |")
        print("|---|---|---|---|---|---|---|")
        print(
            f"| demo (imgsz 256, batch {cfg.train.batch}, save_period {cfg.train.save_period:g} min) "
            f"| {ckpt.stat().st_size / 1e6:.1f} | {weights_mb:.1f} | {save_s:.3f} | {epoch_s:.1f} | {saves} "
            f"| {100 * saves * save_s / epoch_s:.2f} % |"
        )


if __name__ == "__main__":
    main()

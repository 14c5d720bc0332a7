"""Two CPU processes (torchrun, gloo) against one, the same run otherwise: same result? what throughput?

The demo's synthetic world and overrides (hydradet/demo.py) for a few epochs, trained (1) as one process with
OMP_NUM_THREADS=2 and (2) with `train.devices=2` (torchrun, 2 gloo ranks, OMP_NUM_THREADS=1 each): the global batch,
the data and its augmentation are the same (data/seeding.py). Reported side by side: train images/s (epoch time
without evaluation), each epoch's mean loss per head, and the final mAP50 per head. With trainable BatchNorm the two
differ slightly by design (each rank normalises over its half of the batch; model.backbone_norm=syncbatch would
span both); a difference beyond that would be a bug.

    .venv/bin/python benchmarks/ddp_cpu.py [--epochs 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from hydradet.demo import DEMO_OVERRIDES
from hydradet.synth.world import SynthSpec, write_synthetic_world


def run(config: Path, project: Path, name: str, overrides: list[str], threads: int) -> list[dict[str, str]]:
    cmd = [sys.executable, "-m", "hydradet", "train", str(config), *overrides, f"project={project}", f"name={name}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
    return list(csv.DictReader((project / name / "results.csv").open()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        world = write_synthetic_world(root / "world", SynthSpec(seed=0))
        common = [o for o in DEMO_OVERRIDES if not o.startswith(("project=", "name=", "train.epochs="))]
        common += [f"train.epochs={args.epochs}", f"eval.every={args.epochs}", "train.plots=false"]
        rows = {
            "1 process (2 threads)": run(world.config_yaml, root, "one", common, threads=2),
            "2 processes (gloo, 1 thread each)": run(world.config_yaml, root, "two", [*common, "train.devices=2"], 1),
        }
    images = SynthSpec().train_images_per_source * 2
    print("| run | train images/s | " + " | ".join(f"loss epoch {e + 1}" for e in range(args.epochs)) + " | mAP50 |")
    print("|---|---|" + "---|" * args.epochs + "---|")
    for name, rs in rows.items():
        seconds = sum(float(r["time_s"]) for r in rs)
        losses = [" / ".join(r[k] for k in r if k.startswith("loss/")) for r in rs]
        maps = " / ".join(f"{rs[-1][k]}" for k in rs[-1] if k.endswith("/mAP50"))
        print(f"| {name} | {images * len(rs) / seconds:.1f} | " + " | ".join(losses) + f" | {maps} |")


if __name__ == "__main__":
    main()

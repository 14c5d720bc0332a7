"""Is the input pipeline the bottleneck? Images/s of the loader alone against the train step, side by side.

The demo's CPU config (hydradet/demo.py DEMO_OVERRIDES: shufflenet_v2_x0_5_megvii, imgsz 256, 2 heads) on a
synthetic world written to a temporary folder. Measured in one run:
  - loader: the trainer's DataLoader (the config's workers, augmentation on) iterated with no model;
  - per-image loader cost in one process with one thread (as a worker has), augmentation on and off;
  - train step: train_step() on batches already in memory (no loader);
  - end to end: the loader feeding train_step, as in a training epoch, augmentation on and off.
The loader is the bottleneck when its images/s fall below the train step's (ratio < 1).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/loader_speed.py
"""

from __future__ import annotations

import argparse
import itertools
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from hydradet.config import Config, load_config
from hydradet.data.dataset import Batch, SourceDataset
from hydradet.data.sampler import SourceBatchSampler
from hydradet.demo import DEMO_OVERRIDES
from hydradet.model.detector import HydraDetector
from hydradet.synth.world import SynthSpec, write_synthetic_world
from hydradet.train.optim import build_optimizer
from hydradet.train.step import train_step
from hydradet.train.trainer import make_loader as trainer_loader


def make_loader(cfg: Config, workers: int) -> DataLoader:
    """The trainer's loader (hydradet/train/trainer.py), with the worker count as a parameter."""
    sets = [SourceDataset(cfg, s, "train", train=True) for s, src in cfg.sources.items() if src.train]
    sizes = [len(ds) for ds in sets]
    steps = cfg.train.steps_per_epoch or max(1, math.ceil(sum(sizes) / cfg.train.batch))
    sampler = SourceBatchSampler(sizes, cfg.train.batch, cfg.train.sampling, steps, cfg.train.seed)
    return trainer_loader(sets, sampler, workers)


def images_per_s(
    batches: Iterable[Batch], n_batches: int, per_batch: Callable[[Batch], None] = lambda b: None
) -> float:
    """Throughput over n_batches after one warm-up batch (worker start-up and first-call costs excluded)."""
    it: Iterator[Batch] = iter(batches)
    per_batch(next(it))
    images, t0 = 0, time.perf_counter()
    for batch in itertools.islice(it, n_batches):
        per_batch(batch)
        images += len(batch.sources)
    return images / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200, help="training images per source in the synthetic world")
    ap.add_argument("--batches", type=int, default=20, help="batches timed per measurement (at most an epoch)")
    ap.add_argument("--rounds", type=int, default=3, help="each measurement's best round is reported")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        world = write_synthetic_world(Path(tmp), SynthSpec(train_images_per_source=args.images, val_images=8))
        cfg = load_config(world.config_yaml, [*DEMO_OVERRIDES, f"project={tmp}/runs"])
        off = load_config(world.config_yaml, [*DEMO_OVERRIDES, f"project={tmp}/runs", "augment.enabled=false"])
        n, workers, threads = args.batches, cfg.train.workers, torch.get_num_threads()
        torch.manual_seed(0)
        model = HydraDetector(cfg.model, cfg.heads)
        model.train()
        optimizer = build_optimizer(model, cfg.train)
        source_heads = cfg.source_heads()

        def step(batch: Batch) -> None:
            train_step(model, optimizer, batch, source_heads, cfg.train.grad_clip)

        def one_thread(c: Config) -> float:
            # One thread, as torch gives each DataLoader worker: the per-image cost that a worker pays.
            torch.set_num_threads(1)
            try:
                return images_per_s(make_loader(c, 0), n)
            finally:
                torch.set_num_threads(threads)

        in_memory = list(itertools.islice(iter(make_loader(cfg, 0)), n + 1))
        measure = {
            f"loader alone ({workers} workers, augmentation on)": lambda: images_per_s(make_loader(cfg, workers), n),
            "train step alone (batches in memory)": lambda: images_per_s(in_memory, n, step),
            "end to end (loader feeding the train step), augmentation on": lambda: images_per_s(
                make_loader(cfg, workers), n, step
            ),
            "end to end, augmentation off": lambda: images_per_s(make_loader(off, workers), n, step),
            "one loader process, augmentation on": lambda: one_thread(cfg),
            "one loader process, augmentation off": lambda: one_thread(off),
        }
        # Best of interleaved rounds: on a shared machine a round that another job slowed down is discarded.
        best = dict.fromkeys(measure, 0.0)
        for _ in range(args.rounds):
            for name, fn in measure.items():
                best[name] = max(best[name], fn())

    names = list(measure)
    ratio = best[names[0]] / best[names[1]]
    print(
        f"\nconfig: demo ({cfg.model.backbone}, imgsz {cfg.model.imgsz}, batch {cfg.train.batch}, "
        f"{len(cfg.heads)} heads), workers {workers}, torch threads {threads}, "
        f"best of {args.rounds} rounds of {n} batches\n"
    )
    print("| measurement | images/s |")
    print("|---|---|")
    for name in names[:2]:
        print(f"| {name} | {best[name]:.1f} |")
    print(f"| **ratio loader / train step** | **{ratio:.1f}x** |")
    for name in names[2:4]:
        print(f"| {name} | {best[name]:.1f} |")
    for name in names[4:]:
        print(f"| {name} ({1000 / best[name]:.1f} ms/image) | {best[name]:.0f} |")
    verdict = "is NOT" if ratio > 1 else "IS"
    print(f"\nThe loader {verdict} the bottleneck: it delivers {ratio:.1f}x the images the train step consumes.")


if __name__ == "__main__":
    main()

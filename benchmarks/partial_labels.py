"""Partial labels, one equal budget: hydradet vs one merged head vs separate models (vs YOLO11n when installed).

Every model trains for the same epochs over the same images at the same image size on a partial-label split
(each train source labels one head; its images also show the other heads' objects, unlabelled), and is scored
by the same evaluator (hydradet's pycocotools `coco_map`) on the fully labelled val set, per head's classes:

  hydradet               one head per source; a sample supervises only the heads its source labels (the rule)
  hydradet, random init  the same from random init (YOLO11n below also starts from random init)
  --variant NAME:k=v,..  extra hydradet rows with config overrides (e.g. per-head towers, `model.shared_convs=0,
                         model.head_convs=2`), trained, scored and timed like `hydradet`
  merged                 one head over the union of classes, trained on both sources: each source's missing
                         labels count as background (what users do today)
  separate               one single-head model per source (their sum is the cost of "all tasks")
  YOLO11n merged / separate  (only with `ultralytics` installed: `pip install -e '.[bench]'`) YOLO11n from
                         yolo11n.yaml (random init; nothing is downloaded), Ultralytics' own training recipe

hydradet variants use the demo's settings (hydradet/demo.py DEMO_OVERRIDES: the ImageNet ShuffleNet backbone
from weights/, imgsz 256, lr, seed) with eval only after the last epoch. Also reported: training wall time and
throughput, achieved GFLOP/s of training and inference as a share of this machine's fp32 matmul rate measured
in the same run, latency per image for all tasks together (forward + NMS on ready letterboxed batches, batch
1 and 8, median of interleaved rounds; CUDA too when present), parameters and GFLOPs (FlopCounterMode).

    .venv/bin/python benchmarks/partial_labels.py                                  # synthetic split, ~30 min
    .venv/bin/python benchmarks/partial_labels.py --data split/hydradet.yaml       # a `hydradet split` output
    .venv/bin/python benchmarks/partial_labels.py --epochs 1 --train-images 16 --val-images 8 --rounds 3  # smoke
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import (
    import_ultralytics,
    machine,
    machine_line,
    matmul_rate,
    parse_variant,
    stamp,
    write_json,
    write_tables,
)
from _hydra import train_hydra
from _measure import Variant, joined, measure_cost, measure_latency, score
from _partial_report import Run, plots, results, tables
from _partial_task import cut_split, hydra_config, read_task, read_val, synthetic_split
from _yolo import train_yolo, yolo_layout

from hydradet.demo import BACKBONE_WEIGHTS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="a `hydradet split` config (default: synthetic split)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train-images", type=int, default=None, help="per source (synthetic default: 400; --data: all)")
    ap.add_argument("--val-images", type=int, default=None, help="synthetic default: 120; --data: all")
    ap.add_argument("--rounds", type=int, default=20, help="interleaved latency rounds")
    ap.add_argument("--variant", action="append", default=[], help="extra hydradet row: NAME:key=value,...")
    ap.add_argument("--skip-yolo", action="store_true", help="leave out YOLO11n even when ultralytics is installed")
    ap.add_argument("--out", type=Path, default=Path("/tmp/hydradet-bench/partial_labels"))
    args = ap.parse_args()
    assert BACKBONE_WEIGHTS.is_file(), f"missing {BACKBONE_WEIGHTS}"
    args.out = args.out.resolve()
    m = machine()
    print(f"machine: {machine_line(m)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    devices = ["cpu"] + (["cuda"] if device.type == "cuda" else [])
    # The machine's bound before and after the run: other jobs on a shared machine may change it meanwhile.
    bound_before = {d: matmul_rate(d) for d in devices}

    # ---------------------------------------------------------------- data: the task and its fully labelled val
    if args.data is None:
        config_yaml = synthetic_split(args.out, args.train_images or 400, args.val_images or 120)
        data_name = f"synthetic split (SynthSpec seed 0, {args.train_images or 400} images per source)"
    else:
        config_yaml = cut_split(args.data.resolve(), args.out, args.train_images, args.val_images)
        data_name = str(args.data)
    task = read_task(config_yaml, args.epochs)
    val = read_val(task)
    imgsz = task.cfg.model.imgsz
    runs = args.out / "runs"
    print(f"data: {data_name}; train sources {task.n_train}; val {len(val.gts[next(iter(task.heads))])} images")

    yolo_note = ""
    use_yolo = not args.skip_yolo and import_ultralytics() is not None
    if not args.skip_yolo and not use_yolo:
        yolo_note = "ultralytics is not installed: YOLO11n rows skipped (pip install -e '.[bench]')"
        print(f"note: {yolo_note}")

    # ---------------------------------------------------------------- train each variant, same epochs and images
    variants: list[Variant] = []
    union = [c for cs in task.heads.values() for c in cs]

    def log(name: str) -> None:
        stamp(f"training {name} ...")

    log("hydradet")
    variants.append(Variant("hydradet", [train_hydra(hydra_config(task, task.heads, runs, "hydradet"), device)]))
    log("hydradet, random init")
    cfg = hydra_config(task, task.heads, runs, "hydradet_scratch", ("model.backbone_weights=null",))
    variants.append(Variant("hydradet, random init", [train_hydra(cfg, device)]))
    for name, overrides in map(parse_variant, args.variant):
        log(name)
        cfg = hydra_config(task, task.heads, runs, name.replace(" ", "_"), tuple(overrides))
        variants.append(Variant(name, [train_hydra(cfg, device)]))
    log("merged")
    variants.append(Variant("merged", [train_hydra(hydra_config(task, {"merged": union}, runs, "merged"), device)]))
    sep = []
    for h, classes in task.heads.items():
        log(f"separate: {h}")
        sep.append(train_hydra(hydra_config(task, {h: classes}, runs, f"separate_{h}"), device))
    variants.append(Variant("separate", sep))
    if use_yolo:
        log("YOLO11n merged")
        data = yolo_layout(task, args.out / "yolo_data" / "merged", list(task.heads), union)
        yolo = train_yolo(data, union, args.epochs, imgsz, runs, "yolo_merged", device)
        variants.append(Variant("YOLO11n merged", [yolo]))
        ysep = []
        for h, classes in task.heads.items():
            log(f"YOLO11n separate: {h}")
            data = yolo_layout(task, args.out / "yolo_data" / f"separate_{h}", [h], classes)
            ysep.append(train_yolo(data, classes, args.epochs, imgsz, runs, f"yolo_separate_{h}", device))
        variants.append(Variant("YOLO11n separate", ysep))

    # ---------------------------------------------------------------- score: one evaluator for every model
    stamp("scoring, FLOPs, latency ...")
    for v in variants:
        v.metrics = score(joined([t.predict for t in v.models]), val, task.cfg, device)

    # ---------------------------------------------------------------- cost and time: all tasks together
    cost = measure_cost(variants, val.batches[0].images[:1].to(device))
    first8 = torch.cat([b.images for b in val.batches])[:8]
    timed = [v for v in variants if v.name != "hydradet, random init"]  # the same network as hydradet
    latency = measure_latency(timed, first8, task.cfg.predict, args.rounds, devices)
    bound_after = {d: matmul_rate(d) for d in devices}

    # ---------------------------------------------------------------- report
    run = Run(args, m, data_name, task, variants, cost, latency, devices, bound_before, bound_after, yolo_note)
    write_tables(args.out, tables(run))
    write_json(args.out / "results.json", results(run))
    plots(args.out, run)
    print(f"\ntables: {args.out / 'tables.md'}; raw numbers: {args.out / 'results.json'}; plots: {args.out}/*.png")


if __name__ == "__main__":
    main()

"""Real photographs, partial labels: hydradet vs one merged head vs separate models, one equal budget.

The yardstick of every change to the model, the loss, the assignment, augmentation or a default. Built only from
../shared/data, seeded (benchmarks/_real_data.py): person sources persons-roboflow (YOLO) and pennfudan (VOC),
animal sources lions-roboflow (YOLO, Lion -> animal) and the animal labels of 70 % of coco-train (its persons
left unlabelled). Scored on the other 30 % of coco-train, fully labelled (`coco_val`: persons in animal photos,
the cross-source truth), and on each source's own val split (in domain).

  hydradet         heads person and animal; a sample supervises only the heads its source labels
  pseudo           hydradet with `train.pseudo` at its defaults (the run's EMA as teacher, from epoch 2)
  pseudo-file      hydradet with `train.pseudo.teacher` = the hydradet row's best weights, from the first step;
                   its minutes include the hydradet row's (the teacher's own training)
  --variant N:k=v  extra hydradet rows with config overrides on top of the recipe, held to the same targets
  merged           one head over {person, animal}: each source's missing labels count as background
  separate         a person-only model on the person sources and an animal-only model on the animal sources

Every row trains with default.yaml's recipe for the same epochs over the same images; each model's per-head conf is
the F1-optimal one on its own (in-domain) val data, as training stores it in the weights; recall is measured at
it. Latency: forward + NMS per image at batch 1 on ready letterboxed images, all tasks together, interleaved.

    .venv/bin/python benchmarks/real_partial.py            # every image (make bench-real)
    .venv/bin/python benchmarks/real_partial.py --quick    # seeded subsets, for iterating
    .venv/bin/python benchmarks/real_partial.py --quick --rows hydradet --variant "lr1e-3:train.lr=0.001"
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine, machine_line, markdown_table, parse_variant, stamp, time_interleaved, write_json
from _hydra import hydra_predictor
from _real_data import HEADS, HELD_OUT, build_task, restrict
from torch.utils.data import DataLoader

from hydradet.config import load_config
from hydradet.config.schema import Config
from hydradet.data.dataset import SourceDataset, collate, unletterbox
from hydradet.eval.coco_map import ImageBoxes, coco_map
from hydradet.model.detector import HydraDetector
from hydradet.model.weights import load_model
from hydradet.train.trainer import train

# The recipe every row trains with is default.yaml's (the benchmark measures the defaults); --variant rows add their
# overrides to it. Evaluation once, after the last epoch, so that training time stays comparable across rows.
RECIPE = ["eval.every=1000"]
METRIC_COLS = ("mAP50-95", "mAP50", "AP50_small", "AP50_medium", "AP50_large", "recall@conf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="seeded subsets of the bigger sources, fewer epochs")
    ap.add_argument("--epochs", type=int, default=None, help="default: 8, ~30 min for the hydradet row (quick: 6)")
    ap.add_argument(
        "--rows", default="hydradet,pseudo,pseudo-file,merged,separate", help="which of the standard rows to train"
    )
    ap.add_argument("--variant", action="append", default=[], help="extra hydradet row: NAME:key=value,...")
    ap.add_argument("--set", action="append", default=[], help="an override for every row (key=value)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=10, help="interleaved latency rounds")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/real_partial"))
    args = ap.parse_args()
    out = args.out.resolve()
    epochs = args.epochs or (6 if args.quick else 8)
    recipe = [*RECIPE, f"train.epochs={epochs}", f"train.seed={args.seed}", *args.set]
    m = machine()
    print(f"machine: {machine_line(m)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    task = build_task(out / "data", args.quick, args.seed)
    scoring = load_config(task, recipe)  # every source, the held-out val set included
    val_sets = read_val_sets(scoring)
    for name, (batches, gts) in val_sets.items():
        print(f"val {name}: {sum(len(b.indices) for b in batches)} images; boxes " + _boxes(gts))

    union = [c for cs in HEADS.values() for c in cs]
    plan: list[tuple[str, list[tuple[dict[str, list[str]], list[str]]]]] = []
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    if "hydradet" in rows or "pseudo-file" in rows:  # the file teacher is the hydradet row's model
        plan.append(("hydradet", [(HEADS, [])]))
    if "pseudo" in rows:
        plan.append(("pseudo", [(HEADS, ["train.pseudo.enabled=true"])]))
    if "pseudo-file" in rows:
        plan.append(("pseudo-file", [(HEADS, ["train.pseudo.enabled=true"])]))  # + the teacher, once trained
    for name, overrides in map(parse_variant, args.variant):
        plan.append((name, [(HEADS, overrides)]))
    if "merged" in rows:
        plan.append(("merged", [({"all": union}, [])]))
    if "separate" in rows:
        plan.append(("separate", [({h: c}, []) for h, c in HEADS.items()]))

    results: dict[str, dict] = {}
    models: dict[str, list[HydraDetector]] = {}
    run_dirs: dict[str, Path] = {}
    for name, parts in plan:
        trained, minutes, coco_pretrained = [], 0.0, False
        if name == "pseudo-file":
            teacher = run_dirs["hydradet_person_animal"] / "weights" / "best.safetensors"
            parts = [(h, [*ov, f"train.pseudo.teacher={teacher}"]) for h, ov in parts]
        for heads, overrides in parts:
            run_name = f"{name}_{'_'.join(heads)}".replace(" ", "_")
            stamp(f"training {name}: heads {list(heads)} {overrides or ''}")
            cfg = load_config(
                restrict(task, heads), [*recipe, *overrides, f"project={out / 'runs'}", f"name={run_name}"]
            )
            model, mins, run_dirs[run_name] = train_one(cfg, device)
            coco_pretrained |= _coco_pretrained(cfg)
            trained.append(model)
            minutes += mins
        models[name] = trained
        if name == "pseudo-file":  # the teacher's training is part of this row's cost
            minutes += results["hydradet"]["train_min"]
        overrides = [o for _, ov in parts for o in ov]
        results[name] = {"train_min": minutes, "overrides": overrides, "coco_pretrained": coco_pretrained, "scores": {}}
        for vname, (batches, gts) in val_sets.items():
            results[name]["scores"][vname] = score(trained, batches, gts, scoring, device)
        results[name]["conf"] = {h: m.calibrated_conf for m in trained for h in m.heads}
        stamp(f"{name}: {minutes:.1f} train min; " + _summary(results[name]["scores"]))
        write_json(out / "results.json", {"machine": m, "recipe": recipe, "quick": args.quick, "rows": results})

    stamp("latency ...")
    x1 = next(iter(val_sets.values()))[0][0].images[:1].to(device)
    calls = {n: (lambda ms=ms: [hydra_predictor(mm)(x1, 0.25, 0.5, 100) for mm in ms]) for n, ms in models.items()}
    for n, ms in time_interleaved(calls, args.rounds, device).items():
        results[n]["latency_ms"] = ms
    write_json(out / "results.json", {"machine": m, "recipe": recipe, "quick": args.quick, "rows": results})
    report = tables(results, recipe, args, m)
    print("\n" + report)
    (out / "tables.md").write_text(report + "\n")


def train_one(cfg: Config, device: torch.device) -> tuple[HydraDetector, float, Path]:
    """Train through the real trainer, as a user would; the last weights (evaluated once, so also the best)."""
    t0 = time.time()
    run = train(cfg, log=lambda _line: None)
    minutes = (time.time() - t0) / 60
    rows = list(csv.DictReader((run / "results.csv").open()))
    losses = {k: v for k, v in rows[-1].items() if k.startswith("loss/")}
    print(f"  {run}: {minutes:.1f} min, last losses {losses}")
    return load_model(run / "weights" / "best.safetensors").to(device), minutes, run


ValSet = tuple[list, dict[str, list[ImageBoxes]]]


def read_val_sets(cfg: Config) -> dict[str, ValSet]:
    """Every source's val split, letterboxed once and held in memory, with its ground truth per head it labels."""
    out = {}
    for s, src in cfg.sources.items():
        if src.val is None:
            continue
        ds = SourceDataset(cfg, s, "val", train=False)
        gts: dict[str, list[ImageBoxes]] = {h: [] for h in src.labels}
        batches = []
        for batch in DataLoader(ds, batch_size=16, collate_fn=collate):
            batches.append(batch)
            for i, size in zip(batch.indices, batch.orig_sizes, strict=True):
                for h, t in ds.head_targets(i, size).items():
                    gts[h].append(ImageBoxes.ground_truth(t))
        out[s] = (batches, gts)
    return out


def score(models: list[HydraDetector], batches: list, gts: dict, cfg: Config, device: torch.device) -> dict:
    """Per head of this val set: the models' detections of that head's classes (a merged model's split by class
    name) scored by coco_map; recall at IoU 0.5 of the detections above each model's calibrated conf."""
    conf = {
        c: m.calibrated_conf.get(h, cfg.predict.conf) for m in models for h in m.heads for c in m.head_cfgs[h].classes
    }
    preds: dict[str, list[ImageBoxes]] = {h: [] for h in gts}
    for batch in batches:
        per_model = [
            hydra_predictor(m)(batch.images.to(device), cfg.eval.conf, cfg.eval.iou, cfg.eval.max_det) for m in models
        ]
        for i, (scale, size) in enumerate(zip(batch.scales, batch.orig_sizes, strict=True)):
            boxes, scores, names = (np.concatenate(p) for p in zip(*(pm[i] for pm in per_model), strict=True))
            boxes = unletterbox(
                torch.from_numpy(np.ascontiguousarray(boxes)).float().reshape(-1, 4), scale, size
            ).numpy()
            for h in gts:
                classes = HEADS[h]
                keep = np.isin(names, classes)
                labels = np.array([classes.index(n) for n in names[keep]], dtype=np.int64)
                preds[h].append(ImageBoxes(boxes[keep], labels, scores[keep]))
    out = {}
    for h, classes in ((h, HEADS[h]) for h in gts):
        full = coco_map(gts[h], preds[h], classes)
        thr = conf.get(classes[0], cfg.predict.conf)
        above = [
            ImageBoxes(p.boxes[p.scores >= thr], p.labels[p.scores >= thr], p.scores[p.scores >= thr]) for p in preds[h]
        ]
        out[h] = {k: full[k] for k in METRIC_COLS if k in full}
        out[h]["recall@conf"] = coco_map(gts[h], above, classes)["recall50"]
        out[h]["conf"] = thr
    return out


def _coco_pretrained(cfg: Config) -> bool:
    """Whether the row's backbone weights were trained on COCO train2017 (the FastestDet file shipped in
    hydradet/weights/ is): then coco-train, so coco_val too, was in its pretraining set."""
    weights = cfg.model.backbone_weights
    return weights is not None and "coco" in Path(str(weights)).name.lower()


def tables(results: dict, recipe: list[str], args: argparse.Namespace, m: dict) -> str:
    lines = [
        f"Machine: {machine_line(m)}. {'Quick mode (seeded subsets). ' if args.quick else ''}Seed {args.seed}.",
        f"Recipe for every row: `{' '.join(recipe)}`.",
        "",
    ]
    for vname in next(iter(results.values()))["scores"]:
        heads = list(next(iter(results.values()))["scores"][vname])
        for h in heads:
            where = "cross-source: fully labelled, held out" if vname == HELD_OUT else "in domain"
            lines.append(f"**{h}** on `{vname}` ({where})\n")
            rows = [
                [n, *(r["scores"][vname][h].get(c, float("nan")) for c in METRIC_COLS), r["scores"][vname][h]["conf"]]
                for n, r in results.items()
            ]
            lines.append(markdown_table(["model", *METRIC_COLS, "conf"], rows) + "\n")
    cost = [
        [n, r["train_min"], r.get("latency_ms", float("nan")), " ".join(r["overrides"])] for n, r in results.items()
    ]
    lines.append(markdown_table(["model", "train min", "latency ms (batch 1, all heads)", "overrides"], cost))
    tainted = [n for n, r in results.items() if r.get("coco_pretrained")]
    if tainted:
        lines.append(
            f"\nRows {', '.join(tainted)}: the backbone was pretrained on COCO train2017, which holds the coco-train "
            "images, so coco_val's images were in its pretraining set: their coco_val scores are not held out."
        )
    return "\n".join(lines)


def _boxes(gts: dict[str, list[ImageBoxes]]) -> str:
    return ", ".join(f"{h} {sum(len(g.boxes) for g in v)}" for h, v in gts.items())


def _summary(scores: dict) -> str:
    return "; ".join(f"{v}/{h} mAP50 {s['mAP50']:.3f}" for v, hs in scores.items() for h, s in hs.items())


if __name__ == "__main__":
    main()

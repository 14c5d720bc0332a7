"""`hydradet train|val|predict|synth`: thin wrappers; the work is in the stage packages."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hydradet.config.load import load_config
from hydradet.errors import ConfigError, UserError

# Errors that mean "your input is wrong": reported as one clear message and exit code 2, never a traceback.
_USER_ERRORS = (UserError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hydradet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a config")
    p.add_argument("config", type=Path)
    p.add_argument("overrides", nargs="*", help="key=value, e.g. train.epochs=3")

    p = sub.add_parser("val", help="per-head mAP of a weights file on the config's val data")
    p.add_argument("config", type=Path)
    p.add_argument("weights", type=Path)
    p.add_argument("overrides", nargs="*")

    p = sub.add_parser("predict", help="detect on images or folders; writes pictures and predictions.json")
    p.add_argument("weights", type=Path)
    p.add_argument("inputs", nargs="+", help="images or folders")
    p.add_argument("--conf", type=float, default=None, help="score threshold (default: predict.conf)")
    p.add_argument("--iou", type=float, default=None, help="NMS IoU (default: predict.iou)")
    p.add_argument("--max-det", type=int, default=None, help="detections per image and head (predict.max_det)")
    p.add_argument("--heads", default=None, help="comma-separated heads to run (default: all)")
    p.add_argument("--imgsz", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/predict, runs/predict2, ...)")

    p = sub.add_parser("synth", help="write the synthetic two-source world (COCO persons, YOLO animals)")
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-images", type=int, default=None, help="train images per source")
    p.add_argument("--val-images", type=int, default=None)

    args = parser.parse_args(argv)
    try:
        return {"train": _train, "val": _val, "predict": _predict, "synth": _synth}[args.command](args)
    except _USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _train(args: argparse.Namespace) -> int:
    from hydradet.train.trainer import train

    cfg = load_config(args.config, args.overrides)
    train(cfg)
    return 0


def _val(args: argparse.Namespace) -> int:
    from hydradet.data.dataset import SourceDataset
    from hydradet.eval.evaluate import evaluate, format_table
    from hydradet.model.weights import load_model
    from hydradet.train.trainer import device_from

    model = load_model(args.weights)
    # Evaluate at the size the model was trained at, unless the command line says otherwise.
    cfg = load_config(args.config, [f"model.imgsz={model.model_cfg.imgsz}", *args.overrides])
    for head, head_cfg in model.head_cfgs.items():
        if head in cfg.heads and cfg.heads[head].classes != head_cfg.classes:
            raise ConfigError(
                f"heads.{head}.classes: the config says {cfg.heads[head].classes} but {args.weights} was trained "
                f"with {head_cfg.classes}; class ids would not match"
            )
    device = device_from(cfg.train.device)
    model.to(device)
    val_sets = [SourceDataset(cfg, s, "val", train=False) for s, src in cfg.sources.items() if src.val]
    if not val_sets:
        raise ConfigError(f"{args.config}: no source has a `val` split to evaluate on")
    print(format_table(evaluate(model, cfg, val_sets, device)))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hydradet.config.load import defaults
    from hydradet.infer.draw import save_drawing
    from hydradet.infer.predict import Predictor, list_images
    from hydradet.model.weights import load_model

    model = load_model(args.weights)
    heads = args.heads.split(",") if args.heads else None
    dflt = defaults()["predict"]  # the one place defaults live
    conf = dflt["conf"] if args.conf is None else args.conf
    iou = dflt["iou"] if args.iou is None else args.iou
    max_det = dflt["max_det"] if args.max_det is None else args.max_det
    if not (0 <= conf <= 1 and 0 < iou <= 1 and max_det >= 1 and (args.imgsz or 32) >= 32):
        raise ConfigError("--conf must be in [0, 1], --iou in (0, 1], --max-det >= 1, --imgsz >= 32")
    try:
        predictor = Predictor(model, heads, conf=conf, iou=iou, max_det=max_det, imgsz=args.imgsz)
    except ValueError as e:
        raise ConfigError(f"--heads: {e}") from None
    from hydradet.train.trainer import new_run_dir

    paths = list_images(args.inputs)
    out = args.out or new_run_dir(Path("runs/predict"))
    out.mkdir(parents=True, exist_ok=True)
    records, counts = [], {h: 0 for h in predictor.heads}
    for result in tqdm(predictor(paths), total=len(paths), desc="predict"):
        save_drawing(result, list(model.heads), out)
        records.append(result.to_json())
        for h, r in result.heads.items():
            counts[h] += len(r.scores)
    (out / "predictions.json").write_text(json.dumps(records, indent=1))
    summary = ", ".join(f"{h}: {n}" for h, n in counts.items())
    print(f"{len(paths)} images; detections per head: {summary}")
    print(f"pictures and predictions.json in {out}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from hydradet.data.synth import SynthSpec, write_synthetic_world

    spec = SynthSpec(seed=args.seed)
    if args.train_images is not None:
        spec = replace(spec, train_images_per_source=args.train_images)
    if args.val_images is not None:
        spec = replace(spec, val_images=args.val_images)
    world = write_synthetic_world(args.out, spec)
    print(f"synthetic world in {world.root}; train with: hydradet train {world.config_yaml}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`hydradet train|val|predict|synth|data check|split`: thin wrappers; the work is in the stage packages."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hydradet.config.load import load_config
from hydradet.errors import ConfigError, Interrupted, UserError

# Errors that mean "your input is wrong": reported as one clear message and exit code 2, never a traceback.
_USER_ERRORS = (UserError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hydradet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a config, or continue a stopped run (--resume)")
    p.add_argument("config", type=Path, nargs="?", help="the run's YAML (leave out with --resume)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. train.epochs=3")
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN",
        help="continue runs/NAME from its checkpoint at the next batch, with its own config (train.resume)",
    )

    p = sub.add_parser("val", help="per-head mAP of a weights file on the config's val data")
    p.add_argument("config", type=Path)
    p.add_argument("weights", type=Path)
    p.add_argument("overrides", nargs="*")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the pictures (PR, F1 curves, confusion matrices, val batches; none with train.plots=false); "
        "default: PROJECT/val, PROJECT/val2, ...",
    )

    p = sub.add_parser("predict", help="detect on images, folders, globs and videos; pictures, videos and JSON out")
    p.add_argument("weights", type=Path, help=".safetensors from train; .onnx or an OpenVINO folder from export")
    p.add_argument("inputs", nargs="+", help="images, folders, globs (quoted) or video files")
    p.add_argument(
        "--conf",
        default=None,
        help="score threshold: 0.3 or per head person=0.4,animal=0.3 "
        "(default: each head's calibrated conf in the weights, else predict.conf)",
    )
    _add_nms_options(p, "image")
    p.add_argument("--heads", default=None, help="comma-separated heads to run (default: all); others do not run")
    p.add_argument("--imgsz", type=int, default=None, help="default: the model's")
    p.add_argument("--batch", type=int, default=8, help="images per forward pass")
    p.add_argument("--device", default="cpu", help="cpu or cuda (an OpenVINO export: cpu, or gpu for Intel)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/predict, runs/predict2, ...)")

    p = sub.add_parser("export", help="export weights to ONNX or OpenVINO: per head boxes, scores, class ids")
    p.add_argument("weights", type=Path)
    p.add_argument(
        "--format", default="onnx", choices=["onnx", "openvino"], help="openvino: a folder with .xml/.bin (IR)"
    )
    p.add_argument("--heads", default=None, help="comma-separated heads to export (default: all)")
    p.add_argument("--imgsz", type=int, default=None, help="input size, fixed in the file (default: the model's)")
    p.add_argument("--dynamic-batch", action="store_true", help="a dynamic batch axis (default: batch 1)")
    p.add_argument("--raw", action="store_true", help="per head decoded boxes and scores before NMS")
    p.add_argument("--conf", default=None, help="NMS score threshold baked in: 0.25 or person=0.4,animal=0.3")
    _add_nms_options(p, "image", where="baked into the file")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument(
        "--out", type=Path, default=None, help="default: the weights path with .onnx, or WEIGHTS_openvino_model/"
    )

    p = sub.add_parser("track", help="track each detect head's objects across video frames (ByteTrack); ids, counts")
    p.add_argument("weights", type=Path, help=".safetensors from train, or an export")
    p.add_argument("inputs", nargs="+", help="video files, folders or globs (quoted) of videos")
    p.add_argument("--conf", default=None, help="a head's threshold to start a track: 0.4 or person=0.4,animal=0.3")
    _add_nms_options(p, "frame")
    p.add_argument("--heads", default=None, help="comma-separated heads to run (default: all)")
    p.add_argument("--imgsz", type=int, default=None, help="default: the model's")
    p.add_argument("--batch", type=int, default=8, help="frames per forward pass")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/track, runs/track2, ...)")

    p = sub.add_parser("synth", help="write the synthetic two-source world (COCO persons, YOLO animals)")
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--attributes",
        action="store_true",
        help="instead: an image-level set in UTKFace's layout (images + train/val CSVs: age, gender, race)",
    )
    p.add_argument("--train-images", type=int, default=None, help="train images per source")
    p.add_argument("--val-images", type=int, default=None)

    p = sub.add_parser("data", help="look at a config's data before training")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("check", help="per source and split: images, boxes per class and head, every problem")
    p.add_argument("config", type=Path)
    p.add_argument("overrides", nargs="*", help="key=value")
    p.add_argument(
        "--out", type=Path, default=None, help="report folder (default: PROJECT/data_check, PROJECT/data_check2, ...)"
    )
    p.add_argument("--decode", action="store_true", help="also decode every image (slow; the scan reads headers)")

    p = sub.add_parser("split", help="a fully labelled COCO set -> disjoint train parts, one head's labels each")
    p.add_argument("coco_json", type=Path)
    p.add_argument("--head", action="append", required=True, help="NAME=CLASS[,CLASS...]; give one per head")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.2, help="images held out as the fully labelled val")
    p.add_argument("--val", type=Path, default=None, help="an existing COCO val JSON to use instead")
    p.add_argument("--images", type=Path, default=None, help="the folder `file_name` is relative to")

    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # train.devices relaunches the same command
    commands = {"train": _train, "val": _val, "predict": _predict, "track": _track, "export": _export}
    commands |= {"synth": _synth}
    commands |= {"data": _data, "split": _split}
    try:
        return commands[args.command](args)
    except Interrupted as e:  # SIGINT / SIGTERM in training: its checkpoint is written (train/interrupt.py)
        print(str(e), file=sys.stderr)
        return e.exit_code
    except _USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training started: stopped at once
        print(f"\n{args.command}: stopped at once (KeyboardInterrupt); nothing more was written", file=sys.stderr)
        return 130


def _add_nms_options(p: argparse.ArgumentParser, unit: str, where: str = "") -> None:
    """--iou, --max-det, --agnostic: the per-head NMS settings predict, track and export share (predict.* in
    default.yaml). where: how the help says the value is used, e.g. "baked into the file" (default: predict.KEY)."""

    def said(key: str) -> str:
        return f"({where or 'predict.' + key})"

    p.add_argument("--iou", default=None, help=f"NMS IoU: 0.5 or per head person=0.6,animal=0.5 {said('iou')}")
    p.add_argument("--max-det", type=int, default=None, help=f"detections per {unit} and head {said('max_det')}")
    p.add_argument(
        "--agnostic",
        nargs="?",
        const="true",
        default=None,
        help="class-agnostic NMS within a head (one box per object when its classes compete): alone for every "
        f"head, or person=true,animal=false {said('agnostic')}",
    )


def _train(args: argparse.Namespace) -> int:
    from hydradet.train.resume import resume_config
    from hydradet.train.trainer import train

    if args.resume is not None:
        # argparse reads a first key=value as the config; with --resume every positional is an override
        overrides = [str(args.config), *args.overrides] if args.config is not None else args.overrides
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"train --resume takes the run's own config; {bad[0]} is not a key=value override")
        cfg = resume_config(args.resume, overrides=overrides)
    elif args.config is None:
        raise ConfigError("train: give a config file (hydradet train CONFIG) or a run to continue (--resume RUN)")
    else:
        cfg = load_config(args.config, args.overrides)
        if cfg.train.resume is not None:
            cfg = resume_config(cfg.train.resume, requested=cfg)
    if cfg.train.devices > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_torchrun(cfg.train.devices, args.argv)
    train(cfg)
    return 0


def _launch_torchrun(devices: int, argv: list[str]) -> int:
    """`train.devices=N`: the same command under torchrun, N processes on this machine (one per GPU on CUDA)."""
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}"]
    cmd += ["-m", "hydradet", *argv]
    print(f"launching {devices} processes: {' '.join(cmd[1:])}", flush=True)
    return subprocess.run(cmd, check=False).returncode


def _val(args: argparse.Namespace) -> int:
    from hydradet.data.dataset import split_datasets
    from hydradet.eval.evaluate import EvalDetails, evaluate, format_table
    from hydradet.eval.run_log import eval_pictures
    from hydradet.eval.val import plan_val
    from hydradet.model.weights import load_model
    from hydradet.train.trainer import device_from, new_run_dir

    model = load_model(args.weights)
    # Evaluate at the size the model was trained at, unless the command line says otherwise. evaluate_only: a
    # config whose sources have only `val` splits is fine here.
    overrides = [f"model.imgsz={model.model_cfg.imgsz}", *args.overrides]
    cfg = load_config(args.config, overrides, evaluate_only=True)
    # The heads both name (same task and classes) with val data; each other head is named with the reason.
    plan = plan_val(cfg, model, args.weights)
    for line in plan.left_out:
        print(f"val: {line}")
    device = device_from(cfg.train.device)
    model.to(device)
    details = EvalDetails() if cfg.train.plots else None
    metrics = evaluate(model, plan.cfg, split_datasets(plan.cfg, "val"), device, details)
    print(format_table(metrics))
    if details is not None:
        # The same evaluation pictures as a training run's, at each head's F1-optimal conf on this data.
        out = args.out or new_run_dir(cfg.project / "val")
        conf = {h: float(m.get("f1_conf", float("nan"))) for h, m in metrics.items()}
        eval_pictures(details, plan.cfg.heads, conf, out, order=list(model.heads))
        print(f"pictures in {out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from hydradet.infer.model import load
    from hydradet.infer.run import predict_to_folder
    from hydradet.train.trainer import new_run_dir

    model = load(args.weights, args.device)
    out = args.out or new_run_dir(Path("runs/predict"))
    summary, _files = predict_to_folder(model, args.inputs, out, **_predict_options(args))
    print(summary.table())
    print(f"results in {out}")
    return 0


def _track(args: argparse.Namespace) -> int:
    from hydradet.infer.model import load
    from hydradet.infer.run import track_to_folder
    from hydradet.train.trainer import new_run_dir

    model = load(args.weights, args.device)
    out = args.out or new_run_dir(Path("runs/track"))
    summary, _files = track_to_folder(model, args.inputs, out, **_predict_options(args))
    print(summary.table())
    print(f"results in {out}")
    return 0


def _predict_options(args: argparse.Namespace) -> dict:
    """predict's and track's keyword arguments from their shared flags."""
    from hydradet.infer.settings import parse_per_head, parse_per_head_flag

    options = {"heads": args.heads, "conf": parse_per_head(args.conf), "iou": parse_per_head(args.iou)}
    options |= {"max_det": args.max_det, "imgsz": args.imgsz, "batch": args.batch}
    return options | {"agnostic": parse_per_head_flag(args.agnostic)}


def _export(args: argparse.Namespace) -> int:
    from hydradet.export import export_onnx
    from hydradet.export.openvino import default_folder, export_openvino
    from hydradet.infer.settings import parse_per_head, parse_per_head_flag
    from hydradet.model.weights import load_model

    model = load_model(args.weights)
    options = {"heads": args.heads, "imgsz": args.imgsz, "dynamic_batch": args.dynamic_batch, "raw": args.raw}
    options |= {"conf": parse_per_head(args.conf), "iou": parse_per_head(args.iou), "max_det": args.max_det}
    options |= {"agnostic": parse_per_head_flag(args.agnostic)}
    if args.format == "openvino":
        path = export_openvino(model, args.out or default_folder(args.weights), opset=args.opset, **options)
        bin_file = path.with_suffix(".bin")
        what = f"{path.name} + {bin_file.name}, {bin_file.stat().st_size / 1e6:.1f} MB, OpenVINO IR of ONNX opset"
        print(f"{path.parent} ({what} {args.opset}); outputs per head: ", end="")
    else:
        path = export_onnx(model, args.out or args.weights.with_suffix(".onnx"), opset=args.opset, **options)
        print(f"{path} ({path.stat().st_size / 1e6:.1f} MB, opset {args.opset}); outputs per head: ", end="")
    print("boxes, scores (raw, before NMS)" if args.raw else "boxes, scores, class_ids (after NMS, padded)")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from hydradet.synth.world import SynthSpec, write_synthetic_world

    if args.attributes:
        return _synth_attributes(args)
    spec = SynthSpec(seed=args.seed)
    if args.train_images is not None:
        spec = replace(spec, train_images_per_source=args.train_images)
    if args.val_images is not None:
        spec = replace(spec, val_images=args.val_images)
    world = write_synthetic_world(args.out, spec)
    print(f"synthetic world in {world.root}; train with: hydradet train {world.config_yaml}")
    return 0


def _synth_attributes(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from hydradet.synth.attributes import AttributeSpec, write_attribute_set

    spec = AttributeSpec(seed=args.seed)
    if args.train_images is not None:
        spec = replace(spec, train_images=args.train_images)
    if args.val_images is not None:
        spec = replace(spec, val_images=args.val_images)
    out = write_attribute_set(args.out, spec)
    print(f"{spec.train_images} + {spec.val_images} images in {out.images}; labels in {out.train_csv}, {out.val_csv}")
    print(
        "train with: hydradet train examples/hydranet_faces.yaml "
        f"sources.faces.train={out.train_csv.resolve()} sources.faces.val={out.val_csv.resolve()}"
    )
    return 0


def _data(args: argparse.Namespace) -> int:
    from hydradet.data.check import check_data, write_report
    from hydradet.model.weights_check import read_metadata
    from hydradet.train.run_folder import new_run_dir

    cfg = load_config(args.config, args.overrides)
    init_heads = read_metadata(cfg.model.init)["heads"] if cfg.model.init else {}
    check = check_data(cfg, decode=args.decode, init_heads=init_heads)
    # A sequence of its own (PROJECT/data_check, data_check2, ...): a check never takes the next training's name.
    out = args.out or new_run_dir(cfg.project / "data_check")
    files = write_report(check, out, title=str(args.config))
    print(check.text())
    print(f"report and pictures in {out}: {', '.join(f.name for f in files)}")
    return 0 if check.ok else 2


def _split(args: argparse.Namespace) -> int:
    from hydradet.data.split import parse_head_spec, split_coco

    heads = dict(parse_head_spec(h) for h in args.head)
    if len(heads) != len(args.head):
        raise ConfigError("--head: each head name may be given once")
    result = split_coco(args.coco_json, heads, args.out, args.seed, args.val_fraction, args.val, args.images)
    for line in result.summary:
        print(line)
    print(f"train with: hydradet train {result.config_yaml}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

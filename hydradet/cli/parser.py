"""The command line's shape: every command, its arguments and their help (`hydradet COMMAND --help`)."""

from __future__ import annotations

import argparse
from importlib.metadata import version
from pathlib import Path

from hydradet.config.load import DEFAULT_YAML, SHORTCUTS, defaults

DESCRIPTION = "hydradet train|val|predict|track|export|synth|data check|split: one detector, a head per label space."
# The keys a first run is most likely to change, shown by `hydradet train --help` with their defaults.
COMMON_KEYS = (
    "train.epochs",
    "train.batch",
    "model.imgsz",
    "model.backbone",
    "model.init",
    "train.lr",
    "train.device",
    "train.workers",
    "train.amp",
    "train.save_period",
    "train.sampling.mode",
    "augment.mosaic",
    "eval.every",
    "project",
    "name",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hydradet", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"hydradet {version('hydradet')}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train",
        help="train a model from a config, or continue a stopped run (--resume)",
        description="Train a model from a config (data=CONFIG works too), or continue a stopped run (--resume).",
        epilog=common_keys_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", type=Path, nargs="?", help="the run's YAML (leave out with --resume)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. train.epochs=3")
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN",
        help="continue runs/NAME from its checkpoint at the next batch, with its own config (train.resume)",
    )

    p = sub.add_parser(
        "val",
        help="per-head mAP of a weights file on the config's val data",
        description="hydradet val [CONFIG] WEIGHTS [key=value ...]: without CONFIG (or data=CONFIG), the config "
        "the weights were trained with, if it is still there.",
    )
    p.add_argument("args", nargs="+", metavar="[CONFIG] WEIGHTS [key=value ...]")
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
    add_nms_options(p, "image")
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
    add_nms_options(p, "image", where="baked into the file")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument(
        "--out", type=Path, default=None, help="default: the weights path with .onnx, or WEIGHTS_openvino_model/"
    )

    p = sub.add_parser("track", help="track each detect head's objects across video frames (ByteTrack); ids, counts")
    p.add_argument("weights", type=Path, help=".safetensors from train, or an export")
    p.add_argument("inputs", nargs="+", help="video files, folders or globs (quoted) of videos")
    p.add_argument("--conf", default=None, help="a head's threshold to start a track: 0.4 or person=0.4,animal=0.3")
    add_nms_options(p, "frame")
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
    return parser


def add_nms_options(p: argparse.ArgumentParser, unit: str, where: str = "") -> None:
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


def common_keys_help() -> str:
    """The epilog of `train --help`: common keys with their defaults, the shortcuts, and where every key is."""
    flat = _flat(defaults())
    width = max(map(len, COMMON_KEYS)) + 2
    lines = ["common keys (key=value after the config; default in brackets):"]
    lines += [f"  {k:<{width}}[{_shown(flat.get(k))}]" for k in COMMON_KEYS]
    lines.append("shortcuts as in Ultralytics: " + ", ".join(f"{a}= ({k})" for a, k in SHORTCUTS.items()))
    lines.append(f"every key, documented: {DEFAULT_YAML}")
    lines.append("example: hydradet train my.yaml epochs=50 imgsz=640 train.device=cuda")
    return "\n".join(lines)


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _shown(value: object) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)

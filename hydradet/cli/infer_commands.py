"""The commands that use a trained model: predict, track, export."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def predict_command(args: argparse.Namespace) -> int:
    from hydradet.infer.model import load
    from hydradet.infer.run import predict_to_folder
    from hydradet.train.run_folder import new_run_dir

    model = load(args.weights, args.device)
    out = args.out or new_run_dir(Path("runs/predict"))
    summary, _files = predict_to_folder(model, args.inputs, out, **predict_options(args))
    print(summary.table())
    if summary.skipped and not summary.frames:  # a run that could do nothing says so, with a failing exit code
        print(f"error: none of the inputs is a readable image or video: nothing predicted in {out}", file=sys.stderr)
        return 2
    print(f"results in {out}")
    return 0


def track_command(args: argparse.Namespace) -> int:
    from hydradet.infer.model import load
    from hydradet.infer.run import track_to_folder
    from hydradet.train.run_folder import new_run_dir

    model = load(args.weights, args.device)
    out = args.out or new_run_dir(Path("runs/track"))
    summary, _files = track_to_folder(model, args.inputs, out, **predict_options(args))
    print(summary.table())
    print(f"results in {out}")
    return 0


def predict_options(args: argparse.Namespace) -> dict:
    """predict's and track's keyword arguments from their shared flags."""
    from hydradet.infer.settings import parse_per_head, parse_per_head_flag

    options = {"heads": args.heads, "conf": parse_per_head(args.conf), "iou": parse_per_head(args.iou)}
    options |= {"max_det": args.max_det, "imgsz": args.imgsz, "batch": args.batch}
    return options | {"agnostic": parse_per_head_flag(args.agnostic)}


def export_command(args: argparse.Namespace) -> int:
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

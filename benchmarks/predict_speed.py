"""Predict latency per image: PyTorch vs onnxruntime vs OpenVINO, batch 1 vs 8, one head vs all heads, side by side.

The demo's model (shufflenet_v2_x0_5_megvii, imgsz 256, heads person + animal; random init unless --weights)
on letterboxed real images (../shared/data/coco-train, else random pixels). Timed: the backend's forward and
NMS for a ready batch (what `predict` spends besides decoding files), median of interleaved rounds so that
load on a shared machine hits every variant alike. Also the whole `model.predict` on in-memory images.
All backends use torch's thread count (OMP_NUM_THREADS, else the cores). OpenVINO (when installed: the
`openvino` extra): the same ONNX file converted by `hydradet export --format openvino`, f32 on the CPU.
When `ultralytics` is installed (an optional benchmark extra, never a dependency), YOLO11n built from its yaml
(random init, nothing downloaded) is timed in the same rounds on the same batches: forward + its NMS.

    .venv/bin/python benchmarks/predict_speed.py [--weights best.safetensors] [--rounds 30]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import torch
from _common import COCO_IMAGES, n_params, sample_images, time_interleaved, yolo11n_net, yolo_detect

from hydradet.config import load_config
from hydradet.data.dataset import letterbox
from hydradet.export import export_onnx
from hydradet.export.openvino import export_openvino
from hydradet.infer.model import Model
from hydradet.infer.onnx_backend import OnnxBackend
from hydradet.infer.predict import TorchBackend
from hydradet.model.detector import HydraDetector
from hydradet.model.weights import load_model

DEMO = {
    "heads": {
        "person": {"task": "detect", "classes": ["person"]},
        "animal": {"task": "detect", "classes": ["dog", "bird", "giraffe"]},
    },
    "sources": {"s": {"format": "coco", "train": "unused.json", "labels": {"person": {"person": "person"}}}},
}


def demo_model(weights: Path | None) -> HydraDetector:
    if weights is not None:
        return load_model(weights)
    cfg = load_config(DEMO, ["model.backbone=shufflenet_v2_x0_5_megvii", "model.imgsz=256"], check_paths=False)
    torch.manual_seed(0)
    return HydraDetector(cfg.model, cfg.heads).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=None, help="a trained .safetensors (default: random init)")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()

    net = demo_model(args.weights)
    heads_all = list(net.heads)
    pictures = sample_images(8)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(net, Path(tmp) / "demo.onnx", dynamic_batch=True)
        backends = {"PyTorch": TorchBackend(net), "onnxruntime": OnnxBackend(onnx_path)}
        if importlib.util.find_spec("openvino") is not None:
            from hydradet.infer.openvino_backend import OpenVinoBackend

            xml = export_openvino(net, Path(tmp) / "demo_openvino_model", dynamic_batch=True)
            backends["OpenVINO"] = OpenVinoBackend(xml)
        models = {name: Model(b) for name, b in backends.items()}
        batches = {
            n: torch.stack([letterbox(torch.from_numpy(a).permute(2, 0, 1), 256)[0] for a in pictures[:n]]) / 255
            for n in (1, 8)
        }
        runs: dict[tuple[str, int, str], Callable[[], object]] = {}
        for name, model in models.items():
            for n, x in batches.items():
                for label, heads in (("all", heads_all), ("person", ["person"])):
                    settings, _ = model.settings(heads=heads)
                    runs[(name, n, label)] = lambda b=backends[name], x=x, s=settings: b.detect(x, s)
            runs[(name, 8, "all, end to end")] = lambda m=model: m.predict(pictures, batch=8)
        yolo = _yolo11n()
        if yolo is not None:
            for n, x in batches.items():
                runs[("YOLO11n", n, "all")] = lambda x=x: yolo(x)
        ms = time_interleaved(runs, args.rounds)

    load = "/".join(f"{v:.1f}" for v in os.getloadavg())
    threads = f"{torch.get_num_threads()} threads of {os.cpu_count()} cores"
    openvino = importlib.import_module("openvino").__version__ if "OpenVINO" in backends else "not installed"
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, OpenVINO {openvino}, {threads}, load {load}")
    print(f"weights: {args.weights or 'random init'}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print(f"images: {'8 COCO train images' if COCO_IMAGES.is_dir() else 'random pixels'}, letterboxed to 256\n")
    names = list(backends)
    ratios = ["PyTorch / onnxruntime"] + (["onnxruntime / OpenVINO"] if "OpenVINO" in backends else [])
    print("| batch | heads | " + " | ".join(f"{b} ms/img" for b in names) + " | " + " | ".join(ratios) + " |")
    print("|---" * (2 + len(names) + len(ratios)) + "|")
    for n, label in [(1, "all"), (1, "person"), (8, "all"), (8, "person"), (8, "all, end to end")]:
        t = {b: ms[(b, n, label)] / n for b in names}
        cells = [f"{t[b]:.2f}" for b in names] + [f"{t['PyTorch'] / t['onnxruntime']:.2f}x"]
        if "OpenVINO" in t:
            cells.append(f"{t['onnxruntime'] / t['OpenVINO']:.2f}x")
        print(f"| {n} | {label} | " + " | ".join(cells) + " |")
    if yolo is not None:
        params = sum(p.numel() for p in net.parameters()) / 1e6
        print(f"\nYOLO11n (80 classes, one head; ultralytics, PyTorch) vs hydradet ({params:.2f} M params, 2 heads):")
        print(f"YOLO11n params: {yolo.params / 1e6:.2f} M\n")
        print("| batch | YOLO11n ms/img | hydradet PyTorch ms/img | hydradet onnxruntime ms/img | YOLO11n / hydradet |")
        print("|---|---|---|---|---|")
        for n in (1, 8):
            y, pt, ox = (ms[(k, n, "all")] / n for k in ("YOLO11n", "PyTorch", "onnxruntime"))
            print(f"| {n} | {y:.2f} | {pt:.2f} | {ox:.2f} | {y / pt:.2f}x |")
    print("\n| backend | batch | person only / all heads |")
    print("|---|---|---|")
    for name in backends:
        for n in (1, 8):
            print(f"| {name} | {n} | {ms[(name, n, 'person')] / ms[(name, n, 'all')]:.2f} |")


def _yolo11n() -> Callable[[torch.Tensor], object] | None:
    """YOLO11n's network from its yaml and its NMS, or None without ultralytics."""
    net = yolo11n_net()
    if net is None:
        return None

    def run(x: torch.Tensor) -> object:
        return yolo_detect(net, x, conf=0.25, iou=0.5, max_det=100)

    run.params = n_params(net)  # type: ignore[attr-defined]
    return run


if __name__ == "__main__":
    main()

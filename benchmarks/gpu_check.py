"""The GPU check: one command for anyone with one NVIDIA GPU (under 8 minutes), printing tables for BENCHMARKS.md.

1. The rule on CUDA under mixed precision: steps on the animal source leave the person head, its optimizer state
   and its EMA copy bit-identical, in fp32, bf16 and fp16 (GradScaler); an fp16 overflow changes nothing.
2. A short real training on CUDA (`train()`, the default recipe, train.amp=auto) on the real-photo benchmark's
   persons + lions sources (../shared/data), with its time and per-head mAP50.
3. Training throughput: images/s and peak memory for fp32 / bf16 / fp16 at imgsz 640, at the largest batch
   (powers of two up to 128) that fits, measured on in-memory batches (no loader).
4. Predict latency at batch 1: PyTorch (fp32), and ONNX Runtime with its CUDA provider when installed.

    .venv/bin/python benchmarks/gpu_check.py                 # on a machine with a GPU
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick   # a smoke test of the script itself
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_batch, snapshot, tiny_config, tiny_model

from hydradet.config import load_config
from hydradet.model.detector import HydraDetector
from hydradet.train.ema import ModelEMA
from hydradet.train.optim import build_optimizer
from hydradet.train.precision import Precision, precision_for
from hydradet.train.step import NonFiniteStep, train_step

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def rule_under_amp(device: torch.device) -> list[str]:
    rows = []
    for amp in ("off", "bf16", "fp16"):
        if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            rows.append(f"| {amp} | not supported by this GPU | |")
            continue
        cfg = tiny_config()
        model = tiny_model(cfg).to(device)
        precision = precision_for(amp, device)
        opt, sh, ema = build_optimizer(model, cfg.train), cfg.source_heads(), ModelEMA(model, 0.9, 1.0)
        ema.update(
            model,
            train_step(
                model, opt, _on(make_batch(cfg, ["persons", "animals"] * 2, 1), device), sh, 1.0, precision=precision
            ),
        )
        before, ema_before = snapshot(model.heads["person"]), snapshot(ema.ema.heads["person"])
        state = [{k: v.clone() for k, v in opt.state[p].items()} for p in model.heads["person"].parameters()]
        for k in range(3):
            losses = train_step(
                model, opt, _on(make_batch(cfg, ["animals"] * 4, 10 + k), device), sh, 1.0, precision=precision
            )
            ema.update(model, losses)
        same = all(torch.equal(before[k], v) for k, v in snapshot(model.heads["person"]).items())
        same &= all(torch.equal(ema_before[k], v) for k, v in snapshot(ema.ema.heads["person"]).items())
        same &= all(
            all(torch.equal(s[k], opt.state[p][k]) for k in s)
            for s, p in zip(state, model.heads["person"].parameters(), strict=True)
        )
        overflow = "n/a"
        if precision.scaler is not None:
            snap = snapshot(model)
            precision.scaler.update(new_scale=1e38)
            try:
                train_step(
                    model,
                    opt,
                    _on(make_batch(cfg, ["persons", "animals"] * 2, 3), device),
                    sh,
                    1.0,
                    precision=precision,
                )
                overflow = "NOT SKIPPED"
            except NonFiniteStep:
                moved = [k for k, v in snapshot(model).items() if "running" not in k and not torch.equal(snap[k], v)]
                overflow = "skipped, nothing changed" if not moved else f"skipped but {len(moved)} tensors moved"
        rows.append(f"| {amp} | {'bit-identical' if same else 'CHANGED'} | {overflow} |")
    return ["| precision | person head after animal steps | fp16 overflow step |", "|---|---|---|", *rows]


def real_training(device: torch.device, quick: bool) -> list[str]:
    from hydradet.train.trainer import train

    if not (SHARED / "persons-roboflow").is_dir():
        return [f"(no {SHARED}: real training skipped)"]
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "heads": {
                "person": {"task": "detect", "classes": ["person"]},
                "animal": {"task": "detect", "classes": ["animal"]},
            },
            "sources": {
                "persons": {
                    "format": "yolo",
                    "train": str(SHARED / "persons-roboflow" / "data.yaml"),
                    "val": str(SHARED / "persons-roboflow" / "data.yaml"),
                    "labels": {"person": {"person": "person"}},
                },
                "lions": {
                    "format": "yolo",
                    "train": str(SHARED / "lions-roboflow" / "data.yaml"),
                    "val": str(SHARED / "lions-roboflow" / "data.yaml"),
                    "labels": {"animal": {"Lion": "animal"}},
                },
            },
        }
        epochs = 1 if quick else 5
        overrides = [
            f"train.epochs={epochs}",
            f"train.device={device.type}",
            f"project={tmp}",
            "name=gpu",
            "train.workers=4",
        ]
        if quick:
            overrides += ["train.steps_per_epoch=2", "model.imgsz=128"]
        try:
            cfg = load_config(config, overrides)
        except Exception as e:  # the shared data's layout may differ on another machine
            return [f"(real training skipped: {e})"]
        t0 = time.time()
        run = train(cfg, log=lambda _: None)
        minutes = (time.time() - t0) / 60
        rows = (run / "results.csv").read_text().splitlines()
        last = dict(zip(rows[0].split(","), rows[-1].split(","), strict=False))
        maps = ", ".join(f"{h} mAP50 {last.get(f'{h}/mAP50', '?')}" for h in ("person", "animal"))
        return [f"real training on {device}: {epochs} epochs in {minutes:.1f} min; {maps}"]


def throughput(device: torch.device, quick: bool) -> list[str]:
    imgsz = 128 if quick else 640
    cfg = load_config(
        {
            "heads": {
                "person": {"task": "detect", "classes": ["person"]},
                "animal": {"task": "detect", "classes": ["a", "b"]},
            },
            "sources": {},
        },
        [f"model.imgsz={imgsz}", "model.backbone_weights=null", "train.epochs=0"],
        check_paths=False,
        evaluate_only=True,
    )
    rows = ["| precision | imgsz | batch | images/s | peak memory (GiB) |", "|---|---|---|---|---|"]
    for amp in ("off", "bf16", "fp16"):
        best = None
        for batch in [2, 4] if quick else [8, 16, 32, 64, 128]:
            try:
                best = (batch, *_images_per_second(cfg, device, amp, batch, imgsz, steps=2 if quick else 10))
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                break
        if best:
            rows.append(f"| {amp} | {imgsz} | {best[0]} | {best[1]:.0f} | {best[2]:.2f} |")
    return rows


def _images_per_second(cfg, device, amp, batch, imgsz, steps) -> tuple[float, float]:
    model = HydraDetector(cfg.model, cfg.heads).to(device)
    precision: Precision = precision_for(amp, device)
    opt, sh = build_optimizer(model, cfg.train), {"persons": ["person"], "animals": ["animal"]}
    g = torch.Generator().manual_seed(0)
    targets = [
        {
            ("person" if i % 2 == 0 else "animal"): {
                "boxes": torch.tensor([[10.0, 10, imgsz / 2, imgsz / 2]], device=device),
                "labels": torch.zeros(1, dtype=torch.long, device=device),
            }
        }
        for i in range(batch)
    ]
    from hydradet.data.dataset import Batch

    images = torch.rand(batch, 3, imgsz, imgsz, generator=g).to(device)
    b = Batch(
        images,
        targets,
        ["persons" if i % 2 == 0 else "animals" for i in range(batch)],
        list(range(batch)),
        [1.0] * batch,
        [(imgsz, imgsz)] * batch,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(3):  # warm-up; fp16's GradScaler starts high and skips its first overflowing steps
        _step(model, opt, b, sh, precision)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        _step(model, opt, b, sh, precision)
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return batch * steps / (time.perf_counter() - t0), peak


def _step(model, opt, batch, source_heads, precision) -> None:
    with contextlib.suppress(NonFiniteStep):  # an fp16 overflow costs the same time as a step
        train_step(model, opt, batch, source_heads, 10.0, precision=precision)


def predict_latency(device: torch.device, quick: bool) -> list[str]:
    from hydradet.model.weights import save_weights

    rows = ["| backend | imgsz | ms per image (batch 1, median of 20) |", "|---|---|---|"]
    imgsz = 128 if quick else 640
    cfg = tiny_config(f"model.imgsz={imgsz}", "model.backbone=shufflenet_v2_x0_5_megvii", "model.neck_width=64")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        save_weights(tiny_model(cfg), path)
        import numpy as np

        import hydradet

        image = (np.random.default_rng(0).random((imgsz, imgsz, 3)) * 255).astype(np.uint8)
        model = hydradet.load(path, device=str(device))
        rows.append(f"| PyTorch fp32 ({device}) | {imgsz} | {_median_ms(lambda: model.predict(image)):.1f} |")
        try:
            import onnxruntime as ort

            if "CUDAExecutionProvider" in ort.get_available_providers() or device.type == "cpu":
                onnx = model.export("onnx", Path(tmp) / "m.onnx")
                om = hydradet.load(onnx, device=str(device))
                provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
                ms = _median_ms(lambda: om.predict(image))
                rows.append(f"| ONNX Runtime ({provider}) | {imgsz} | {ms:.1f} |")
        except Exception as e:  # optional backend: report, do not fail the check
            rows.append(f"| ONNX Runtime | {imgsz} | skipped: {type(e).__name__}: {str(e)[:80]} |")
    return rows


def _median_ms(fn) -> float:
    fn()
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * sorted(times)[len(times) // 2]


def _on(batch, device):
    return batch.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, not the GPU")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu --quick to check the script itself")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# GPU check on {name}, torch {torch.__version__}\n")
    for title, part in (
        ("The rule under mixed precision", lambda: rule_under_amp(device)),
        ("Real training", lambda: real_training(device, args.quick)),
        ("Training throughput", lambda: throughput(device, args.quick)),
        ("Predict latency", lambda: predict_latency(device, args.quick)),
    ):
        t0 = time.time()
        print(f"## {title}\n")
        print("\n".join(part()))
        print(f"\n({time.time() - t0:.0f} s)\n", flush=True)


if __name__ == "__main__":
    main()

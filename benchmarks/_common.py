"""Helpers shared by the benchmark scripts: interleaved timing, FLOPs, the matmul bound, the machine, YOLO11n
(optional, offline), markdown tables and plots. Not part of the package: benchmarks only.

Scripts import it as `_common` (they run as `python benchmarks/NAME.py`, so this folder is on sys.path).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from hydradet.data.dataset import letterbox
from hydradet.model.detect_head import Detections
from hydradet.model.detector import HydraDetector

COCO_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-train" / "images"


# ---------------------------------------------------------------- command line
def parse_variant(spec: str) -> tuple[str, list[str]]:
    """`light:model.head_convs=1,model.neck_width=48` -> ("light", ["model.head_convs=1", "model.neck_width=48"])."""
    name, _, rest = spec.partition(":")
    if not name:
        raise SystemExit(f"--variant {spec!r}: expected NAME:key=value[,key=value...] (e.g. 'default:')")
    return name, [o.strip() for o in rest.split(",") if o.strip()]


def restrict_labels(sources: dict[str, dict[str, Any]], heads: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """The same sources for a model with these detect heads: each source's labels restricted to their classes (a
    merged head takes the union of the original heads' class maps); a source left with no label is left out (a
    separate model trains on its own sources only). sources: name -> a config's source dict."""
    out = {}
    for s, d in sources.items():
        labels: dict[str, dict[str, str]] = {}
        for h, classes in heads.items():
            m = {sc: hc for mapping in d["labels"].values() for sc, hc in mapping.items() if hc in classes}
            if m:
                labels[h] = m
        if labels:
            out[s] = {**d, "labels": labels}
    return out


# ---------------------------------------------------------------- timing
def sync(device: torch.device | str) -> None:
    """CUDA runs asynchronously: a timer must wait for the queued kernels."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(
    runs: Mapping[Any, Callable[[], object]], rounds: int, device: torch.device | str = "cpu", warmup: int = 2
) -> dict[Any, float]:
    """Median ms per call. Every round runs every variant once, in turn, so that load from other jobs on a
    shared machine hits all variants alike; medians drop the rounds another job slowed down."""
    for fn in runs.values():  # warm-up: first-call allocations, lazy inits, onnxruntime's sessions
        for _ in range(warmup):
            fn()
    sync(device)
    samples: dict[Any, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for key, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            samples[key].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in samples.items()}


# ---------------------------------------------------------------- FLOPs, parameters, the matmul bound
def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs (2 per multiply-add, as torch counts them) of the matmuls and convolutions that fn runs,
    forward and backward alike; elementwise ops, NMS and the loss's bookkeeping are not counted."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def matmul_rate(device: torch.device | str = "cpu", sizes: Sequence[int] = (1024, 2048), reps: int = 5) -> dict:
    """The machine's fp32 matmul rate in GFLOP/s at torch's thread count: the physical bound that a dense
    network's convolutions approach at best. Median of `reps` products per size; `best` is the higher median."""
    device = torch.device(device)
    out: dict[str, float] = {}
    for n in sizes:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        torch.mm(a, b)  # warm-up: allocations, BLAS thread pool
        sync(device)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.mm(a, b)
            sync(device)
            times.append(time.perf_counter() - t0)
        out[str(n)] = 2 * n**3 / statistics.median(times) / 1e9
    out["best"] = max(out.values())
    return out


# ---------------------------------------------------------------- the machine
def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, torch's threads, load, GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gib = float("nan")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(mem_gib, 1),
        "load_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
    }


def machine_line(m: Mapping[str, Any]) -> str:
    gpu = f", GPU {m['gpu']}" if m["gpu"] else ", no GPU"
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB{gpu}; torch {m['torch']} with "
        f"{m['torch_threads']} threads (OMP_NUM_THREADS={m['omp_num_threads'] or 'unset'}); "
        f"load {'/'.join(str(x) for x in m['load_1_5_15'])} (1/5/15 min) at the start"
    )


# ---------------------------------------------------------------- images and hydradet inference
def sample_images(n: int) -> list[np.ndarray]:
    """n HWC RGB uint8 pictures: COCO train images from ../shared/data when present, else random pixels."""
    paths = sorted(COCO_IMAGES.glob("*.jpg"))[:n] if COCO_IMAGES.is_dir() else []
    if len(paths) == n:
        return [np.array(Image.open(p).convert("RGB")) for p in paths]
    return [np.random.default_rng(i).integers(0, 256, (480, 640, 3), dtype=np.uint8) for i in range(n)]


def letterboxed(pictures: Iterable[np.ndarray], imgsz: int) -> torch.Tensor:
    """A ready batch as predict feeds the network: letterboxed (pad right/bottom), float RGB in [0, 1]."""
    return torch.stack([letterbox(torch.from_numpy(a).permute(2, 0, 1), imgsz)[0] for a in pictures]).float() / 255


@torch.inference_mode()
def hydra_detect(model: HydraDetector, x: torch.Tensor, conf: float, iou: float, max_det: int) -> dict:
    """Every head's detections for a ready batch: one backbone pass, each head, its NMS (as TorchBackend)."""
    out = model(x)
    return {h: model.heads[h].postprocess(o, conf, iou, max_det) for h, o in out.items()}


# ---------------------------------------------------------------- YOLO11n (optional, offline)
def import_ultralytics() -> ModuleType | None:
    """ultralytics, set up to never touch the network, or None when it is not installed.

    It is a benchmark-only extra (`pip install -e '.[bench]'`), never a dependency of hydradet. Offline it
    would otherwise try to download a font for its dataset check (3 s timeout per try) and probe DNS.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")  # read at import: ONLINE=False, no events, no update checks
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    try:
        import ultralytics
        import ultralytics.data.utils as data_utils
        import ultralytics.utils.torch_utils as torch_utils
    except ImportError:
        return None
    # Its import sets OMP_NUM_THREADS=1 when unset, and its CPU training sets torch's threads to cores - 1
    # (1 on a 2-core machine): both models must run on the same threads, so both are put back to torch's.
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    torch.set_num_threads(threads)
    torch_utils.NUM_THREADS = threads
    # The dataset check fetches Arial.ttf for plots it will not draw (plots=False); nothing may be downloaded.
    data_utils.check_font = lambda *a, **k: None
    return ultralytics


def yolo11n_net(nc: int | None = None) -> torch.nn.Module | None:
    """YOLO11n's network from its yaml (random init: no weights are fetched), or None without ultralytics."""
    if import_ultralytics() is None:
        return None
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel("yolo11n.yaml", nc=nc, verbose=False).eval()


@torch.inference_mode()
def yolo_detect(net: torch.nn.Module, x: torch.Tensor, conf: float, iou: float, max_det: int) -> list[torch.Tensor]:
    """YOLO's forward and its NMS: per image (N, 6) rows of x0, y0, x1, y1, score, class, letterboxed pixels."""
    from ultralytics.utils.nms import non_max_suppression

    return non_max_suppression(net(x)[0], conf_thres=conf, iou_thres=iou, max_det=max_det)


# ---------------------------------------------------------------- output
def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if v != v else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def stamp(what: str) -> None:
    """A progress line with the wall-clock time, flushed: long runs show where they are."""
    print(f"[{time.strftime('%H:%M:%S')}] {what}", flush=True)


def write_tables(out: Path, report: str) -> None:
    """The markdown report on stdout and in out/tables.md, ready for BENCHMARKS.md."""
    print("\n" + report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tables.md").write_text(report + "\n")


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str))


def pyplot() -> ModuleType | None:
    """matplotlib.pyplot with a file-only backend, or None (plots are skipped with a note) when missing.
    matplotlib comes with the bench extra (ultralytics depends on it); it is not a hydradet dependency."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed: no PNG plots (pip install -e '.[bench]')")
        return None
    return plt


def save_plot(fig: Any, path: Path) -> None:
    """Every benchmark's figures alike: tight layout, 120 dpi."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def detections_to_numpy(d: Detections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return d.boxes.cpu().numpy(), d.scores.cpu().numpy(), d.labels.cpu().numpy()

"""What reading the data costs as it grows (issue 20): `train` start-up (until its first step), `data check`, `val`,
and each one's peak memory, at 10k, 100k and 1M images, with a cold and a warm label cache (hydradet/data/cache.py).

The data: a COCO JSON of N image entries, each a link to one of the 337 coco-train images in ../shared/data with that
image's annotations (8.4 boxes per image, as COCO's), written under --work (a temporary folder unless given; never
the repository). The linked images are in the OS cache after the first run, so the numbers are the bookkeeping's,
not the disk's. A second, fixed JSON of --val-images entries is the config's val split (a full `val` runs the model
on every image: at 1M images its cost would be the model's, not the bookkeeping's, so `val start` measures the
N-image source as a val split up to its first batch through the model, and `val full` the fixed split).

Each measurement is a fresh `hydradet` process (interpreter start and imports included), run one after another:
    train cold   the label cache emptied first: read and probe everything, write the cache
    train warm   the same command again: the cache is used
    check cold   `hydradet data check` with the cache emptied first
    check warm   `hydradet data check` again
    val start    `hydradet val` of a random-init model, the N images as its val split, until its first batch
                 went through the model (warm cache)
    val full     `hydradet val` of the same model over the fixed --val-images split, to the end (warm cache;
                 measured once, in the first row: it does not depend on N)
Peak memory is the process's maxrss; "per image" is its growth over the smallest size, per added image.

    .venv/bin/python benchmarks/data_scale.py --sizes 1000 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-train"
HEADS = {"person": ["person"], "animal": ["bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra"]}
HOUR = 3600
REPORT = "BENCH "  # the line a child process reports on


# ---------------------------------------------------------------- the data
def generate(root: Path, n: int) -> Path:
    """root/N.json: N image entries, image i a link (root/images_N/i.jpg) to coco-train image i % 337, with its
    annotations. Reused when present. Its files are dated an hour back, as a dataset's are: the label cache does
    not trust times from the last seconds (data/inputs.py)."""
    out = root / f"{n}.json"
    if out.is_file():
        return out
    real = json.loads((COCO / "instances.json").read_text())
    anns: dict[int, list[dict]] = {}
    for a in real["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    images = real["images"]
    folder = root / f"images_{n}"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    ann_id = 0
    with tmp.open("w") as f:  # written as it goes: a million entries never sit in memory as objects
        f.write(f'{{"categories": {json.dumps(real["categories"])}, "images": [')
        for i in range(n):
            src = images[i % len(images)]
            link = folder / f"{i:09d}.jpg"
            if not link.is_symlink():
                link.symlink_to(COCO / "images" / src["file_name"])
            entry = {
                "id": i + 1,
                "file_name": f"images_{n}/{i:09d}.jpg",
                "width": src["width"],
                "height": src["height"],
            }
            f.write(("," if i else "") + json.dumps(entry))
        f.write('], "annotations": [')
        for i in range(n):
            for a in anns.get(images[i % len(images)]["id"], []):
                ann_id += 1
                f.write(("," if ann_id > 1 else "") + json.dumps({**a, "id": ann_id, "image_id": i + 1}))
        f.write("]}")
    tmp.rename(out)
    os.utime(out, (time.time() - HOUR, time.time() - HOUR))
    return out


def write_config(root: Path, train: Path | None, val: Path, name: str) -> Path:
    """A config with one COCO source (`train` left out when None), heads person and animal."""
    labels = {h: {c: c for c in classes} for h, classes in HEADS.items()}
    splits = {"train": str(train)} if train else {}
    cfg = {
        "heads": {h: {"task": "detect", "classes": classes} for h, classes in HEADS.items()},
        "sources": {"coco": {"format": "coco", **splits, "val": str(val), "labels": labels}},
        "project": str(root / "runs"),
        "name": "scale",
    }
    path = root / f"config_{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------- one measurement = one process
def run(kind: str, config: Path, cache: Path, work: Path, extra: list[str]) -> dict[str, float]:
    """seconds (to the first step for train, to the end otherwise) and peak_mb of a child process."""
    cmd = [sys.executable, __file__, "--child", kind, "--config", str(config), "--work", str(work), "--t0"]
    env = {**os.environ, "HYDRADET_CACHE_DIR": str(cache)}
    t0 = time.time()
    done = subprocess.run([*cmd, repr(t0), "--", *extra], env=env, capture_output=True, text=True, check=False)
    wall = time.time() - t0
    line = next((ln for ln in done.stdout.splitlines()[::-1] if ln.startswith(REPORT)), None)
    if line is None:
        raise SystemExit(f"{kind} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads(line[len(REPORT) :])
    return {"seconds": report.get("seconds", wall), "peak_mb": report["peak_mb"]}


def _report(**values: float) -> None:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    print(REPORT + json.dumps({**values, "peak_mb": peak_mb}), flush=True)


def child(kind: str, config: Path, work: Path, t0: float, extra: list[str]) -> None:
    from hydradet.cli import main

    if kind == "train":
        import hydradet.train.trainer as trainer

        def first_step(*args: object, **kwargs: object) -> None:
            _report(seconds=time.time() - t0)
            os._exit(0)  # the first step is where start-up ends: nothing else is measured

        trainer.train_step = first_step  # type: ignore[assignment]
        command = ["train", str(config)]
    elif kind == "check":
        command = ["data", "check", str(config), "--out", str(work / "check")]
    elif kind in ("val", "valstart"):
        command = ["val", str(config), str(_weights(config, work)), "--out", str(work / "val")]
        if kind == "valstart":
            from hydradet.model.detector import HydraDetector

            forward = HydraDetector.forward

            def first_batch(self: HydraDetector, *args: object, **kwargs: object) -> object:
                out = forward(self, *args, **kwargs)
                _report(seconds=time.time() - t0)
                os._exit(0)  # start-up ends with the first batch through the model
                return out

            HydraDetector.forward = first_batch  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown --child {kind}")
    code = main([*command, *extra])
    if code:
        raise SystemExit(code)
    _report(seconds=time.time() - t0)


def _weights(config: Path, work: Path) -> Path:
    """A random-init model of the config (val measures the reading and scoring, not the model's quality)."""
    from hydradet.config import load_config
    from hydradet.model.detector import HydraDetector
    from hydradet.model.weights import save_weights

    path = work / "model.safetensors"
    if not path.is_file():
        cfg = load_config(config, evaluate_only=True)
        save_weights(HydraDetector(cfg.model, cfg.heads), path)
    return path


# ---------------------------------------------------------------- the table
STEPS = [("train cold", "train", True), ("train warm", "train", False)]
STEPS += [("check cold", "check", True), ("check warm", "check", False)]
STEPS += [("val start", "valstart", False), ("val full", "val", False)]


def measure(root: Path, n: int, val_json: Path, steps: list[tuple[str, str, bool]]) -> dict[str, dict[str, float]]:
    data = generate(root, n)
    configs = {
        "train": write_config(root, data, val_json, str(n)),
        "valstart": write_config(root, None, data, f"val_{n}"),
        "val": write_config(root, None, val_json, f"val_{val_json.stem}"),
    }
    cache = root / f"cache_{n}"
    out = {}
    for name, kind, cold in steps:
        if cold:
            shutil.rmtree(cache, ignore_errors=True)
        out[name] = run(kind, configs.get(kind, configs["train"]), cache, root / f"work_{n}", [])
        print(f"  {n} images, {name}: {out[name]['seconds']:.1f} s, {out[name]['peak_mb']:.0f} MB", flush=True)
    return out


def table(rows: dict[int, dict[str, dict[str, float]]], names: list[str]) -> str:
    base_n = min(rows)
    head = "| images | " + " | ".join(f"{n} s | {n} peak MB" for n in names) + " | warm train: bytes/image over base |"
    lines = [head, "|" + "---|" * (2 + 2 * len(names))]
    for n, r in sorted(rows.items()):
        cells = " | ".join(f"{r[k]['seconds']:.1f} | {r[k]['peak_mb']:.0f}" if k in r else "- | -" for k in names)
        growth = "-"
        if n != base_n and "train warm" in r and "train warm" in rows[base_n]:
            growth = (
                f"{(r['train warm']['peak_mb'] - rows[base_n]['train warm']['peak_mb']) * 2**20 / (n - base_n):.0f}"
            )
        lines.append(f"| {n:,} | {cells} | {growth} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    ap.add_argument("--val-images", type=int, default=1000, help="images of the fixed val split (`val full`)")
    ap.add_argument("--steps", nargs="+", default=[s for s, _, _ in STEPS], help="which measurements, by name")
    ap.add_argument("--work", type=Path, default=None, help="where the data and runs go (default: a temporary folder)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--config", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.config, args.work, args.t0, args.extra)
        return
    if not COCO.is_dir():
        raise SystemExit(f"{COCO} not found: the benchmark links to the coco-train images in ../shared/data")
    root = args.work or Path(tempfile.gettempdir()) / "hydradet_data_scale"
    root.mkdir(parents=True, exist_ok=True)
    steps = [s for s in STEPS if s[0] in args.steps]
    print(f"data and runs in {root}; {os.cpu_count()} CPUs", flush=True)
    val_json = generate(root, args.val_images)
    # `val full` scores the same fixed split whatever N is: measured once, with the smallest size.
    rows = {
        n: measure(root, n, val_json, [s for s in steps if s[0] != "val full" or k == 0])
        for k, n in enumerate(args.sizes)
    }
    print(table(rows, [s for s, _, _ in steps]))


if __name__ == "__main__":
    main()

"""Score the models a benchmarks/partial_labels.py run saved, again, without training them again: its accuracy
table (per head mAP50-95, mAP50, and the recall at predict's conf) from the weights under OUT/runs, through
the same evaluator. For a run made before a metric was added; training and latency columns are not touched.
The files are read by the current code: a hydradet file trained before a change to the heads' outputs (such as
the relu -> softplus box branch of 2026-11-23) scores differently here than in its run; check the mAPs against
the run's own table.

    .venv/bin/python benchmarks/partial_rescore.py --out runs/bench/partial_labels                # synthetic run
    .venv/bin/python benchmarks/partial_rescore.py --out runs/bench/partial_coco --data /tmp/coco_split/hydradet.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import import_ultralytics
from _hydra import hydra_predictor
from _measure import Predictor, joined, score
from _partial_report import accuracy_table
from _partial_task import read_task, read_val
from _yolo import yolo_predictor

from hydradet.model.weights import load_model

# Run folder -> the row partial_labels.py gave it; separate models (one folder per head) join into one row.
NAMES = {"hydradet_scratch": "hydradet, random init", "yolo_merged": "YOLO11n merged"}
PREFIXES = {"separate_": "separate", "yolo_separate_": "YOLO11n separate"}


def row_name(folder: str) -> str:
    for prefix, name in PREFIXES.items():
        if folder.startswith(prefix):
            return name
    return NAMES.get(folder, folder.replace("_", " "))


def load_predictor(run: Path) -> Predictor | None:
    """A saved run's last weights as a Predictor: hydradet's last.safetensors, or YOLO's last.pt (EMA weights,
    Conv+BN fused, as partial_labels.py measured them); None (said) for a folder it cannot score."""
    if (run / "weights" / "last.safetensors").is_file():
        return hydra_predictor(load_model(run / "weights" / "last.safetensors").eval())
    if (run / "weights" / "last.pt").is_file():
        if import_ultralytics() is None:
            print(f"note: {run.name}: a YOLO run, left out (ultralytics is not installed: pip install -e '.[bench]')")
            return None
        from ultralytics import YOLO

        net = YOLO(str(run / "weights" / "last.pt")).model.float().eval()
        names = [net.names[k] for k in sorted(net.names)]
        return yolo_predictor(net.fuse(verbose=False).eval(), names)
    print(f"note: {run.name}: no weights/last.safetensors or weights/last.pt, left out")
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the --out of a partial_labels.py run")
    ap.add_argument("--data", type=Path, default=None, help="the run's --data (default: OUT/world/hydradet.yaml)")
    args = ap.parse_args()
    config_yaml = args.data or args.out / "world" / "hydradet.yaml"
    if (args.out / "data" / "hydradet.yaml").is_file():  # a --data run cut with --train-images/--val-images
        config_yaml = args.out / "data" / "hydradet.yaml"
    task = read_task(config_yaml.resolve(), epochs=1)
    val = read_val(task)
    rows: dict[str, list[Predictor]] = {}
    for run in sorted(p for p in (args.out / "runs").iterdir() if p.is_dir()):
        predictor = load_predictor(run)
        if predictor is not None:
            rows.setdefault(row_name(run.name), []).append(predictor)
    metrics = {name: score(joined(ps), val, task.cfg, torch.device("cpu")) for name, ps in rows.items()}
    print(accuracy_table(metrics, list(task.heads), task.cfg.predict.conf))


if __name__ == "__main__":
    main()

"""Adding a head to a trained model: how much do the old heads forget, and what does distillation save?

1. Train the demo's 2-head model (person, animal) on synthetic world A (the base model).
2. Add a head `fish` labelled by a new source only: the animals of synthetic world B (another seed, with fish
   among its animals; its images also show persons, dogs and birds, unlabelled). The old sources are not used.
   Three ways, same budget, all from the base model's best weights:
   - frozen: `train.freeze=[backbone, neck, heads.person, heads.animal]`: only the new head trains;
   - unfrozen: nothing frozen; the old heads have no source, so only the backbone and neck drift under them;
   - unfrozen + distill: `train.distill_old_heads=true`: the base model teaches the old heads on world B's images.
3. Score the old heads on world A's fully labelled val (before = the base model) and the new head on world B's.

    .venv/bin/python benchmarks/add_head.py [--epochs 10] [--images 400] [--out /tmp/hydradet-add-head]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hydradet.config import load_config
from hydradet.data.dataset import split_datasets
from hydradet.demo import DEMO_OVERRIDES
from hydradet.eval.evaluate import evaluate
from hydradet.model.weights import load_model
from hydradet.synth.world import SynthSpec, write_synthetic_world
from hydradet.train.trainer import train

VARIANTS = {
    "frozen trunk + old heads": ["train.freeze=[backbone, neck, heads.person, heads.animal]"],
    "unfrozen": [],
    "unfrozen + distill": ["train.distill_old_heads=true"],
}


def _scores(weights: Path, cfg_dict: dict, overrides: list[str]) -> dict[str, dict[str, float]]:
    cfg = load_config(cfg_dict, overrides)
    model = load_model(weights)
    return evaluate(model, cfg, split_datasets(cfg, "val"), model.backbone.mean.device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--images", type=int, default=400, help="train images per source")
    ap.add_argument("--val-images", type=int, default=120)
    ap.add_argument("--out", type=Path, default=Path("/tmp/hydradet-add-head"))
    args = ap.parse_args()
    spec = {"train_images_per_source": args.images, "val_images": args.val_images}
    world_a = write_synthetic_world(args.out / "world_a", SynthSpec(seed=0, **spec))
    world_b = write_synthetic_world(
        args.out / "world_b", SynthSpec(seed=1, animal_classes=("fish", "dog", "bird"), **spec)
    )
    common = [*DEMO_OVERRIDES, f"train.epochs={args.epochs}", f"project={args.out / 'runs'}", "eval.every=1000"]

    t0 = time.time()
    base_run = train(load_config(world_a.config_yaml, [*common, "name=base"]), log=lambda _line: None)
    base_s = time.time() - t0
    base = base_run / "weights" / "best.safetensors"

    old_heads = {
        "person": {"task": "detect", "classes": ["person"]},
        "animal": {"task": "detect", "classes": ["dog", "bird", "giraffe"]},
    }
    animal_map = {"animal": {c: c for c in ("dog", "bird", "giraffe")}}
    val_a = {"format": "coco", "val": str(world_a.val_json), "labels": {"person": {"person": "person"}, **animal_map}}
    val_b = {"format": "coco", "val": str(world_b.val_json), "labels": {"fish": {"fish": "fish"}}}
    new_cfg = {
        "heads": {**old_heads, "fish": {"task": "detect", "classes": ["fish"]}},
        "sources": {
            "fish_b": {"format": "yolo", "train": str(world_b.animals_yaml), "labels": {"fish": {"fish": "fish"}}},
            "val_a": val_a,
            "val_b": val_b,
        },
    }
    eval_only = [*common, "train.epochs=0"]
    before = _scores(base, {"heads": old_heads, "sources": {"val_a": val_a}}, eval_only)

    rows = []
    for name, extra in VARIANTS.items():
        t0 = time.time()
        overrides = [*common, f"name={name.replace(' + ', '_').replace(' ', '_')}", f"model.init={base}", *extra]
        run = train(load_config(new_cfg, overrides), log=lambda _line: None)
        wall = time.time() - t0
        rows.append((name, _scores(run / "weights" / "best.safetensors", new_cfg, eval_only), wall))

    print(f"\nbase model: demo settings, {args.epochs} epochs on world A ({args.images} images/source), {base_s:.0f} s")
    print(
        f"new head `fish`: {args.epochs} epochs on world B's animal source ({args.images} images), from the base model"
    )
    print("old heads scored on world A's val, the new head on world B's; mAP50-95 / mAP50 (EMA weights)\n")
    print("| model | person | animal | fish (new) | train wall (s) |")
    print("|---|---|---|---|---|")

    def cell(m: dict[str, dict[str, float]], head: str) -> str:
        return f"{m[head]['mAP50-95']:.3f} / {m[head]['mAP50']:.3f}" if head in m else "-"

    print(f"| base (before) | {cell(before, 'person')} | {cell(before, 'animal')} | - | {base_s:.0f} |")
    for name, m, wall in rows:
        print(f"| {name} | {cell(m, 'person')} | {cell(m, 'animal')} | {cell(m, 'fish')} | {wall:.0f} |")


if __name__ == "__main__":
    main()

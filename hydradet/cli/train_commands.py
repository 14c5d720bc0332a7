"""The commands around training: train, val, data check, split, synth."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hydradet.config.load import load_config
from hydradet.errors import ConfigError


def train_command(args: argparse.Namespace) -> int:
    from hydradet.train.resume import resume_config
    from hydradet.train.trainer import train

    # argparse reads a first key=value as the config: sort them out again (data=CONFIG is the config too)
    given = [str(args.config), *args.overrides] if args.config is not None else args.overrides
    configs, overrides = split_positionals(given)
    if args.resume is not None:
        if configs:
            raise ConfigError(f"train --resume takes the run's own config; {configs[0]} is not a key=value override")
        cfg = resume_config(args.resume, overrides=overrides)
    elif len(configs) != 1:
        raise ConfigError(
            "train: give one config file (hydradet train CONFIG [key=value ...], or data=CONFIG) or a run to "
            f"continue (--resume RUN); got {[str(c) for c in configs] or 'none'}"
        )
    else:
        cfg = load_config(configs[0], overrides)
        if cfg.train.resume is not None:
            cfg = resume_config(cfg.train.resume, requested=cfg)
    if cfg.train.devices > 1 and "WORLD_SIZE" not in os.environ:
        return launch_torchrun(cfg.train.devices, args.argv)
    train(cfg)
    return 0


def launch_torchrun(devices: int, argv: list[str]) -> int:
    """`train.devices=N`: the same command under torchrun, N processes on this machine (one per GPU on CUDA)."""
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}"]
    cmd += ["-m", "hydradet", *argv]
    print(f"launching {devices} processes: {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.Popen(cmd)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # Ctrl-C reached torchrun too: its ranks write their checkpoint; wait for them
            continue


def val_command(args: argparse.Namespace) -> int:
    from hydradet.data.dataset import split_datasets
    from hydradet.eval.evaluate import EvalDetails, evaluate, format_table
    from hydradet.eval.run_log import eval_pictures
    from hydradet.eval.val import plan_val
    from hydradet.model.weights import load_model
    from hydradet.train.distributed import device_from
    from hydradet.train.run_folder import new_run_dir

    weights, config, overrides = _val_arguments(args.args)
    model = load_model(weights)
    # Evaluate at the size the model was trained at, unless the command line says otherwise. evaluate_only: a
    # config whose sources have only `val` splits is fine here.
    cfg = load_config(config, [f"model.imgsz={model.model_cfg.imgsz}", *overrides], evaluate_only=True)
    # The heads both name (same task and classes) with val data; each other head is named with the reason.
    plan = plan_val(cfg, model, weights)
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


def split_positionals(items: list[str]) -> tuple[list[Path], list[str]]:
    """Command-line words -> (files, key=value overrides); `data=PATH` is a file, as Ultralytics users write it."""
    files, overrides = [], []
    for item in items:
        key, eq, value = item.partition("=")
        if key.strip() == "data" and eq:
            files.append(Path(value))
        elif eq:
            overrides.append(item)
        else:
            files.append(Path(item))
    return files, overrides


def _val_arguments(items: list[str]) -> tuple[Path, Path, list[str]]:
    """`[CONFIG] WEIGHTS [key=value ...]` -> (weights, config, overrides). Without a config: the one the weights
    were trained with (their metadata names it; runs/NAME/config.yaml), if it still exists."""
    from hydradet.model.weights_check import read_metadata

    files, overrides = split_positionals(items)
    weights = [f for f in files if f.suffix.lower() not in (".yaml", ".yml")]
    configs = [f for f in files if f not in weights]
    if len(weights) != 1 or len(configs) > 1:
        raise ConfigError(f"val: expected [CONFIG] WEIGHTS [key=value ...], got {' '.join(items)}")
    if configs:
        return weights[0], configs[0], overrides
    trained_with = read_metadata(weights[0]).get("config")
    for candidate in (trained_with, weights[0].resolve().parent.parent / "config.yaml"):
        if candidate and Path(candidate).is_file():
            print(f"val: the config {weights[0]} was trained with: {candidate}")
            return weights[0], Path(candidate), overrides
    raise ConfigError(
        f"val: {weights[0]} does not name a config that still exists (trained with: {trained_with}); give the "
        f"config whose val data to use: hydradet val CONFIG {weights[0]}"
    )


def data_command(args: argparse.Namespace) -> int:
    from hydradet.data.check import check_data, write_report
    from hydradet.model.weights_check import read_metadata
    from hydradet.train.run_folder import new_run_dir

    configs, overrides = split_positionals([str(args.config), *args.overrides])  # data=CONFIG as in train
    if len(configs) != 1:
        raise ConfigError(f"data check: give one config file (or data=CONFIG); got {[str(c) for c in configs]}")
    cfg = load_config(configs[0], overrides)
    init_heads = read_metadata(cfg.model.init)["heads"] if cfg.model.init else {}
    check = check_data(cfg, decode=args.decode, init_heads=init_heads)
    # A sequence of its own (PROJECT/data_check, data_check2, ...): a check never takes the next training's name.
    out = args.out or new_run_dir(cfg.project / "data_check")
    files = write_report(check, out, title=str(args.config))
    print(check.text())
    print(f"report and pictures in {out}: {', '.join(f.name for f in files)}")
    return 0 if check.ok else 2


def split_command(args: argparse.Namespace) -> int:
    from hydradet.data.split import parse_head_spec, split_coco

    heads = dict(parse_head_spec(h) for h in args.head)
    if len(heads) != len(args.head):
        raise ConfigError("--head: each head name may be given once")
    result = split_coco(args.coco_json, heads, args.out, args.seed, args.val_fraction, args.val, args.images)
    for line in result.summary:
        print(line)
    print(f"train with: hydradet train {result.config_yaml}")
    return 0


def synth_command(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from hydradet.synth.world import SynthSpec, write_synthetic_world

    if args.attributes:
        return synth_attributes(args)
    spec = SynthSpec(seed=args.seed)
    if args.train_images is not None:
        spec = replace(spec, train_images_per_source=args.train_images)
    if args.val_images is not None:
        spec = replace(spec, val_images=args.val_images)
    world = write_synthetic_world(args.out, spec)
    print(f"synthetic world in {world.root}; train with: hydradet train {world.config_yaml}")
    return 0


def synth_attributes(args: argparse.Namespace) -> int:
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

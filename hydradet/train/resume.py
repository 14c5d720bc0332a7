"""Which config a resumed run uses: the run's own config.yaml, changed only where the change cannot alter the past.

`hydradet train --resume runs/NAME [key=value ...]`, or a config with `train.resume: runs/NAME`. The resumed run
must end where the uninterrupted one would have, so a key that shaped the steps already taken (the data, the
model, the batch, the sampling, the augmentation, the seed...) may not change. What may: the keys in RESUMABLE,
which only act on what comes next. Each refused key is named, with both values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydradet.config.load import load_config
from hydradet.config.schema import Config
from hydradet.errors import ConfigError

RESUMABLE = {
    "train.epochs": "more epochs continue the run (the cosine schedule stretches over the new total)",
    "train.lr": "e.g. lower, after the loss diverged",
    "train.workers": "loading processes; the data stays the same (data/seeding.py)",
    "train.device": "where the remaining steps run",
    "train.devices": "how many processes share each batch (the global batch stays the same)",
    "train.save_period": "how often checkpoints are written",
    "train.max_bad_steps": "how many non-finite steps in a row stop the run",
    "train.plots": "pictures of the run, drawn from now on",
    "train.tensorboard": "TensorBoard event files, written from now on",
}


def resume_config(
    run_dir: Path, requested: Config | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """The config to continue `run_dir` with, `train.resume` set to it.

    requested: a config the user gave beside `train.resume` (None: only `overrides` onto the run's own config).
    Raises ConfigError naming each key that differs from the run's config and may not change on resume."""
    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"train.resume: {run_dir} is not a run folder (no config.yaml in it); give runs/NAME")
    original = load_config(saved)
    if requested is None:
        requested = load_config(saved, list(overrides))
    elif overrides:
        requested = load_config(requested.model_dump(mode="json"), list(overrides))
    old, new = _flat(original), _flat(requested)
    refused = []
    for key in sorted(set(old) | set(new)):
        if key == "train.resume" or old.get(key) == new.get(key) or key in RESUMABLE:
            continue
        if key.startswith("heads.") and key.endswith((".mean", ".std")) and new.get(key) is None:
            continue  # computed from the train labels at the start; the run's config holds the values
        refused.append(f"  {key}: the run has {old.get(key)!r}, the resume asks for {new.get(key)!r}")
    if refused:
        allowed = ", ".join(RESUMABLE)
        raise ConfigError(
            f"cannot resume {run_dir} with a different config (it would not continue the same run):\n"
            + "\n".join(refused)
            + f"\nOnly these may change on resume: {allowed}. To train with the other changes, start a new run "
            f"(e.g. model.init={run_dir / 'weights' / 'last.safetensors'})"
        )
    train = original.train.model_copy(update={k[6:]: getattr(requested.train, k[6:]) for k in RESUMABLE})
    return original.model_copy(update={"train": train.model_copy(update={"resume": run_dir})})


def _flat(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(cfg.model_dump(mode="json"), "")
    return out

"""`hydradet val CONFIG WEIGHTS`: which heads a config and a trained model let us evaluate, and why the others not.

The config brings the val data, the weights bring the model; they need not name the same heads. A head is
evaluated when both have it (same task and classes) and a source with a `val` split labels it; every other head
is named with the reason, so that a missing row in the table is never a surprise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hydradet.config.schema import Config
from hydradet.errors import ConfigError
from hydradet.model.detector import HydraDetector


@dataclass(frozen=True)
class ValPlan:
    cfg: Config  # the config cut down to the evaluated heads and the val sources that label them
    heads: list[str]  # evaluated, in the model's order
    left_out: list[str]  # one line per head not evaluated, saying why and what would include it


def plan_val(cfg: Config, model: HydraDetector, weights: Path) -> ValPlan:
    """The heads to evaluate and a config holding only them and the val sources that label them.

    Raises ConfigError when a head both have differs in task or classes (class ids would not match), naming the
    key, and when no head is left to evaluate (with each head's reason)."""
    for head, trained in model.head_cfgs.items():
        mine = cfg.heads.get(head)
        if mine is None:
            continue
        for key in ("task", "classes"):
            if getattr(mine, key) != getattr(trained, key):
                raise ConfigError(
                    f"heads.{head}.{key}: the config says {getattr(mine, key)!r} but {weights} was trained with "
                    f"{getattr(trained, key)!r}; {'class ids' if key == 'classes' else 'outputs'} would not match. "
                    f"Use the config the model was trained with, or rename the head in this config"
                )
    val_labels = {
        h: [s for s, src in cfg.sources.items() if src.val is not None and h in src.labels] for h in cfg.heads
    }
    heads, left_out = [], []
    for head in model.heads:
        if head not in cfg.heads:
            left_out.append(
                f"{head}: in {weights} but not in the config: not evaluated "
                f"(add heads.{head} and a source with a `val` split that labels it)"
            )
        elif not val_labels[head]:
            train_only = [s for s, src in cfg.sources.items() if head in src.labels]
            why = f"sources {train_only} have no `val` split" if train_only else "no source labels it"
            left_out.append(f"{head}: {why}: not evaluated (give a source that labels it a `val` split)")
        else:
            heads.append(head)
    for head in cfg.heads:
        if head not in model.heads:
            left_out.append(
                f"{head}: in the config but not in {weights} (its heads: {list(model.heads)}): not evaluated"
            )
    if not heads:
        raise ConfigError(
            f"nothing to evaluate: no head is in both the config and {weights} with val data:\n  "
            + "\n  ".join(left_out)
        )
    # The model's head configs (equal in task and classes; a regress head's mean/std are the model's own).
    sources = {
        name: src.model_copy(update={"labels": {h: m for h, m in src.labels.items() if h in heads}, "train": None})
        for name, src in cfg.sources.items()
        if src.val is not None and any(h in src.labels for h in heads)
    }
    kept = cfg.model_copy(update={"heads": {h: model.head_cfgs[h] for h in heads}, "sources": sources})
    return ValPlan(kept, heads, left_out)

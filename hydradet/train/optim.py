"""Optimizer (parameter groups per module prefix) and learning-rate schedule (linear warmup, then cosine decay)."""

from __future__ import annotations

import math

import torch
from torch import nn

from hydradet.config.train_schema import TrainConfig
from hydradet.errors import ConfigError
from hydradet.model.detector import under


def build_optimizer(model: nn.Module, cfg: TrainConfig, extra: nn.Module | None = None) -> torch.optim.Optimizer:
    """Per `train.param_groups` prefix (longest match wins; the rest is one default group): weights with decay,
    norm parameters and biases without (decaying them only hurts). Each group carries its `lr_mult` for `set_lr`.
    Every parameter is registered, frozen or not: a frozen one has grad None and the optimizer skips it.
    `extra` (the loss balancer's parameters, if it has any): one more group, lr_mult 1, no weight decay."""
    check_prefixes(model, cfg)
    by_length = sorted(cfg.param_groups, key=len, reverse=True)
    buckets: dict[tuple[str | None, bool], list[nn.Parameter]] = {}
    for key in [None, *cfg.param_groups]:
        buckets[(key, True)], buckets[(key, False)] = [], []
    for name, p in model.named_parameters():
        key = next((k for k in by_length if under(name, [k])), None)
        buckets[(key, p.ndim > 1)].append(p)
    groups = []
    for (key, decays), params in buckets.items():
        if not params:
            continue
        pg = cfg.param_groups.get(key) if key is not None else None
        wd = (cfg.weight_decay if pg is None or pg.weight_decay is None else pg.weight_decay) if decays else 0.0
        groups.append({"params": params, "weight_decay": wd, "lr_mult": pg.lr_mult if pg else 1.0})
    if extra is not None and any(True for _ in extra.parameters()):
        groups.append({"params": list(extra.parameters()), "weight_decay": 0.0, "lr_mult": 1.0})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


def check_prefixes(model: nn.Module, cfg: TrainConfig) -> None:
    """Every prefix in train.param_groups, train.phases and train.freeze names at least one parameter of the model."""
    names = [n for n, _ in model.named_parameters()]
    keys = [(f"train.param_groups.{k}", k) for k in cfg.param_groups]
    keys += [(f"train.phases.{i}.freeze", k) for i, ph in enumerate(cfg.phases) for k in ph.freeze]
    keys += [("train.freeze", k) for k in cfg.freeze]
    for key, prefix in keys:
        if not any(under(n, [prefix]) for n in names):
            raise ConfigError(f"invalid config:\n  {key}: {prefix!r} names no parameter of this model")


def lr_factor(step: int, total_steps: int, warmup_steps: int, cfg: TrainConfig) -> float:
    """Multiplier of cfg.lr at a step: warmup_start -> 1 linearly, then cosine 1 -> final_lr."""
    if step < warmup_steps:
        return cfg.warmup_start + (1 - cfg.warmup_start) * step / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return cfg.final_lr + (1 - cfg.final_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The scheduled lr, times each group's lr_mult (train.param_groups)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)

"""The one rule: a sample supervises only the heads that its dataset labels.

Everything that keeps a head untouched by other sources' samples is in this file:
1. `rows_per_head`: each head runs (conditional forward) and is scored only on the batch rows whose source
   labels it; a head with no such row is not run at all.
2. `clear_grads`: gradients are set to None, not zero, before each backward. A head that did not run keeps
   grad None, and torch's optimizers skip such parameters entirely: no step, no momentum or Adam moment
   update, no weight decay.
3. `check_untouched`: after backward, a guard that turns any leak (a head that received a gradient without
   its own samples) into an error instead of a silent change.
4. `clip_grads`: gradient clipping per head and for the shared trunk separately. One global norm would let
   another source's gradients rescale a head's update.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn


def rows_per_head(sources: list[str], source_heads: Mapping[str, Iterable[str]]) -> dict[str, Tensor]:
    """head -> indices of the samples whose source labels that head. Heads with no such sample are absent."""
    rows: dict[str, list[int]] = {}
    for i, src in enumerate(sources):
        for head in source_heads[src]:
            rows.setdefault(head, []).append(i)
    return {head: torch.tensor(idx, dtype=torch.long) for head, idx in rows.items()}


def rows_without_labels(
    sources: list[str], source_heads: Mapping[str, Iterable[str]], heads: Iterable[str]
) -> dict[str, Tensor]:
    """head -> indices of the samples whose source does NOT label it: the only rows where a teacher may stand in
    for the missing labels (the opt-in modes `train.distill_old_heads`, `train.pseudo`). Absent if none."""
    rows = {}
    for head in heads:
        idx = [i for i, s in enumerate(sources) if head not in source_heads[s]]
        if idx:
            rows[head] = torch.tensor(idx, dtype=torch.long)
    return rows


def clear_grads(model: nn.Module) -> None:
    model.zero_grad(set_to_none=True)


def clip_grads(trunk: list[nn.Module], heads: nn.ModuleDict, active: Iterable[str], max_norm: float) -> None:
    """Clip the shared trunk (backbone, neck) and each active head by their own gradient norms."""
    groups = [[p for m in trunk for p in m.parameters()], *([*heads[h].parameters()] for h in active)]
    for params in groups:
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm)


def check_untouched(heads: nn.ModuleDict, active: Iterable[str]) -> None:
    """Raise if a head that had no samples in this step has any gradient."""
    active = set(active)
    for name, head in heads.items():
        if name in active:
            continue
        leaked = [n for n, p in head.named_parameters() if p.grad is not None]
        if leaked:
            raise RuntimeError(f"head {name!r} had no samples in this step but got gradients on {leaked[:3]}")

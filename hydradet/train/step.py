"""One optimisation step under the rule: batch -> per-head losses -> backward -> optimizer step."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from hydradet.data.dataset import Batch
from hydradet.model.detector import HydraDetector
from hydradet.train.balance import Balancer
from hydradet.train.rule import check_untouched, clear_grads, clip_grads, rows_per_head


def head_losses(
    model: HydraDetector, batch: Batch, source_heads: Mapping[str, Iterable[str]]
) -> dict[str, dict[str, Tensor]]:
    """head -> its loss terms, computed over the samples whose source labels it and normalised by its own
    count of positives. Heads with no such sample are absent (they did not run)."""
    rows = rows_per_head(batch.sources, source_heads)
    outputs = model(batch.images, {h: r.to(batch.images.device) for h, r in rows.items()})
    return {
        head: model.heads[head].loss(outputs[head], [batch.targets[i][head] for i in idx.tolist()])
        for head, idx in rows.items()
    }


def train_step(
    model: HydraDetector,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    source_heads: Mapping[str, Iterable[str]],
    grad_clip: float = 0.0,
    balancer: Balancer | None = None,
) -> dict[str, float]:
    """Returns each active head's total loss (unweighted). Heads without samples keep grad None and are not
    stepped; so do their balancing parameters. balancer None: the plain sum of the heads' losses."""
    losses = head_losses(model, batch, source_heads)
    totals = {head: sum(terms.values()) for head, terms in losses.items()}
    clear_grads(model)
    if balancer is None:
        sum(totals.values()).backward()  # type: ignore[union-attr]
    else:
        clear_grads(balancer)
        balancer.backward(totals, model)  # type: ignore[arg-type]
        balancer.check_untouched(losses)
    check_untouched(model.heads, losses)
    if grad_clip > 0:
        clip_grads([model.backbone, model.neck], model.heads, losses, grad_clip)
    optimizer.step()
    return {head: float(total.detach()) for head, total in totals.items()}  # type: ignore[union-attr]

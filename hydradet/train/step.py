"""One optimisation step under the rule: batch -> per-head losses -> backward -> optimizer step."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from hydradet.data.dataset import Batch
from hydradet.model.detector import HydraDetector
from hydradet.train.balance import Balancer
from hydradet.train.distill import Distiller
from hydradet.train.rule import check_untouched, clear_grads, clip_grads, rows_per_head


def head_losses(
    model: HydraDetector,
    batch: Batch,
    source_heads: Mapping[str, Iterable[str]],
    distiller: Distiller | None = None,
    trunk: str = "sum",
) -> dict[str, dict[str, Tensor]]:
    """head -> its loss terms, computed over the samples whose source labels it and normalised by its own
    count of positives. Heads with no such sample are absent (they did not run).

    With a distiller (`train.distill_old_heads`), an old head also runs on the samples whose source does not
    label it, and gets `distill_*` terms for matching the teacher there (train/distill.py).

    trunk="positives": each detect head's gradient into the shared backbone and neck is weighted by `trunk_scales`."""
    device = batch.images.device
    rows = rows_per_head(batch.sources, source_heads)
    taught = distiller.rows(batch.sources, source_heads) if distiller is not None else {}
    # A head that is both labelled and taught in this batch runs once on every row; its outputs are split after.
    run = {h: None if h in taught else r.to(device) for h, r in rows.items()}
    run.update({h: r.to(device) for h, r in taught.items() if h not in rows})
    outputs = model(batch.images, run, trunk_scales(model, rows) if trunk == "positives" else None)
    losses: dict[str, dict[str, Tensor]] = {}
    for head, idx in rows.items():
        out = outputs[head].take(idx.to(device)) if head in taught else outputs[head]
        losses[head] = model.heads[head].loss(out, [batch.targets[i][head] for i in idx.tolist()])
    if taught:
        assert distiller is not None
        soft = distiller.targets(batch.images, taught)
        for head, idx in taught.items():
            out = outputs[head].take(idx.to(device)) if head in rows else outputs[head]
            terms = model.heads[head].distill_loss(out, soft[head])
            losses.setdefault(head, {}).update({k: v * distiller.weight for k, v in terms.items()})
    return losses


def trunk_scales(model: HydraDetector, rows: Mapping[str, Tensor]) -> dict[str, float]:
    """`train.balance.trunk: positives`: head -> weight of its gradient on the shared trunk, K x its share of the
    active detect heads' running positive counts (DetectHead.running_fg, needs model.loss_norm=running), so that
    on the shared features every object weighs about the same whichever head it belongs to, as in one merged head.
    Each head still divides its own loss by its own positives, so its own parameters' gradient, and the rule, are
    unchanged; only how hard it pulls on the trunk is. Image-level heads are not scaled. Empty (no scaling) until
    every active detect head has a count, or with fewer than two of them."""
    counts = {h: float(model.heads[h].running_fg) for h in rows if hasattr(model.heads[h], "running_fg")}
    if len(counts) < 2 or min(counts.values()) <= 0:
        return {}
    total = sum(counts.values())
    return {h: len(counts) * c / total for h, c in counts.items()}


class NonFiniteStep(Exception):
    """A step whose loss or gradient was NaN or inf, skipped: no optimizer step, every gradient cleared.
    `heads`: the heads whose loss or own gradient was non-finite (all active heads when only the trunk's was)."""

    def __init__(self, heads: list[str], what: str) -> None:
        super().__init__(f"non-finite {what} in head(s) {', '.join(heads)}")
        self.heads, self.what = heads, what


def train_step(
    model: HydraDetector,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    source_heads: Mapping[str, Iterable[str]],
    grad_clip: float = 0.0,
    balancer: Balancer | None = None,
    distiller: Distiller | None = None,
    trunk: str = "sum",
) -> dict[str, float]:
    """Returns each active head's total loss (unweighted). Heads without samples keep grad None and are not
    stepped; so do their balancing parameters. balancer None: the plain sum of the heads' losses.

    Raises NonFiniteStep, with nothing changed but the gradients (cleared), when a loss or gradient is NaN or inf:
    one bad batch must not write NaN into the weights, the optimizer moments and, through them, every later step."""
    losses = head_losses(model, batch, source_heads, distiller, trunk)
    totals = {head: sum(terms.values()) for head, terms in losses.items()}
    clear_grads(model)
    if balancer is not None:
        clear_grads(balancer)
    bad = [h for h, t in totals.items() if not torch.isfinite(t).all()]  # type: ignore[union-attr]
    if bad:
        raise NonFiniteStep(bad, "loss")
    if balancer is None:
        sum(totals.values()).backward()  # type: ignore[union-attr]
    else:
        balancer.backward(totals, model)  # type: ignore[arg-type]
        balancer.check_untouched(losses)
    check_untouched(model.heads, losses)
    bad = _nonfinite_gradients(model, list(losses), balancer)
    if bad:
        clear_grads(model)
        if balancer is not None:
            clear_grads(balancer)
        raise NonFiniteStep(bad, "gradient")
    if grad_clip > 0:
        clip_grads([model.backbone, model.neck], model.heads, losses, grad_clip)
    optimizer.step()
    return {head: float(total.detach()) for head, total in totals.items()}  # type: ignore[union-attr]


def _nonfinite_gradients(model: HydraDetector, active: list[str], balancer: Balancer | None) -> list[str]:
    """The active heads whose own (or balancing) gradient holds NaN or inf; all of them if only the trunk's does."""

    def finite(params: Iterable[torch.nn.Parameter]) -> bool:
        grads = [p.grad for p in params if p.grad is not None]
        # One fused reduction per group. The max-abs norm is non-finite exactly when an element is (an L2 norm
        # could also overflow on large but finite gradients).
        return not grads or bool(torch.stack(torch._foreach_norm(grads, float("inf"))).isfinite().all())

    extra = dict(balancer.named_parameters()) if balancer is not None else {}
    bad = [
        h
        for h in active
        if not finite(model.heads[h].parameters()) or not finite(p for n, p in extra.items() if n.endswith(f".{h}"))
    ]
    if not bad and not finite(p for m in (model.backbone, model.neck) for p in m.parameters()):
        bad = list(active)
    return bad

"""One optimisation step under the rule: batch -> per-head losses -> backward -> optimizer step."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from hydradet.data.dataset import Batch
from hydradet.model.detector import HydraDetector
from hydradet.train.balance import Balancer
from hydradet.train.distill import Distiller
from hydradet.train.distributed import Dist
from hydradet.train.precision import Precision, to_fp32
from hydradet.train.pseudo import pseudo_rows
from hydradet.train.rule import check_untouched, clear_grads, clip_grads, rows_per_head

TRUNK_POWER = {"positives": 1.0, "sqrt": 0.5}  # train.balance.trunk -> the power of trunk_scales' shares


def head_losses(
    model: HydraDetector,
    batch: Batch,
    source_heads: Mapping[str, Iterable[str]],
    distiller: Distiller | None = None,
    trunk: str = "sum",
    dist: Dist | None = None,
    precision: Precision | None = None,
    pseudo_weight: float | None = None,
) -> dict[str, dict[str, Tensor]]:
    """head -> its loss terms, computed over the samples whose source labels it and normalised by its own
    count of positives. Heads with no such sample are absent (they did not run).

    With a distiller (`train.distill_old_heads`), an old head also runs on the samples whose source does not
    label it, and gets `distill_*` terms for matching the teacher there (train/distill.py).

    pseudo_weight (`train.pseudo`, train/pseudo.py; None: off): a detect head also runs on the samples whose source
    does not label it but whose targets hold the head's teacher boxes, and gets `pseudo_*` terms there (x weight),
    under one normaliser with its labelled samples (their positives together). None: such targets cannot exist.

    trunk="positives" / "sqrt": each detect head's gradient into the shared backbone and neck is weighted by
    `trunk_scales`.

    dist (several processes, train/distributed.py): `batch` is this rank's share of the global batch; each term is
    this rank's part of the global loss (a local sum over the global normaliser), so summing the gradients over the
    ranks gives one process's gradient over the global batch. Every rank must call it (it all-reduces counts)."""
    dist = dist or Dist()
    device = batch.images.device
    rows = rows_per_head(batch.sources, source_heads)
    taught = distiller.rows(batch.sources, source_heads) if distiller is not None else {}
    pseudo = pseudo_rows(batch, source_heads) if pseudo_weight is not None else {}
    run = _rows_to_run(rows, taught | pseudo, len(batch.sources), device)
    # the heads that run, with their rows: labelled, plus teacher rows (in `rows`' order, then teacher-only heads)
    ran = {h: len(rows.get(h, ())) + len(pseudo.get(h, ())) for h in run if h in rows or h in pseudo}
    active = dist.active_heads(ran, model.heads) if dist.enabled else ran
    precision = precision or Precision()
    with precision.autocast():  # train.amp: the forward in bf16 / fp16, the losses below in fp32
        scales = trunk_scales(model, active, TRUNK_POWER[trunk]) if trunk in TRUNK_POWER else None
        outputs = model(batch.images, run, scales)
    if precision.dtype is not None:
        outputs = {h: to_fp32(o) for h, o in outputs.items()}

    split = {h for h in rows if h in taught or h in pseudo}  # heads that ran on labelled and teacher rows at once

    def part(head: str, idx: Tensor) -> Any:  # the head's outputs on these rows of the batch
        if head not in split:
            return outputs[head]
        ran_on = run[head]  # sorted (torch.unique), or None for every row
        return outputs[head].take(idx.to(device) if ran_on is None else torch.searchsorted(ran_on, idx.to(device)))

    losses: dict[str, dict[str, Tensor]] = {}
    for head, idx in rows.items():
        if head in pseudo or (dist.enabled and hasattr(model.heads[head], "loss_sums")):
            continue  # detect heads with teacher rows, or under several processes: below
        targets = [batch.targets[i][head] for i in idx.tolist()]
        losses[head] = model.heads[head].loss(part(head, idx), targets)
        if dist.enabled:  # an image-level head's mean over its local rows -> its part of the global mean
            share = len(idx) / active[head][0]  # type: ignore[index]
            losses[head] = {k: v * share for k, v in losses[head].items()}
    detect = [h for h in (active if dist.enabled else pseudo) if hasattr(model.heads[h], "loss_sums")]
    if detect:  # their sums over labelled and teacher rows, then over the ranks' positives (one process: its own)
        sums = {h: _detect_sums(model, batch, h, rows, pseudo, part, pseudo_weight or 0.0) for h in detect}
        totals = dist.sum([sums[h][1] for h in detect]) if dist.enabled else [sums[h][1] for h in detect]
        for head, total in zip(detect, totals, strict=True):
            norm = model.heads[head].normaliser(total)
            if sums[head][0]:
                losses[head] = {k: v / norm for k, v in sums[head][0].items()}
    if taught:
        assert distiller is not None
        soft = distiller.targets(batch.images, taught)
        for head, idx in taught.items():
            terms = model.heads[head].distill_loss(part(head, idx), soft[head])
            # several ranks: each rank's normalised distillation term counts 1/world (DDP's averaging)
            weight = distiller.weight / dist.world
            losses.setdefault(head, {}).update({k: v * weight for k, v in terms.items()})
    return losses


def _rows_to_run(
    rows: Mapping[str, Tensor], extra: Mapping[str, Tensor], batch_size: int, device: torch.device
) -> dict[str, Tensor | None]:
    """head -> the batch rows it runs on: its labelled rows, plus the rows a teacher covers (`extra`); None for all
    rows (then the outputs are split after). Heads in the order of `rows`, then the teacher-only ones."""
    run: dict[str, Tensor | None] = {}
    for head in [*rows, *(h for h in extra if h not in rows)]:
        if head not in extra or head not in rows:
            run[head] = (rows[head] if head in rows else extra[head]).to(device)
            continue
        union = torch.unique(torch.cat([rows[head], extra[head]]))
        run[head] = None if len(union) == batch_size else union.to(device)
    return run


def _detect_sums(
    model: HydraDetector,
    batch: Batch,
    head: str,
    rows: Mapping[str, Tensor],
    pseudo: Mapping[str, Tensor],
    part: Callable[[str, Tensor], Any],
    weight: float,
) -> tuple[dict[str, Tensor], float]:
    """A detect head's loss sums on this process's rows (labelled; teacher-labelled as `pseudo_*` x weight) and
    their positives together: the head's one normaliser covers both (absent rows: nothing, 0 positives)."""
    sums: dict[str, Tensor] = {}
    count = 0.0
    for idx, prefix, factor in ((rows.get(head), "", 1.0), (pseudo.get(head), "pseudo_", weight)):
        if idx is None:
            continue
        terms, n = model.heads[head].loss_sums(part(head, idx), [batch.targets[i][head] for i in idx.tolist()])
        sums |= {prefix + k: v * factor if factor != 1.0 else v for k, v in terms.items()}
        count += n
    return sums, count


def trunk_scales(model: HydraDetector, rows: Mapping[str, Tensor], power: float = 1.0) -> dict[str, float]:
    """`train.balance.trunk: positives`: head -> weight of its gradient on the shared trunk, K x its share of the
    active detect heads' running positive counts (DetectHead.running_fg, needs model.loss_norm=running), so that
    on the shared features every object weighs about the same whichever head it belongs to, as in one merged head.
    Each head still divides its own loss by its own positives, so its own parameters' gradient, and the rule, are
    unchanged; only how hard it pulls on the trunk is. Image-level heads are not scaled. Empty (no scaling) until
    every active detect head has a count, or with fewer than two of them.

    power: the shares are of count ** power; `trunk: sqrt` is 0.5, halfway (in log terms) between `positives` (1)
    and `sum` (0: every head 1), as temperature sampling is between proportional and equal."""
    counts = {h: float(model.heads[h].running_fg) for h in rows if hasattr(model.heads[h], "running_fg")}
    if len(counts) < 2 or min(counts.values()) <= 0:
        return {}
    counts = {h: c**power for h, c in counts.items()}
    total = sum(counts.values())
    return {h: len(counts) * c / total for h, c in counts.items()}


class NonFiniteStep(Exception):
    """A step whose loss or gradient was NaN or inf, skipped: no optimizer step, every gradient cleared, every
    buffer the forward moved (BatchNorm statistics, running positive counts) put back.
    `heads`: the heads whose loss or own gradient was non-finite (all active heads when only the trunk's was).
    `overflow`: an fp16 gradient overflow, which the GradScaler answers by lowering its scale (routine while it
    settles), not a diverging loss."""

    def __init__(self, heads: list[str], what: str, overflow: bool = False) -> None:
        super().__init__(f"non-finite {what} in head(s) {', '.join(heads)}")
        self.heads, self.what, self.overflow = heads, what, overflow


def train_step(
    model: HydraDetector,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    source_heads: Mapping[str, Iterable[str]],
    grad_clip: float = 0.0,
    balancer: Balancer | None = None,
    distiller: Distiller | None = None,
    trunk: str = "sum",
    dist: Dist | None = None,
    precision: Precision | None = None,
    pseudo_weight: float | None = None,
) -> dict[str, float]:
    """Returns each active head's total loss (unweighted). Heads without samples keep grad None and are not
    stepped; so do their balancing parameters. balancer None: the plain sum of the heads' losses.

    Raises NonFiniteStep, with nothing changed but the gradients (cleared), when a loss or gradient is NaN or inf:
    one bad batch must not write NaN into the weights, the optimizer moments and, through them, every later step.

    dist: several processes (train/distributed.py). The heads with samples on any rank are the step's heads on
    every rank; their gradients (and the trunk's) are summed over the ranks before the guard, clipping and the
    optimizer step, so all ranks take the same step; the returned losses are the global ones.

    precision (`train.amp`, train/precision.py): the forward under autocast; with fp16 the loss is scaled for
    backward and the gradients unscaled before the guard, so an overflow is a skipped step like any other.

    pseudo_weight (`train.pseudo`): heads also learn from their teacher's targets in the batch (head_losses)."""
    dist = dist or Dist()
    scaler = precision.scaler if precision is not None else None
    # The forward moves buffers (BatchNorm statistics, each detect head's running positive count): kept, so that
    # a skipped step can put them back; a NaN forward would otherwise leave NaN statistics for good.
    buffers = [b.detach().clone() for b in model.buffers()]
    losses = head_losses(model, batch, source_heads, distiller, trunk, dist, precision, pseudo_weight)
    totals = {head: sum(terms.values()) for head, terms in losses.items()}
    # The step's heads: those with a loss on any rank (one process: those with a loss here).
    # head -> (.., ranks holding a part of its loss); one process: the heads with a loss here, on 1 rank
    ranks = dist.active_heads(dict.fromkeys(losses, 1), model.heads) if dist.enabled else dict.fromkeys(losses, (1, 1))
    active = list(ranks)
    clear_grads(model)
    if balancer is not None:
        clear_grads(balancer)
    finite = {h: float(bool(torch.isfinite(totals[h]).all())) if h in totals else 1.0 for h in active}
    bad = [h for h, ok in zip(active, dist.sum(list(finite.values())), strict=True) if ok < dist.world]
    if bad:
        _restore(model, buffers)
        raise NonFiniteStep(bad, "loss")
    if totals:  # a rank may hold no sample of any head in a mixed batch; it still takes part in the sums
        if balancer is None:
            total = sum(totals.values())
            (scaler.scale(total) if scaler else total).backward()  # type: ignore[union-attr,arg-type]
        else:
            replicas = {h: r for h, (_, r) in ranks.items()}
            balancer.backward(totals, model, replicas, scaler.scale if scaler else None)  # type: ignore[arg-type]
            balancer.check_untouched(losses)
    check_untouched(model.heads, active)
    if dist.enabled:
        extra = [p for n, p in balancer.named_parameters() if n.rsplit(".", 1)[-1] in active] if balancer else []
        trunk_params = [p for m in (model.backbone, model.neck) for p in m.parameters()]
        dist.reduce_gradients(trunk_params + [p for h in active for p in model.heads[h].parameters()] + extra)
    if scaler is not None:
        scaler.unscale_(optimizer)
    bad = _nonfinite_gradients(model, active, balancer)
    if bad:
        if scaler is not None:
            scaler.update()  # an fp16 overflow: a lower scale next time; the optimizer is not called
        clear_grads(model)
        if balancer is not None:
            clear_grads(balancer)
        _restore(model, buffers)
        if scaler is not None:
            raise NonFiniteStep(bad, "gradient (fp16 overflow; the GradScaler lowers its scale)", overflow=True)
        raise NonFiniteStep(bad, "gradient")
    if grad_clip > 0:
        clip_grads([model.backbone, model.neck], model.heads, active, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if dist.enabled:
        values = [float(totals[h].detach()) if h in totals else 0.0 for h in active]  # type: ignore[union-attr]
        return dict(zip(active, dist.sum(values), strict=True))
    return {head: float(total.detach()) for head, total in totals.items()}  # type: ignore[union-attr]


def _restore(model: HydraDetector, buffers: list[Tensor]) -> None:
    with torch.no_grad():
        for b, saved in zip(model.buffers(), buffers, strict=True):
            b.copy_(saved)


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

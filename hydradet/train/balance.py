"""Loss balancing: how the heads' losses become one step (`train.balance`). One class per method.

`combine(losses)` gets the total loss of each head that ran in this step (only those: in `alternate` mode one
head) and returns the loss to back-propagate; `backward` does it (PCGrad overrides it, as it needs one gradient
per head). `end_epoch(mean_losses)` gets each head's mean loss over its own steps of the epoch; heads without a
step that epoch are absent. So a head's balancing state (its learned s_i, its loss history) changes only on its
own steps: s_i takes no part in a step without the head, keeps grad None and is skipped by the optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from hydradet.config.train_schema import BalanceConfig


class Balancer(nn.Module):
    """Parameters, if any, are named `<something>.<head>`; the optimizer trains them (`build_optimizer(extra=)`)."""

    def combine(self, losses: Mapping[str, Tensor], replicas: Mapping[str, int] | None = None) -> Tensor:
        """replicas (several processes): head -> how many ranks hold a part of its loss in this step; a term that
        does not scale with the samples (uncertainty's s_i / 2) is divided by it, so that the gradients summed
        over the ranks count it once."""
        raise NotImplementedError

    def backward(
        self,
        losses: Mapping[str, Tensor],
        model: nn.Module,
        replicas: Mapping[str, int] | None = None,
        scale: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        """scale: the fp16 GradScaler's `scale` (train/precision.py), applied to the combined loss."""
        loss = self.combine(losses, replicas)
        (scale(loss) if scale else loss).backward()

    def end_epoch(self, mean_losses: Mapping[str, float]) -> None:
        """Called after each epoch with the mean loss of every head that had steps in it."""

    def weights_now(self) -> dict[str, float]:
        """head -> the factor its loss is multiplied by in the combined loss now, for the methods whose weights
        move during training (MOVING_WEIGHTS: results.csv `balance/<head>`, TensorBoard); {} for the others
        (fixed: the config's constants; PCGrad: no per-head weight)."""
        return {}

    def check_untouched(self, active: Iterable[str]) -> None:
        """Raise if the balancing parameter of a head without samples in this step got a gradient."""
        active = set(active)
        for name, p in self.named_parameters():
            head = name.rsplit(".", 1)[-1]
            if head not in active and p.grad is not None:
                raise RuntimeError(f"head {head!r} had no samples in this step but its balancing {name} got a gradient")


def _weighted_sum(losses: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    # A weight of exactly 1 is not multiplied in, so that the default is bit-identical to a plain sum.
    return sum(loss if weights[h] == 1.0 else weights[h] * loss for h, loss in losses.items())  # type: ignore[return-value]


class Fixed(Balancer):
    """L = sum w_i L_i, weights from the config (1 for heads not named)."""

    def __init__(self, heads: Iterable[str], weights: Mapping[str, float]) -> None:
        super().__init__()
        self.weights = {h: float(weights.get(h, 1.0)) for h in heads}

    def combine(self, losses: Mapping[str, Tensor], replicas: Mapping[str, int] | None = None) -> Tensor:
        return _weighted_sum(losses, self.weights)


class Uncertainty(Balancer):
    """Kendall et al. 2018: L = sum_i L_i exp(-s_i) / 2 + s_i / 2, s_i = log variance of head i, learned."""

    def __init__(self, heads: Iterable[str]) -> None:
        super().__init__()
        self.log_var = nn.ParameterDict({h: nn.Parameter(torch.zeros(())) for h in heads})

    def combine(self, losses: Mapping[str, Tensor], replicas: Mapping[str, int] | None = None) -> Tensor:
        s, n = self.log_var, replicas or {}
        reg = {h: s[h] / 2 if n.get(h, 1) == 1 else s[h] / (2 * n[h]) for h in losses}
        return sum(loss * torch.exp(-s[h]) / 2 + reg[h] for h, loss in losses.items())  # type: ignore[return-value]

    def weights_now(self) -> dict[str, float]:
        """exp(-s_i) / 2: what L_i is multiplied by (0.5 at the start, s_i = 0; it grows as s_i falls)."""
        return {h: math.exp(-float(s.detach())) / 2 for h, s in self.log_var.items()}


class DWA(Balancer):
    """Liu et al. 2019, Dynamic Weight Average: w_i = K exp(r_i / T) / sum_j exp(r_j / T), with
    r_i = L_i(t-1) / L_i(t-2) from epoch-mean losses. A head with fewer than two epochs of history has r_i = 1,
    so all weights are 1 for the first two epochs."""

    def __init__(self, heads: Iterable[str], temperature: float) -> None:
        super().__init__()
        self.temperature = temperature
        self.history: dict[str, list[float]] = {h: [] for h in heads}
        self.weights = dict.fromkeys(self.history, 1.0)

    def combine(self, losses: Mapping[str, Tensor], replicas: Mapping[str, int] | None = None) -> Tensor:
        return _weighted_sum(losses, self.weights)

    def weights_now(self) -> dict[str, float]:
        return dict(self.weights)

    def end_epoch(self, mean_losses: Mapping[str, float]) -> None:
        for h, v in mean_losses.items():
            self.history[h].append(float(v))
        self.weights = dwa_weights(self.history, self.temperature)

    # The loss history is training state: a resumed run (train/checkpoint.py) needs it in the balancer's state_dict.
    def get_extra_state(self) -> dict[str, Any]:
        return {"history": self.history, "weights": self.weights}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.history = {h: list(v) for h, v in state["history"].items()}
        self.weights = dict(state["weights"])


def dwa_weights(history: Mapping[str, list[float]], temperature: float) -> dict[str, float]:
    ratios = {h: v[-1] / v[-2] if len(v) >= 2 and v[-2] > 0 else 1.0 for h, v in history.items()}
    if all(len(v) < 2 for v in history.values()):
        return dict.fromkeys(history, 1.0)
    top = max(ratios.values())
    e = {h: math.exp((r - top) / temperature) for h, r in ratios.items()}
    z = sum(e.values())
    return {h: len(e) * x / z for h, x in e.items()}


class PCGrad(Balancer):
    """Yu et al. 2020: on the shared parameters (backbone + neck), each head's gradient g_i loses its component
    along every other head's g_j that it conflicts with (g_i . g_j < 0): g_i -= (g_i . g_j) / |g_j|^2 g_j, the
    other heads taken in config order (the paper shuffles them). The shared gradient is the sum of the projected
    g_i; each head's own parameters get exactly their own loss's gradient. Needs every head in each step."""

    def combine(self, losses: Mapping[str, Tensor], replicas: Mapping[str, int] | None = None) -> Tensor:
        return sum(losses.values())  # type: ignore[return-value]

    def backward(
        self,
        losses: Mapping[str, Tensor],
        model: nn.Module,
        replicas: Mapping[str, int] | None = None,
        scale: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if scale is not None:  # the projection is scale-invariant: every head's loss scaled alike
            losses = {h: scale(v) for h, v in losses.items()}
        shared = [p for m in (model.backbone, model.neck) for p in m.parameters() if p.requires_grad]
        heads = list(losses)
        per_head: list[tuple[Tensor | None, ...]] = []
        for k, h in enumerate(heads):
            own = [p for p in model.heads[h].parameters() if p.requires_grad]
            grads = torch.autograd.grad(losses[h], shared + own, retain_graph=k < len(heads) - 1, allow_unused=True)
            for p, g in zip(own, grads[len(shared) :], strict=True):
                p.grad = g
            per_head.append(grads[: len(shared)])
        used = [i for i in range(len(shared)) if any(g[i] is not None for g in per_head)]
        if not used:
            return
        flat = [
            torch.cat([(g[i] if g[i] is not None else torch.zeros_like(shared[i])).flatten() for i in used])
            for g in per_head
        ]
        total = torch.stack(project_conflicts(flat)).sum(0)
        offset = 0
        for i in used:
            n = shared[i].numel()
            shared[i].grad = total[offset : offset + n].view_as(shared[i]).clone()
            offset += n


def project_conflicts(grads: list[Tensor]) -> list[Tensor]:
    """PCGrad's projection: each gradient minus its components against the gradients it conflicts with."""
    out = []
    for i, g in enumerate(grads):
        g = g.clone()
        for j, other in enumerate(grads):
            if j == i:
                continue
            dot = torch.dot(g, other)
            if dot < 0:
                g = g - dot / torch.dot(other, other) * other
        out.append(g)
    return out


# The methods whose per-head weights move during training: logged per epoch (Balancer.weights_now).
MOVING_WEIGHTS = ("uncertainty", "dwa")


def build_balancer(cfg: BalanceConfig, heads: Iterable[str]) -> Balancer:
    heads = list(heads)
    if cfg.method == "uncertainty":
        return Uncertainty(heads)
    if cfg.method == "dwa":
        return DWA(heads, cfg.temperature)
    if cfg.method == "pcgrad":
        return PCGrad()
    return Fixed(heads, cfg.weights)

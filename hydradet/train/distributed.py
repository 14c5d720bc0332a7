"""Several processes (torchrun), one training run, the rule kept: the distributed details in one place.

Why not DistributedDataParallel: DDP averages every parameter's gradient over the processes, so a head that ran
on one rank reaches the others as a fraction of that rank's gradient, and with `find_unused_parameters` it cannot
tell "no rank used this head" from "some did" without a second graph traversal per step (pytorch#41101). hydradet
knows which heads each rank ran, so it reduces explicitly, after backward, in `reduce_gradients`:

1. The ranks agree on the step's heads: `active_heads` sums every head's row count over the ranks. A head with
   rows on no rank is left out everywhere: its gradients stay None, the optimizer skips it (no step, no moments,
   no weight decay), the EMA does not move it. The rule, as in one process.
2. Every loss is a local sum over a global normaliser (`train/step.py`): a detect head divides by its positives
   summed over all ranks (so its running count moves identically everywhere), an image-level head by its rows
   summed over all ranks. The gradients are then SUMMED over ranks, which makes one step equal one process over
   the global batch (`train.batch` is the global batch; each rank loads `batch / world` of it).
3. A head active on some ranks only: on the others its gradient is None; it is filled with zeros before the sum,
   so every rank ends with the same, correctly summed gradient.
4. BatchNorm buffers are broadcast from rank 0 after each step (DDP broadcasts them before each forward): the ranks
   stay identical, parameters and buffers, so any rank's copy is the model. Only rank 0 writes files.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import Tensor, nn

from hydradet.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    """This process's place in the run. `Dist()` is a single process, and every method is then a no-op."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that logs and writes the run's files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def sum(self, values: Sequence[float]) -> list[float]:
        """Each value summed over the ranks (float64 on the CPU for gloo, or on this rank's GPU for NCCL)."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor(list(values), dtype=torch.float64, device=self._device())
        torch_dist.all_reduce(t)
        return t.cpu().tolist()

    def active_heads(self, local_rows: Mapping[str, int], heads: Iterable[str]) -> dict[str, tuple[int, int]]:
        """head -> (rows over all ranks, ranks with rows) for the heads with rows on some rank, in `heads`' order."""
        heads = list(heads)
        n = [float(local_rows.get(h, 0)) for h in heads]
        totals = self.sum(n + [float(v > 0) for v in n])
        return {h: (int(totals[i]), int(totals[len(heads) + i])) for i, h in enumerate(heads) if totals[i] > 0}

    def reduce_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Sum the gradients of `params` over the ranks, one flat all-reduce; a missing gradient counts as zero."""
        if not self.enabled:
            return
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])  # type: ignore[union-attr]
        torch_dist.all_reduce(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p))  # type: ignore[union-attr]
            offset += n

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm statistics, running counts) on every rank."""
        if not self.enabled:
            return
        for b in module.buffers():
            torch_dist.broadcast(b, 0)

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (pickled by torch.distributed; only for values this run made itself)."""
        if not self.enabled:
            return obj
        box = [obj]
        torch_dist.broadcast_object_list(box, 0)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank (e.g. an evaluation's per-image results)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        torch_dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def _device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if torch_dist.get_backend() == "nccl" else torch.device("cpu")


def from_environment(device: torch.device) -> Dist:
    """The Dist torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK); initialises the process group once.
    Backend: NCCL on CUDA, gloo on the CPU. Without torchrun's variables: a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)  # NCCL's object collectives use the current device
    if not torch_dist.is_initialized():
        # Rank 0 alone writes checkpoints and pictures while the others wait at the next collective: a generous
        # timeout, so that a slow save on a shared filesystem is not taken for a dead rank.
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch_dist.init_process_group(backend, timeout=datetime.timedelta(hours=1))
    return Dist(rank, world, local_rank)


def device_from(name: str) -> torch.device:
    """`train.device` as a torch device: auto is cuda when available; ConfigError for a GPU that is not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name} was asked for but no CUDA device is available; use cpu or auto")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"train.device: {name}, but this machine has {torch.cuda.device_count()} GPU(s) (cuda:0..)")
    return device


def rank_device(device: torch.device, dist: Dist) -> torch.device:
    """On CUDA each process of a machine takes its own GPU (torchrun's LOCAL_RANK)."""
    return torch.device("cuda", dist.local_rank) if device.type == "cuda" else device


def check_distributable(cfg: Any, dist: Dist, device: torch.device) -> None:
    """ConfigError, before any work, for what several processes cannot do (yet): names the key and the fix."""
    if cfg.model.backbone_norm == "syncbatch" and device.type != "cuda":
        raise ConfigError(
            "model.backbone_norm: syncbatch needs GPU processes (torch's SyncBatchNorm has no CPU version); "
            "use batch or frozen on the CPU"
        )
    if cfg.train.batch % dist.world:
        raise ConfigError(
            f"train.batch: {cfg.train.batch} is the global batch and must split evenly over {dist.world} processes; "
            f"use a multiple of {dist.world}"
        )
    if cfg.train.balance.method == "pcgrad":
        raise ConfigError(
            "train.balance.method: pcgrad projects each head's whole-batch gradient and is not distributed yet; "
            "use one process, or fixed / uncertainty / dwa"
        )


def tensor_sum(values: Mapping[str, Tensor], dist: Dist) -> dict[str, float]:
    """Per-head values (e.g. a step's losses, each a local part of the global loss) summed over the ranks."""
    keys = list(values)
    return dict(zip(keys, dist.sum([float(values[k].detach()) for k in keys]), strict=True))

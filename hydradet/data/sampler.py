"""Which samples make up each batch: `alternate` (a batch from one source) or `mixed` (from all sources).

Indices refer to a ConcatDataset of the sources' train splits, in the order given. Each source is read as
its own endless stream of reshuffled passes, so a small source repeats instead of starving its heads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from hydradet.config.train_schema import SamplingConfig, TemperatureRatios


def source_probabilities(sizes: Sequence[int], ratios: SamplingConfig | str | TemperatureRatios) -> np.ndarray:
    """p_s proportional to n_s^(1/T): T=1 is `proportional` (by size), T=inf is `equal`."""
    r = ratios.ratios if isinstance(ratios, SamplingConfig) else ratios
    n = np.asarray(sizes, np.float64)
    if r == "equal":
        w = (n > 0).astype(np.float64)
    elif r == "proportional":
        w = n
    else:
        w = np.where(n > 0, n ** (1.0 / r.temperature), 0.0)
    return w / w.sum()


class SourceBatchSampler(Sampler[list[int]]):
    """`steps` batches of indices per pass (`__iter__`), each source read as its own endless stream of reshuffled
    permutations. The state (random generator, each stream's permutation and position, the round-robin credit,
    batches drawn so far) is plain data: `state_dict` / `load_state_dict` make a resumed run draw the same batches."""

    def __init__(self, sizes: Sequence[int], batch: int, sampling: SamplingConfig, steps: int, seed: int = 0) -> None:
        self.sizes = list(sizes)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int)
        self.batch, self.mode, self.steps = batch, sampling.mode, steps
        self.p = source_probabilities(self.sizes, sampling)
        self.rng = np.random.default_rng(seed)
        self._perms: list[np.ndarray | None] = [None] * len(self.sizes)
        self._pos = [0] * len(self.sizes)
        self._credit = np.zeros(len(self.sizes))
        self.drawn = 0  # batches drawn since the start of training: numbers each batch (data/seeding.py)
        self._skip = 0

    def __len__(self) -> int:
        return self.steps - self._skip

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, 0
        for k in range(self.steps):
            counts = self._alternate_counts() if self.mode == "alternate" else self._mixed_counts()
            batch = [int(self.offsets[s] + self._next(s)) for s, n in enumerate(counts) for _ in range(n)]
            self.drawn += 1
            if k >= skip:
                yield batch

    def skip_next(self, batches: int) -> None:
        """The next pass draws its first `batches` batches without yielding them (a resumed epoch's done steps)."""
        self._skip = batches

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "perms": [None if p is None else p.tolist() for p in self._perms],
            "pos": list(self._pos),
            "credit": self._credit.tolist(),
            "drawn": self.drawn,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self._perms = [None if p is None else np.asarray(p, dtype=np.int64) for p in state["perms"]]
        self._pos = list(state["pos"])
        self._credit = np.asarray(state["credit"], dtype=np.float64)
        self.drawn = int(state["drawn"])

    def _next(self, s: int) -> int:
        perm = self._perms[s]
        if perm is None or self._pos[s] == len(perm):
            perm = self._perms[s] = self.rng.permutation(self.sizes[s])
            self._pos[s] = 0
        self._pos[s] += 1
        return int(perm[self._pos[s] - 1])

    def _alternate_counts(self) -> np.ndarray:
        # Smooth weighted round robin: batches per source follow p exactly over any window, in a
        # deterministic interleaving (no long runs of one source, unlike independent draws).
        self._credit += self.p
        s = int(np.argmax(self._credit))
        self._credit[s] -= 1.0
        counts = np.zeros(len(self.sizes), int)
        counts[s] = self.batch
        return counts

    def _mixed_counts(self) -> np.ndarray:
        # Each source gets floor(p * batch) places; the remaining places go by the same weighted round robin
        # over the fractional parts, so every source with p * batch >= 1 appears in every batch.
        exact = self.p * self.batch
        counts = np.floor(exact).astype(int)
        frac = exact - counts
        for _ in range(self.batch - counts.sum()):
            self._credit += frac
            s = int(np.argmax(self._credit))
            self._credit[s] -= frac.sum()
            counts[s] += 1
        return counts

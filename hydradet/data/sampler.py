"""Which samples make up each batch: `alternate` (a batch from one source) or `mixed` (from all sources).

Indices refer to a ConcatDataset of the sources' train splits, in the order given. Each source is read as
its own endless stream of reshuffled passes, so a small source repeats instead of starving its heads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from hydradet.config.schema import SamplingConfig, TemperatureRatios


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
    def __init__(self, sizes: Sequence[int], batch: int, sampling: SamplingConfig, steps: int, seed: int = 0) -> None:
        self.sizes = list(sizes)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int)
        self.batch, self.mode, self.steps = batch, sampling.mode, steps
        self.p = source_probabilities(self.sizes, sampling)
        self.rng = np.random.default_rng(seed)
        self._streams = [self._stream(s) for s in range(len(self.sizes))]
        self._credit = np.zeros(len(self.sizes))

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            counts = self._alternate_counts() if self.mode == "alternate" else self._mixed_counts()
            yield [int(self.offsets[s] + next(self._streams[s])) for s, k in enumerate(counts) for _ in range(k)]

    def _stream(self, s: int) -> Iterator[int]:
        while self.sizes[s]:
            yield from self.rng.permutation(self.sizes[s])

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

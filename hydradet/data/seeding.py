"""Per-sample augmentation seeds: a training sample's random augmentation is a function of (train.seed, the batch's
number, the sample's place in it), not of which loader process made it or what that process made before.

Why: with loader workers, torch gives each worker its own random stream, and what a worker draws for a sample
depends on every sample it made before. A run killed mid-epoch and resumed would then see other crops, flips and
mosaics than the uninterrupted run, and there is no way to save the workers' streams from the main process. Seeding
each sample from its batch number makes the data a pure function of the sampler's state, which the checkpoint keeps
(train/checkpoint.py), for any `train.workers`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from hydradet.data.dataset import Sample
from hydradet.data.sampler import SourceBatchSampler

_MASK = (1 << 63) - 1


def sample_seed(seed: int, batch_number: int, place: int) -> int:
    """A 63-bit seed for the sample at `place` in batch `batch_number` (0-based, counted from the run's start).
    A splitmix64-style mix (Steele et al. 2014), so that neighbouring numbers give unrelated torch streams."""
    z = (seed * 0x9E3779B97F4A7C15 + batch_number * 0xBF58476D1CE4E5B9 + place * 0x94D049BB133111EB) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


class SeededBatches(Sampler[list[tuple[int, int]]]):
    """The batches of a `SourceBatchSampler`, each index paired with its sample's augmentation seed.

    With several processes (rank, world), each yields its share of every global batch: every world-th sample from
    its rank on, so each rank gets part of every source of a mixed batch, and in alternate mode the same source as
    the others. Seeds number samples by their place in the global batch: the data does not depend on the world."""

    def __init__(self, batches: SourceBatchSampler, seed: int, rank: int = 0, world: int = 1) -> None:
        self.batches, self.seed, self.rank, self.world = batches, seed, rank, world

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches:
            number = self.batches.drawn - 1  # drawn counts this batch already
            yield [(i, sample_seed(self.seed, number, k)) for k, i in enumerate(batch)][self.rank :: self.world]


class SeededDataset(Dataset[Sample]):
    """`dataset[(index, seed)]`: the sample made with torch's random generator seeded to `seed`. The caller's
    generator state is restored afterwards (`torch.random.fork_rng`), so loading in the main process
    (`train.workers=0`) leaves the training loop's random stream untouched."""

    def __init__(self, dataset: Dataset[Sample]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Sample:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]

"""Batches follow the sampling mode and the source ratios."""

from __future__ import annotations

import numpy as np
import pytest

from hydradet.config.train_schema import SamplingConfig, TemperatureRatios
from hydradet.data.sampler import SourceBatchSampler, source_probabilities

SIZES = [300, 100]  # source 0 is three times source 1


def _source_of(index: int) -> int:
    return 0 if index < SIZES[0] else 1


@pytest.mark.parametrize(
    ("ratios", "expected"),
    [("proportional", [0.75, 0.25]), ("equal", [0.5, 0.5]), (TemperatureRatios(temperature=2), [3**0.5, 1])],
)
def test_source_probabilities(ratios, expected):
    p = source_probabilities(SIZES, ratios)
    np.testing.assert_allclose(p, np.array(expected) / np.sum(expected))


def test_alternate_batches_come_from_one_source_each_in_the_configured_ratio():
    sampler = SourceBatchSampler(SIZES, 8, SamplingConfig(mode="alternate", ratios="proportional"), steps=40)
    per_batch = [{_source_of(i) for i in batch} for batch in sampler]
    assert all(len(s) == 1 for s in per_batch)
    assert sum(s == {0} for s in per_batch) == 30  # exactly 3:1 over 40 batches


def test_mixed_batches_draw_from_every_source_in_the_configured_ratio():
    sampler = SourceBatchSampler(SIZES, 8, SamplingConfig(mode="mixed", ratios="equal"), steps=10)
    for batch in sampler:
        assert len(batch) == 8
        assert sum(_source_of(i) == 0 for i in batch) == 4


def test_each_source_is_read_without_repeats_until_exhausted():
    sampler = SourceBatchSampler(SIZES, 10, SamplingConfig(mode="mixed", ratios="equal"), steps=20)
    small = [i for batch in sampler for i in batch if _source_of(i) == 1]
    assert sorted(small[:100]) == list(range(300, 400))  # one full pass of the small source, then it repeats

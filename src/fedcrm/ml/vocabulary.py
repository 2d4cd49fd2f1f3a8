"""Learned vocabularies: a category's levels from the federation's noised counts.

A contract may leave a category's vocabulary "learned" (an export's own plan names, shop
sections, occupations). Its levels are what the federation holds often enough, and the only
way to find out without pooling is for each node to say which of its values are frequent.
That release names values, so it is a DP release of its own, made with the statistics:

- each customer holds at most one value per learned feature, so adding or removing one
  changes at most F counts (F learned features) by one: L2 sensitivity √F;
- every count gets Gaussian noise of σ·√F (σ: the statistics' noise multiplier, OS entropy);
- a value is named only when its *noised* count reaches the node's threshold
  `1 + Z_SELECT·σ·√F` (and the contract's `min_count`). A value only one customer holds
  is named with probability Φ̄(Z_SELECT) ≈ 1.3e-12 per value: the selection adds at most
  F·1.3e-12 to δ, far below any δ a partner states (the ledger's δ is unchanged; see
  Korolova et al. 2009 and Gopi et al. 2020 on DP set union by thresholded noisy counts).

The counts and the column sums are two Gaussian mechanisms of multiplier σ on the same
rows: together one Gaussian mechanism of multiplier σ/√2, which is what the node charges.

The coordinator adds the partners' noised counts and keeps the values whose sum reaches
`min_count`, at most `MAX_LEVELS` per feature (the most frequent); every other value
becomes 'other' on every node.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, Field

from fedcrm.data.layout import MAX_LEVELS, FeatureLayout
from fedcrm.privacy.noise import os_normal

Z_SELECT = 7.0  # noised-count threshold in noise standard deviations above one customer


class VocabularyRelease(BaseModel):
    """What one node names: per learned feature, its frequent values and their noised counts."""

    levels: dict[str, list[str]] = Field(default_factory=dict)
    counts: dict[str, list[float]] = Field(default_factory=dict)

    def flat_counts(self) -> list[float]:
        return [c for name in sorted(self.levels) for c in self.counts[name]]

    @classmethod
    def from_wire(cls, levels: dict[str, list[str]], flat: list[float]) -> VocabularyRelease:
        """Levels (a config record) and their counts (one list, features in name order)."""
        counts, i = {}, 0
        for name in sorted(levels):
            counts[name] = list(flat[i:i + len(levels[name])])
            i += len(levels[name])
        if i != len(flat):
            raise ValueError(f"{len(flat)} vocabulary counts for {i} levels")
        return cls(levels={k: list(v) for k, v in levels.items()}, counts=counts)


def count_noise(noise_multiplier: float, features: int) -> float:
    """Standard deviation of the noise on each count (sensitivity √F)."""
    return noise_multiplier * math.sqrt(max(features, 1))


def node_threshold(noise_multiplier: float, features: int, min_count: int) -> float:
    """The noised count a value must reach before a node names it."""
    if noise_multiplier <= 0:
        return float(min_count)
    return max(float(min_count), 1.0 + Z_SELECT * count_noise(noise_multiplier, features))


def noised_vocabulary(counts: dict[str, dict[str, int]], layout: FeatureLayout,
                      noise_multiplier: float) -> VocabularyRelease:
    """The node's release: every value's count noised (σ·√F), only those at or above the
    threshold named, the `MAX_LEVELS` largest per feature. `noise_multiplier` 0: exact
    counts, for partners whose policy releases exact statistics."""
    blocks = {b.name: b for b in layout.unresolved()}
    features = len(blocks)
    std = count_noise(noise_multiplier, features)
    out = VocabularyRelease()
    for name in sorted(blocks):
        values = counts.get(name, {})
        keys = sorted(values)
        raw = np.asarray([values[k] for k in keys], dtype=np.float64)
        noised = raw + os_normal(std, raw.shape) if noise_multiplier > 0 and len(raw) else raw
        tau = node_threshold(noise_multiplier, features, blocks[name].min_count or 1)
        kept = sorted(((float(n), k) for k, n in zip(keys, noised) if n >= tau), reverse=True)[:MAX_LEVELS]
        out.levels[name] = [k for _, k in kept]
        out.counts[name] = [n for n, _ in kept]
    return out


def combine_vocabularies(releases: list[VocabularyRelease], layout: FeatureLayout) -> dict[str, list[str]]:
    """The federation's levels per learned feature: summed noised counts at or above the
    contract's `min_count`, the `MAX_LEVELS` most frequent."""
    out: dict[str, list[str]] = {}
    for block in layout.unresolved():
        total: dict[str, float] = {}
        for r in releases:
            for value, n in zip(r.levels.get(block.name, []), r.counts.get(block.name, [])):
                total[value] = total.get(value, 0.0) + n
        kept = sorted(((n, v) for v, n in total.items() if n >= (block.min_count or 1)), reverse=True)[:MAX_LEVELS]
        out[block.name] = sorted(v for _, v in kept)
    return out

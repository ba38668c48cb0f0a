"""The paired bootstrap: the one interval estimate the report and the gate share.

Pure Python (no numpy) so the gate can run in the operator. Percentile bootstrap of
mean(a - b), resampling questions with replacement; paired, so each resample draws the same
questions for both systems and what varies is the per-question difference. A fixed seed gives
the same interval, so the same report always gets the same verdict.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """Bootstrap estimate of mean(a - b): the mean and a two-sided `confidence` interval."""

    mean: float
    low: float
    high: float
    confidence: float
    resamples: int


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """The `confidence` interval of mean(a - b) over questions."""
    if len(a) != len(b) or not a:
        raise ValueError(f"need two equally long, non-empty score lists (got {len(a)}, {len(b)})")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (got {confidence})")
    if resamples < 1:
        raise ValueError(f"resamples must be positive (got {resamples})")
    diff = tuple(float(x) - float(y) for x, y in zip(a, b, strict=True))
    return _bootstrap(diff, confidence, resamples, seed)


@lru_cache(maxsize=256)
def _bootstrap(diff: tuple[float, ...], confidence: float, resamples: int, seed: int) -> Interval:
    rng = random.Random(seed)
    n = len(diff)
    means = sorted(math.fsum(rng.choices(diff, k=n)) / n for _ in range(resamples))
    tail = (1.0 - confidence) / 2
    return Interval(
        mean=math.fsum(diff) / n,
        low=percentile(means, tail),
        high=percentile(means, 1.0 - tail),
        confidence=confidence,
        resamples=resamples,
    )


def percentile(ordered: Sequence[float], q: float) -> float:
    """The `q` quantile (0-1) of sorted values: linear interpolation between closest ranks
    (numpy's default method)."""
    position = q * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)

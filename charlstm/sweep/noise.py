"""How much of a sweep's differences is noise: the seed-to-seed spread and the validation text's.

A run's validation perplexity is exp(mean NLL) over the validation characters (the assignment
scores the first 1000). Two things move it that the hyperparameters do not:

- the seed: the same point trained again with another seed. Measured by the spread over seeds,
  a 95% Student t interval; points are compared seed by seed (seed s of one point against seed s
  of the other), so what the seeds share cancels.
- the validation text: 1000 characters are a small sample of the text the model is meant to
  predict. A circular block bootstrap resamples the text in blocks (BLOCK_CHARS characters, so
  that neighbouring characters stay together) and recomputes every perplexity on each resample;
  the spread of the resampled values is this noise, a 95% normal interval. The draws depend
  only on the text's length, so every run scored on the same text is resampled alike and a
  difference between runs is resampled as a difference (paired).

An Estimate is a weighted sum of point perplexities (one point, a difference of two, an effect
averaged over a grid) with both intervals; it is decided by the wider of the two.
"""

import base64
import math
import statistics
from dataclasses import dataclass

import numpy as np

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
       2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
       2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
Z95 = 1.959964
# Blocks of about ten words: the loss of a character depends mostly on the word it is in and the
# few before it, so blocks this long keep most of that dependence inside a block.
BLOCK_CHARS = 50
REPLICATES = 2000
BOOTSTRAP_SEED = 0  # fixed, so that a report rewritten from the same trials is the same
MAX_SEEDS = 100_000


def t95(df: float) -> float:
    if df < 1:
        raise ValueError("a t interval needs at least one degree of freedom")
    if df <= 30:
        return T95[int(df) - 1]
    return Z95 + (Z95 ** 3 + Z95) / (4 * df)  # Cornish-Fisher: the t quantile's first correction


def summarize(runs: list) -> dict:
    """Mean, standard error and 95% t interval of per-seed values (no interval for one value)."""
    n = len(runs)
    mean = statistics.fmean(runs)
    if n < 2:
        return {"n": n, "mean": mean, "se": None, "low": None, "high": None, "runs": list(runs)}
    se = statistics.stdev(runs) / math.sqrt(n)
    half = t95(n - 1) * se
    return {"n": n, "mean": mean, "se": se, "low": mean - half, "high": mean + half,
            "runs": list(runs)}


def prediction_interval(runs: list) -> tuple[float, float] | None:
    """Where one more run of the same point falls, 95%: mean +- t * sd * sqrt(1 + 1/n). The
    interval to hold a single run from elsewhere against."""
    n = len(runs)
    if n < 2:
        return None
    mean = statistics.fmean(runs)
    half = t95(n - 1) * statistics.stdev(runs) * math.sqrt(1 + 1 / n)
    return mean - half, mean + half


def pack_losses(losses) -> str:
    """Per-character losses as stored with a trial: little-endian float32, base64 (a string, so
    that reading a trial does not parse a thousand numbers)."""
    return base64.b64encode(np.asarray(losses, dtype="<f4").tobytes()).decode("ascii")


def unpack_losses(stored) -> np.ndarray:
    """The losses that pack_losses stored (a plain list is accepted as well)."""
    if isinstance(stored, str):
        return np.frombuffer(base64.b64decode(stored), dtype="<f4").astype(np.float64)
    return np.asarray(stored, dtype=np.float64)


def block_chars(n: int) -> int:
    """The block length for a text of n characters: BLOCK_CHARS, or a tenth of a shorter text."""
    return max(1, min(BLOCK_CHARS, n // 10))


_starts_cache: dict = {}


def _starts(n: int, replicates: int) -> np.ndarray:
    key = (n, replicates)
    if key not in _starts_cache:
        block = block_chars(n)
        rng = np.random.default_rng(BOOTSTRAP_SEED + n)
        _starts_cache[key] = rng.integers(0, n, size=(replicates, math.ceil(n / block)))
    return _starts_cache[key]


def replicate_means(losses, replicates: int = REPLICATES) -> np.ndarray:
    """Mean loss of each bootstrap resample of the validation text: ceil(n / block) circular
    blocks drawn with replacement, the same draws for every text of n characters."""
    losses = np.asarray(losses, dtype=np.float64)
    n = len(losses)
    if n == 0:
        raise ValueError("no per-character losses to resample")
    block = block_chars(n)
    wrapped = np.concatenate([losses, losses[:block - 1]])
    sums = np.concatenate([[0.0], np.cumsum(wrapped)])
    block_sums = sums[block:block + n] - sums[:n]
    starts = _starts(n, replicates)
    return block_sums[starts].sum(axis=1) / (starts.shape[1] * block)


@dataclass
class Estimate:
    """A weighted sum of point perplexities, averaged over the seeds all its points share."""

    value: float
    seeds: int
    seed_se: float | None = None   # standard error over seeds (None with one seed)
    text_se: float | None = None   # bootstrap standard error over the validation text
    chars: int | None = None       # validation characters per run

    @property
    def seed_half(self) -> float | None:
        return None if self.seed_se is None else t95(self.seeds - 1) * self.seed_se

    @property
    def text_half(self) -> float | None:
        return None if self.text_se is None else Z95 * self.text_se

    @property
    def half(self) -> float | None:
        """The half-width that decides: the wider of the two intervals."""
        halves = [h for h in (self.seed_half, self.text_half) if h is not None]
        return max(halves) if halves else None

    @property
    def decided_by(self) -> str | None:
        if self.half is None:
            return None
        return "seeds" if self.half == self.seed_half else "validation text"

    @property
    def low(self):
        return None if self.half is None else self.value - self.half

    @property
    def high(self):
        return None if self.half is None else self.value + self.half

    @property
    def sign(self) -> int:
        """-1 or +1 when the interval lies below or above zero, 0 when it includes zero (or
        there is no interval)."""
        if self.half is None:
            return 0
        return -1 if self.high < 0 else (1 if self.low > 0 else 0)

    def seeds_needed(self) -> int | None:
        """Seeds for a difference of this size to clear the seed interval (None: unknown with
        one seed, or no finite number: a zero difference, or more than MAX_SEEDS)."""
        if self.seed_se is None or self.value == 0:
            return None
        sd = self.seed_se * math.sqrt(self.seeds)
        if sd == 0:
            return 2
        # t * sd / sqrt(m) < |value| first holds near m = (z sd / value)^2; step up from below.
        m = max(2, int((Z95 * sd / abs(self.value)) ** 2) - 2)
        while m <= MAX_SEEDS:
            if t95(m - 1) * sd / math.sqrt(m) < abs(self.value):
                return m
            m += 1
        return None

    def chars_needed(self) -> int | None:
        """Validation characters for a difference of this size to clear the text interval: the
        bootstrap's standard error shrinks as 1 / sqrt(characters)."""
        if self.text_se is None or self.value == 0 or self.chars is None:
            return None
        return math.ceil(self.chars * (Z95 * self.text_se / abs(self.value)) ** 2)


class Cells:
    """Runs grouped by point: each point's per-seed perplexity and, where the run stored them,
    its per-character validation losses."""

    def __init__(self, replicates: int = REPLICATES):
        self.replicates = replicates
        self.runs: dict = {}  # point -> {seed: (perplexity, losses or None)}
        self._replicates: dict = {}

    def add(self, point, seed: int, perplexity: float, losses=None) -> None:
        self.runs.setdefault(point, {})[seed] = (
            float(perplexity), None if losses is None else np.asarray(losses, dtype=np.float64))

    def __contains__(self, point) -> bool:
        return point in self.runs

    def seeds(self, point) -> set:
        return set(self.runs.get(point, {}))

    def perplexities(self, point) -> list:
        return [p for _, (p, _) in sorted(self.runs.get(point, {}).items())]

    def _resampled(self, point, seed) -> np.ndarray:
        key = (point, seed)
        if key not in self._replicates:
            losses = self.runs[point][seed][1]
            self._replicates[key] = np.exp(replicate_means(losses, self.replicates))
        return self._replicates[key]

    def estimate(self, weights: dict) -> Estimate | None:
        """sum_j w_j * (mean over seeds of point j's perplexity), over the seeds that every point
        with a weight has; None when they share no seed."""
        weights = {p: w for p, w in weights.items() if w != 0}
        if not weights or any(p not in self.runs for p in weights):
            return None
        seeds = sorted(set.intersection(*(self.seeds(p) for p in weights)))
        if not seeds:
            return None
        per_seed = [sum(w * self.runs[p][s][0] for p, w in weights.items()) for s in seeds]
        value = statistics.fmean(per_seed)
        seed_se = (statistics.stdev(per_seed) / math.sqrt(len(seeds))
                   if len(seeds) > 1 else None)
        lengths = {len(self.runs[p][s][1]) if self.runs[p][s][1] is not None else None
                   for p in weights for s in seeds}
        text_se = chars = None
        if None not in lengths and len(lengths) == 1:
            chars = lengths.pop()
            resampled = sum(w * np.mean([self._resampled(p, s) for s in seeds], axis=0)
                            for p, w in weights.items())
            text_se = float(np.std(resampled, ddof=1))
        return Estimate(value, len(seeds), seed_se, text_se, chars)

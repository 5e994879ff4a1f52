import math
import statistics

import numpy as np
import pytest

from charlstm.sweep import noise
from charlstm.sweep.noise import Cells, Estimate


def test_summary_is_the_student_t_interval():
    s = noise.summarize([1.0, 3.0])
    assert s["mean"] == 2.0 and s["se"] == pytest.approx(1.0)
    assert (s["low"], s["high"]) == pytest.approx((2.0 - 12.706, 2.0 + 12.706))
    runs = [4.1, 4.3, 3.9, 4.0, 4.2]
    s = noise.summarize(runs)
    half = 2.776 * statistics.stdev(runs) / math.sqrt(5)
    assert (s["low"], s["high"]) == pytest.approx((4.1 - half, 4.1 + half))
    assert noise.summarize([5.0])["low"] is None
    assert noise.t95(1000) == pytest.approx(1.962, abs=1e-3)


def test_prediction_interval_is_wider_than_the_mean_by_sqrt_one_plus_one_over_n():
    runs = [4.0, 4.2, 4.4]
    low, high = noise.prediction_interval(runs)
    s = noise.summarize(runs)
    assert (high - low) / (s["high"] - s["low"]) == pytest.approx(math.sqrt(1 + 3), rel=1e-12)
    assert noise.prediction_interval([4.0]) is None


def test_losses_pack_to_a_string_and_back_as_float32():
    losses = [0.0, 1.5, 23.02585, 0.123456789]
    packed = noise.pack_losses(losses)
    assert isinstance(packed, str)
    assert noise.unpack_losses(packed) == pytest.approx(np.float32(losses), abs=0)
    assert list(noise.unpack_losses(losses)) == losses


def test_replicates_are_circular_blocks_drawn_alike_for_every_text_of_one_length():
    losses = np.arange(1000, dtype=float)
    means = noise.replicate_means(losses, replicates=50)
    starts = noise._starts(1000, 50)
    block = noise.block_chars(1000)
    assert block == noise.BLOCK_CHARS and starts.shape == (50, 1000 // block)
    by_hand = [np.mean([losses[(s + t) % 1000] for s in row for t in range(block)])
               for row in starts]
    assert means == pytest.approx(by_hand, rel=1e-12)
    # another text of the same length is resampled with the very same blocks
    other = np.random.default_rng(0).random(1000)
    expected = [np.mean([other[(s + t) % 1000] for s in row for t in range(block)])
                for row in starts]
    assert noise.replicate_means(other, replicates=50) == pytest.approx(expected, rel=1e-12)
    assert noise.block_chars(120) == 12 and noise.block_chars(5) == 1


def test_bootstrap_error_of_independent_losses_is_sd_over_sqrt_n():
    rng = np.random.default_rng(1)
    losses = rng.gamma(2.0, 0.75, size=4000)
    se = float(np.std(noise.replicate_means(losses), ddof=1))
    assert se == pytest.approx(losses.std() / math.sqrt(len(losses)), rel=0.1)


def cells_with(points: dict, chars: int = 1000):
    """Cells of points {name: [(seed, losses)]}."""
    cells = Cells(replicates=1000)
    for name, runs in points.items():
        for seed, losses in runs:
            cells.add(name, seed, math.exp(np.mean(losses)), losses)
    return cells


def test_a_difference_is_paired_over_the_text_and_over_seeds():
    rng = np.random.default_rng(2)
    text = rng.gamma(2.0, 0.75, size=1000)  # hard and easy characters shared by both points
    cells = cells_with({"a": [(s, text + 0.1 + 0.01 * s) for s in range(3)],
                        "b": [(s, text + 0.01 * s) for s in range(3)]})
    alone = cells.estimate({"a": 1.0})
    diff = cells.estimate({"a": 1.0, "b": -1.0})
    assert alone.text_se > 0.05
    # a constant shift per character: the resampled difference hardly moves
    assert diff.text_se < alone.text_se / 10
    per_seed = [math.exp(np.mean(text + 0.1 + 0.01 * s)) - math.exp(np.mean(text + 0.01 * s))
                for s in range(3)]
    assert diff.value == pytest.approx(statistics.fmean(per_seed))
    assert diff.seed_se == pytest.approx(statistics.stdev(per_seed) / math.sqrt(3))
    assert diff.seeds == 3 and diff.chars == 1000


def test_the_wider_interval_decides_and_missing_losses_leave_seeds_alone():
    e = Estimate(1.0, seeds=3, seed_se=0.1, text_se=0.3, chars=1000)
    assert e.half == pytest.approx(noise.Z95 * 0.3) and e.decided_by == "validation text"
    e = Estimate(1.0, seeds=3, seed_se=0.3, text_se=0.1, chars=1000)
    assert e.half == pytest.approx(noise.t95(2) * 0.3) and e.decided_by == "seeds"
    cells = Cells()
    cells.add("a", 0, 5.0)
    cells.add("a", 1, 5.2)
    only_seeds = cells.estimate({"a": 1.0})
    assert only_seeds.text_se is None and only_seeds.decided_by == "seeds"
    assert Estimate(1.0, seeds=1).half is None and Estimate(1.0, seeds=1).sign == 0


def test_points_are_compared_on_the_seeds_they_share():
    cells = Cells()
    for seed, value in ((0, 5.0), (1, 5.5), (2, 9.0)):
        cells.add("a", seed, value)
    cells.add("b", 0, 4.0)
    cells.add("b", 1, 4.0)
    e = cells.estimate({"a": 1.0, "b": -1.0})
    assert e.seeds == 2 and e.value == pytest.approx(1.25)
    cells.add("c", 7, 1.0)
    assert cells.estimate({"a": 1.0, "c": -1.0}) is None


@pytest.mark.parametrize("value, seed_se, seeds", [(0.5, 0.2, 3), (0.1, 0.2, 5), (2.0, 0.1, 2)])
def test_seeds_needed_is_the_smallest_count_whose_t_interval_excludes_zero(value, seed_se, seeds):
    e = Estimate(value, seeds=seeds, seed_se=seed_se)
    m = e.seeds_needed()
    sd = seed_se * math.sqrt(seeds)
    assert noise.t95(m - 1) * sd / math.sqrt(m) < value
    assert m == 2 or noise.t95(m - 2) * sd / math.sqrt(m - 1) >= value
    assert Estimate(value, seeds=1).seeds_needed() is None
    assert Estimate(0.0, seeds=3, seed_se=0.1).seeds_needed() is None


def test_chars_needed_is_where_a_longer_text_makes_the_difference_separable():
    rng = np.random.default_rng(3)
    shift = 0.01  # nats: a small, real difference, noisy character by character

    def difference(chars):
        text = rng.gamma(2.0, 0.75, size=chars)
        a = [(0, text + shift + 0.3 * rng.standard_normal(chars))]
        b = [(0, text + 0.3 * rng.standard_normal(chars))]
        return cells_with({"a": a, "b": b}).estimate({"a": 1.0, "b": -1.0})

    small = difference(1000)
    assert small.sign == 0
    needed = small.chars_needed()
    assert needed > 1000
    large = difference(needed)
    # at the length it asked for, the text interval's half-width is about the difference
    assert large.text_half == pytest.approx(abs(small.value), rel=0.25)

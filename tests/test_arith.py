import re

import pytest

from charlstm.config import TASKS
from charlstm.data.arith import DIGITS, make_dataset, missing_in_training, symbols_for


def independent_target(task, text, digits):
    """The target computed from character positions, not by splitting on the operator."""
    if task == "count-ones":
        return sum(int(c) for c in text)
    a, b = int(text[:digits]), int(text[digits + 1:])
    return {"add": a + b, "sub": a - b, "mul": a * b}[task]


@pytest.mark.parametrize("task,digits", [("add", 1), ("sub", 1), ("mul", 1), ("add", 2), ("sub", 2),
                                         ("mul", 3), ("count-ones", 1)])
def test_targets_are_exact_and_training_covers_every_symbol_and_position(task, digits):
    data = make_dataset(task, digits=digits, length=11, samples=300, seed=3)
    for texts, targets in ((data.train_text, data.train_targets), (data.valid_text, data.valid_targets)):
        assert targets == [independent_target(task, t, digits) for t in texts]
    for symbol in symbols_for(task):
        assert any(symbol in t for t in data.train_text)
    if task != "count-ones":
        operand_columns = [c for c in range(2 * digits + 1) if c != digits]
        for column in operand_columns:
            assert {t[column] for t in data.train_text} == set(DIGITS)
        assert all(t[digits] == {"add": "+", "sub": "-", "mul": "*"}[task] for t in data.train_text)
    assert missing_in_training(task, data.train_text, digits) == []


def test_single_digit_add_enumerates_every_pair_once_and_splits_80_20():
    data = make_dataset("add", seed=0)
    texts = data.train_text + data.valid_text
    assert sorted(texts) == sorted(f"{a}+{b}" for a in range(10) for b in range(10))
    assert (len(data.train_text), len(data.valid_text)) == (80, 20)
    x, y = data.tensors("valid")
    assert x.shape == (20, 3) and y.shape == (20,)
    assert [data.symbols[i] for i in x[0].tolist()] == list(data.valid_text[0])
    assert y.tolist() == [float(v) for v in data.valid_targets]


def test_the_split_is_random_but_fixed_by_the_seed():
    assert make_dataset("add", seed=1).valid_text == make_dataset("add", seed=1).valid_text
    assert make_dataset("add", seed=1).valid_text != make_dataset("add", seed=2).valid_text
    # Not the notebook's ordered split: held-out examples come from across the range.
    assert len({t[0] for t in make_dataset("add", seed=1).valid_text}) > 3


def test_short_binary_strings_are_enumerated_and_long_ones_sampled_distinct_with_every_count():
    short = make_dataset("count-ones", length=6, samples=1000)
    assert sorted(short.train_text + short.valid_text) == [format(i, "06b") for i in range(64)]
    long = make_dataset("count-ones", length=40, samples=500, seed=5)
    texts = long.train_text + long.valid_text
    assert len(set(texts)) == len(texts) == 500
    assert all(len(t) == 40 for t in texts)
    # Counts are drawn uniformly, so the extremes occur, unlike with uniform bits.
    assert {0, 40} <= set(long.train_targets + long.valid_targets)


def test_multi_digit_operands_are_zero_padded_and_sampled_when_too_many():
    data = make_dataset("mul", digits=3, samples=400, seed=0)
    texts = data.train_text + data.valid_text
    assert len(set(texts)) == 400 and all(len(t) == 7 for t in texts)
    assert "00" in "".join(texts)


def test_missing_in_training_names_the_symbol_and_the_position():
    texts = [f"{a}+{b}" for a in range(9) for b in range(10)]
    missing = missing_in_training("add", texts)
    assert missing == ["'9' as first operand digit 1"]
    assert missing_in_training("count-ones", ["000", "010"]) == []
    assert missing_in_training("count-ones", ["000"]) == ["symbol '1'"]


@pytest.mark.parametrize("kwargs,message", [
    ({"task": "add", "valid_fraction": 0.995}, "leaves nothing to train on"),
    ({"task": "count-ones", "length": 1}, "lower --valid-fraction"),
])
def test_splits_that_cannot_work_are_rejected_with_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_dataset(**kwargs)


def test_every_task_has_a_vocabulary():
    assert all(len(symbols_for(t)) in (2, 11) for t in TASKS)

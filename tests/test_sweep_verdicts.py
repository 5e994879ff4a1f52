"""The report's verdicts on synthetic trial sets whose right answer is known."""

import math

import pytest
from helpers import synthetic_trainer

from charlstm import sweep
from charlstm.sweep import report, verdicts
from charlstm.sweep.verdicts import CORRECT, INCORRECT, NOT_ANSWERED, NOT_SEPARABLE, Trials


def trials_of(tmp_path, grids, trainer, write=False) -> Trials:
    sweep.run(grids, out=tmp_path, trainer=trainer, progress=False, poll_seconds=0.05,
              report=write)
    rows, stored = report.load_rows(sweep.sqlite_url(tmp_path), [g.name for g in grids])
    return Trials(rows, stored, replicates=1000)


def unrollings_study(repeats=3):
    return [sweep.make_grid({"unrollings": "1,2,5,10,20"}, repeats=repeats, name="u")]


def falling(slope):
    return lambda config, steps: 0.5 + slope / config.unrollings


@pytest.mark.parametrize("mean_loss, expected", [
    (lambda config, steps: 0.5, NOT_SEPARABLE),   # flat
    (falling(0.2), CORRECT),                       # strictly falling
    (lambda config, steps: 0.5 + 0.01 * config.unrollings, INCORRECT),  # strictly rising
])
def test_hypothesis_1_follows_the_curve(tmp_path, mean_loss, expected):
    trials = trials_of(tmp_path, unrollings_study(),
                       synthetic_trainer(mean_loss, seed_noise=0.005, text_noise=0.2), write=True)
    answer = verdicts.hypothesis_1(trials)
    assert answer.verdict == expected
    text = (tmp_path / "report.md").read_text()
    assert "| H1 | \"Increasing the number of unrollings" in text
    assert f"**{expected}**" in text.split("| H1 |")[1].split("\n")[0]


def test_seed_noise_makes_a_small_fall_inseparable(tmp_path):
    quiet = trials_of(tmp_path / "quiet", unrollings_study(),
                      synthetic_trainer(falling(0.05), seed_noise=0.001))
    noisy = trials_of(tmp_path / "noisy", unrollings_study(),
                      synthetic_trainer(falling(0.05), seed_noise=0.05))
    assert verdicts.hypothesis_1(quiet).verdict == CORRECT
    claim = verdicts.hypothesis_1(noisy).claims[0]
    assert claim.verdict == NOT_SEPARABLE and claim.estimate.decided_by == "seeds"
    assert claim.estimate.seeds_needed() > 3


def test_validation_text_noise_makes_a_small_fall_inseparable_where_seeds_agree(tmp_path):
    """Points that differ character by character in ways no seed reveals: the seeds agree, the
    text does not, and the verdict follows the wider interval."""
    clean = trials_of(tmp_path / "clean", unrollings_study(),
                      synthetic_trainer(falling(0.05), seed_noise=0.001))
    texty = trials_of(tmp_path / "texty", unrollings_study(),
                      synthetic_trainer(falling(0.05), seed_noise=0.001, text_noise=2.0))
    assert verdicts.hypothesis_1(clean).verdict == CORRECT
    claim = verdicts.hypothesis_1(texty).claims[0]
    e = claim.estimate
    assert claim.verdict == NOT_SEPARABLE and e.decided_by == "validation text"
    assert e.seed_half < abs(e.value) < e.text_half  # the seeds alone would have called it
    assert e.chars_needed() > 1000
    assert f"{e.chars_needed():,} validation characters (this run: 1,000)" in claim.detail


def test_one_seed_is_decided_by_the_validation_text_and_says_so(tmp_path):
    trials = trials_of(tmp_path, unrollings_study(repeats=1),
                       synthetic_trainer(falling(0.2), text_noise=0.2))
    claim = verdicts.hypothesis_1(trials).claims[0]
    assert claim.verdict == CORRECT and claim.estimate.decided_by == "validation text"
    assert "seeds: not measured (one seed)" in claim.detail
    assert "rerun with --repeats 3 or more" in claim.detail


def test_hypothesis_2_is_incorrect_when_either_parameter_reduces_perplexity(tmp_path):
    grids = [sweep.make_grid({"nodes": "8,16,32,64"}, repeats=3, name="n"),
             sweep.make_grid({"batch_size": "8,16,32,64"}, repeats=3, name="b")]
    trials = trials_of(tmp_path, grids, synthetic_trainer(
        lambda config, steps: 0.5 + 2.0 / config.nodes, seed_noise=0.005, text_noise=0.2))
    answer = verdicts.hypothesis_2(trials)
    nodes, batch = answer.claims
    assert nodes.verdict == INCORRECT and batch.verdict == NOT_SEPARABLE
    assert answer.verdict == INCORRECT
    assert any(n.startswith("nodes: gains level off at") for n in answer.notes)


def test_hypothesis_3_reads_the_steps_milestones_and_finds_a_rise(tmp_path):
    grid = sweep.make_grid({"steps": "100,200,300,400"}, repeats=3, name="s")

    def bump(config, steps):  # falls, but rises from 200 to 300
        return {100: 1.0, 200: 0.6, 300: 0.8, 400: 0.4}[steps]

    trials = trials_of(tmp_path, [grid], synthetic_trainer(bump, seed_noise=0.005))
    answer = verdicts.hypothesis_3(trials)
    assert answer.verdict == CORRECT
    assert "rises separably 1 time(s)" in answer.notes[0] and "200 → 300" in answer.notes[0]


def test_hypothesis_4_is_incorrect_when_a_model_with_unequal_nodes_and_batch_learns(tmp_path):
    """'Must be equal' is a requirement: a setting with nodes != batch size that learns (its
    perplexity separably below 27, a uniform guess) shows it false."""
    grids = [sweep.make_grid({"nodes": "32,64,128"}, repeats=3, name="n")]
    learns = synthetic_trainer(lambda config, steps: 0.5, seed_noise=0.005, text_noise=0.2)
    answer = verdicts.hypothesis_4(trials_of(tmp_path / "a", grids, learns))
    assert answer.verdict == INCORRECT
    assert "2 point(s) had nodes ≠ batch size: 2 learned" in answer.claims[0].detail
    uniform = math.log(verdicts.UNIFORM_PERPLEXITY) - 1.0  # perplexity 27: nothing learned
    only_equal = synthetic_trainer(lambda config, steps: 0.5 if config.nodes == 64 else
                                   uniform + 0.2, seed_noise=0.005)
    assert verdicts.hypothesis_4(trials_of(tmp_path / "b", grids, only_equal)).verdict == CORRECT
    borderline = synthetic_trainer(lambda config, steps: 0.5 if config.nodes == 64 else uniform,
                                   seed_noise=0.2)
    answer = verdicts.hypothesis_4(trials_of(tmp_path / "c", grids, borderline))
    assert answer.verdict == NOT_SEPARABLE


def test_hypothesis_4_sets_the_writeups_unequal_runs_beside_its_equal_one(tmp_path):
    points = [{"batch_size": 64, "nodes": 64}, {"batch_size": 32, "nodes": 64},
              {"batch_size": 64, "nodes": 32}]
    grid = sweep.make_points(points, {"steps": 30}, repeats=2, name="r")
    trials = trials_of(tmp_path, [grid], synthetic_trainer(
        lambda config, steps: 0.5 + 1 / config.nodes + 1 / config.batch_size, seed_noise=0.005))
    notes = verdicts.hypothesis_4(trials).notes
    assert len(notes) == 2
    assert notes[0].startswith("Beside it, batch size 32 with 64 nodes against batch size 64 "
                               "with 64 nodes (study `r`, all else equal): ")


def test_questions_1_and_2_on_a_grid(tmp_path):
    grid = sweep.make_grid({"nodes": "2,8,32", "unrollings": "1,4,16"}, repeats=3, name="g")
    ski = synthetic_trainer(lambda config, steps: 0.5 + 1.0 / config.nodes
                            + 0.1 / config.unrollings, seed_noise=0.005)
    trials = trials_of(tmp_path, [grid], ski)
    q1 = verdicts.question_1(trials)
    assert q1.verdict == CORRECT and [c.verdict for c in q1.claims] == [CORRECT, CORRECT]
    q2 = verdicts.question_2(trials)
    can, more, nodes_most = q2.claims
    assert can.verdict == CORRECT and "3 point(s) had more unrollings than nodes: 3 learned" \
        in can.detail
    assert more.verdict == CORRECT and "nodes 2: 4 → 16" in more.detail
    assert nodes_most.verdict == CORRECT
    assert q2.verdict == CORRECT


def test_question_3_sets_more_unrollings_than_steps_against_one_unrolling(tmp_path):
    points = [{"unrollings": 100, "steps": 20}, {"unrollings": 1, "steps": 20}]
    grid = sweep.make_points(points, repeats=3, name="r")
    same = synthetic_trainer(lambda config, steps: 0.5, seed_noise=0.005, text_noise=0.2)
    answer = verdicts.question_3(trials_of(tmp_path / "same", [grid], same))
    assert answer.verdict == NOT_SEPARABLE
    differ = synthetic_trainer(lambda config, steps: 0.5 + 0.3 / config.unrollings,
                               seed_noise=0.005)
    answer = verdicts.question_3(trials_of(tmp_path / "differ", [grid], differ))
    assert answer.verdict == INCORRECT and "lower with more unrollings" in answer.claims[1].detail


def test_statements_without_their_study_are_not_answered(tmp_path):
    trials = trials_of(tmp_path, unrollings_study(), synthetic_trainer(falling(0.2)))
    by_key = {a.statement.key: a for a in verdicts.answers(trials)}
    for key in ("H2", "H3", "Q1", "Q3"):
        assert by_key[key].verdict == NOT_ANSWERED, key
    assert "--preset udacity" in by_key["H2"].claims[0].detail


@pytest.mark.parametrize("parts, expected", [
    ([CORRECT, CORRECT], CORRECT),
    ([CORRECT, INCORRECT, NOT_ANSWERED], INCORRECT),
    ([CORRECT, NOT_SEPARABLE], NOT_SEPARABLE),
    ([CORRECT, NOT_ANSWERED], NOT_ANSWERED),
    ([NOT_SEPARABLE, NOT_ANSWERED], NOT_SEPARABLE),
    ([], NOT_ANSWERED),
])
def test_a_statement_is_correct_only_when_every_part_is_answered_and_correct(parts, expected):
    assert verdicts.combine([verdicts.Claim("part", v) for v in parts]) == expected


def test_a_question_answered_in_part_says_so_rather_than_noise(tmp_path):
    """The single runs alone show that more unrollings than nodes can learn, but not what the
    nodes x unrollings grid would show: the question is not answered, not 'noise'."""
    grid = sweep.make_points([{"nodes": 12, "unrollings": 15}, {"nodes": 64, "unrollings": 10}],
                             repeats=3, name="r")
    trials = trials_of(tmp_path, [grid], synthetic_trainer(lambda config, steps: 0.5,
                                                           seed_noise=0.005))
    answer = verdicts.question_2(trials)
    assert [c.verdict for c in answer.claims] == [CORRECT, NOT_ANSWERED, NOT_ANSWERED]
    assert answer.verdict == NOT_ANSWERED

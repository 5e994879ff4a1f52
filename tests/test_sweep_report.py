import csv
import hashlib
import math
import statistics
import zipfile

import numpy as np
import pytest
from helpers import synthetic_trainer, words

from charlstm import sweep
from charlstm.data import download
from charlstm.sweep import noise, report, writeup


def wobble(config):
    return 0.05 * (((config.seed + 1) * 7919 + config.nodes * 104729) % 11 - 5) / 5


def levels_off_at_16(config, milestones=None, progress=True):
    return {"valid_perplexity": 4.0 + max(0, 16 - config.nodes) + wobble(config),
            "steps": config.steps}


def bump_at_8(config, milestones=None, progress=True):
    return {"valid_perplexity": 10.0 - math.log2(config.nodes) + (3.0 if config.nodes == 8 else 0)
            + wobble(config), "steps": config.steps}


def run(tmp_path, trainer, repeats, values="2,4,8,16,32,64"):
    grid = sweep.make_grid({"nodes": values}, repeats=repeats)
    summary = sweep.run([grid], out=tmp_path, trainer=trainer,
                        progress=False, poll_seconds=0.1)
    return (tmp_path / "report.md").read_text(), summary


def test_report_finds_where_gains_level_off_and_says_what_is_missing(tmp_path):
    text, _ = run(tmp_path, levels_off_at_16, repeats=3)
    assert "- nodes: gains level off at 16 (the author: about 128)" in text
    h1 = text.split("| H1 |")[1].split("\n")[0]
    assert "**not answered**" in h1 and "no study sweeps it alone" in h1
    assert "validation text: not measured (no per-character losses stored)" in text
    with open(tmp_path / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(r["text_low"] == "" for r in rows)  # the stand-in stores no losses
    mean_2 = statistics.fmean(float(r["valid_perplexity"]) for r in rows if r["nodes"] == "2")
    assert f"| 2 | 3 | {mean_2:.3f} |" in text


def test_report_flags_a_separable_rise(tmp_path):
    text, _ = run(tmp_path, bump_at_8, repeats=3)
    assert "- nodes: perplexity rises separably 1 time(s) between neighbouring values, so not " \
           "monotonically: 4 → 8: +2.030" in text


def test_report_with_one_seed_and_no_losses_gives_no_interval_and_says_so(tmp_path):
    text, _ = run(tmp_path, bump_at_8, repeats=1)
    assert "| 2 | 1 | " in text and "| one seed | not measured |" in text
    assert "one seed per point, so the seed-to-seed spread is not measured" in text
    assert "- nodes: no separable rise between neighbouring values (6 values)." in text
    assert ("- nodes: gains level off at 64 (the author: about 128): the smallest value not "
            "separably worse than the best (the best value itself: no smaller value is within "
            "1% of its mean; no interval with one seed") in text


def test_report_leads_with_the_writeups_statements_in_its_own_words(tmp_path):
    text, _ = run(tmp_path, levels_off_at_16, repeats=2)
    assert text.index("## The write-up's hypotheses and questions") < text.index("## Studies")
    assert text.index("## The write-up's single runs") < text.index("## Studies")
    for statement in writeup.HYPOTHESES + writeup.QUESTIONS:
        row = text.split(f"| {statement.key} |")[1].split("\n")[0]
        assert f"\"{statement.quote}\" | {statement.author} | **" in row
        assert f"### {statement.key}. \"{statement.quote}\"" in text
    assert writeup.SOURCE in text
    for run_ in writeup.RUNS:
        assert (f"| {run_.batch_size} | {run_.nodes} | {run_.unrollings} | {run_.steps} | "
                f"{run_.perplexity:.3f} | | | | not run here |") in text


def test_other_comparisons_set_two_studies_against_each_other(tmp_path):
    grids = [sweep.make_grid({"nodes": "2,4,8,16"}, repeats=3, name="n"),
             sweep.make_grid({"batch_size": "2,4,8,16"}, repeats=3, name="b")]

    def nodes_matter(config, milestones=None, progress=True):
        return {"valid_perplexity": 5 + 40 / config.nodes + 0.1 / config.batch_size
                + wobble(config)}

    sweep.run(grids, out=tmp_path, trainer=nodes_matter, progress=False, poll_seconds=0.1)
    text = (tmp_path / "report.md").read_text()
    line = text.split("- More nodes against more batch_size: ")[1].split("\n")[0]
    assert "nodes improves separably more" in line
    assert "not answered, no study sweeps unrollings alone" in text
    assert "![n](n.png)" in text and (tmp_path / "n.png").is_file()


def test_report_follows_a_moved_folder_and_asks_for_a_hidden_password(tmp_path):
    run(tmp_path / "a", levels_off_at_16, repeats=1, values="2,4")
    (tmp_path / "a").rename(tmp_path / "b")
    (tmp_path / "b" / "report.md").unlink()
    assert report.write_report(tmp_path / "b") == str(tmp_path / "b" / "report.md")
    assert "| 4 | 1 |" in (tmp_path / "b" / "report.md").read_text()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "sweep.json").write_text(
        '{"storage": "postgresql://u:***@db/x", "studies": ["s"]}')
    with pytest.raises(ValueError, match="pass it again with --storage"):
        report.write_report(tmp_path / "c")


def test_each_run_keeps_its_losses_and_gets_its_own_validation_text_interval(tmp_path):
    trainer = synthetic_trainer(lambda config, steps: 0.5 + 1.0 / config.nodes, seed_noise=0.01,
                                text_noise=0.3)
    grid = sweep.make_grid({"nodes": "2,4"}, repeats=2, name="n")
    sweep.run([grid], out=tmp_path, trainer=trainer, progress=False, poll_seconds=0.05)
    import optuna
    study = optuna.load_study(study_name="n", storage=sweep.sqlite_url(tmp_path))
    trial = study.best_trial
    stored = trial.user_attrs["result"]["valid_char_nll"]
    assert isinstance(stored, str)  # packed: reading a trial parses no thousand numbers
    from charlstm.config import TrainConfig
    config = TrainConfig(nodes=trial.user_attrs["params"]["nodes"], seed=trial.user_attrs["seed"])
    expected = trainer(config)["valid_char_nll"]
    assert noise.unpack_losses(stored) == pytest.approx(np.float32(expected), abs=0)
    with open(tmp_path / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        low, high, ppl = float(row["text_low"]), float(row["text_high"]), \
            float(row["valid_perplexity"])
        assert low < ppl < high and (high - low) / ppl < 0.2
    text = (tmp_path / "report.md").read_text()
    assert "- Validation text, per run: the block bootstrap's 95% half-width is" in text
    assert "and it is the wider at" in text


def text8_trainer(chars, sha1, means):
    """Stand-in runs of the write-up's settings whose mean perplexities are `means`."""
    by_point = {(r.batch_size, r.nodes, r.unrollings, r.steps): m
                for r, m in zip(writeup.RUNS, means)}
    # seeds 0, 1, 2 move the loss by -0.01, 0, +0.01 nats: the mean over them is about m
    return synthetic_trainer(
        lambda config, steps: math.log(by_point.get(
            (config.batch_size, config.nodes, config.unrollings, steps), 5.0)) - 1.0
        + 0.01 * (config.seed - 1),
        data={"source": "text8.zip", "characters": chars, "sha1": sha1})


def test_on_text8_the_writeups_runs_stand_beside_ours_with_the_seed_interval(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setattr(download, "TEXT8_CHARACTERS", 4321)
    monkeypatch.setattr(download, "TEXT8_SHA1", "f" * 40)
    # synthetic losses are text (mean 1 nat) + the mean given: perplexity e^(log m) = m
    means = [r.perplexity for r in writeup.RUNS[:5]] + [2 * writeup.RUNS[5].perplexity]
    grids = [sweep.make_points([r.params() for r in writeup.RUNS], repeats=3, name="r"),
             sweep.make_grid({"batch_size": "32,64"}, repeats=3, name="b")]
    sweep.run(grids, out=tmp_path, trainer=text8_trainer(4321, "f" * 40, means),
              progress=False, poll_seconds=0.05)
    text = (tmp_path / "report.md").read_text()
    assert "Data: text8 (4,321 characters, SHA-1 ffffffffffff…, as the write-up's)." in text
    table = text.split("## The write-up's single runs")[1].split("## Studies")[0]
    rows = [line for line in table.splitlines() if line.startswith("| 64 |")
            or line.startswith("| 32 |")]
    assert len(rows) == 6
    assert [row.rsplit("|", 2)[1].strip() for row in rows] == ["yes"] * 5 + ["no"]
    assert "The dashed curve is the write-up's" in text


def test_elsewhere_the_writeups_figures_are_not_comparable(tmp_path):
    means = [r.perplexity for r in writeup.RUNS]
    grids = [sweep.make_points([r.params() for r in writeup.RUNS], repeats=2, name="r"),
             sweep.make_grid({"batch_size": "32,64"}, repeats=2, name="b")]
    sweep.run(grids, out=tmp_path, trainer=text8_trainer(4321, "f" * 40, means),
              progress=False, poll_seconds=0.05)
    text = (tmp_path / "report.md").read_text()
    assert "text8.zip in text8 form, 4,321 characters (SHA-1 ffffffffffff…): not text8" in text
    assert text.count("| not comparable: the data is not text8 |") == 6
    assert "The dashed curve" not in text


def test_the_real_trainer_on_a_text8_stand_in_is_set_beside_the_writeup(tmp_path, monkeypatch):
    """train records the corpus's size and SHA-1, the sweep keeps them, the report knows text8
    by them; here a generated stand-in, zipped as text8.zip is, with the identity patched."""
    text = " " + words(30_000, seed=4)
    archive = tmp_path / "text8.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("text8", text)
    monkeypatch.setattr(download, "TEXT8_CHARACTERS", len(text))
    monkeypatch.setattr(download, "TEXT8_SHA1", hashlib.sha1(text.encode()).hexdigest())
    runs = (writeup.Run(8, 8, 5, 20, 1000.0), writeup.Run(4, 8, 5, 20, 12.0))
    monkeypatch.setattr(writeup, "RUNS", runs)
    grid = sweep.make_points([r.params() for r in runs], {"data": str(archive)},
                             repeats=3, name="r")
    sweep.run([grid], out=tmp_path / "out", progress=False, poll_seconds=0.05)
    report_text = (tmp_path / "out" / "report.md").read_text()
    assert f"Data: text8 ({len(text):,} characters" in report_text
    table = report_text.split("## The write-up's single runs")[1].split("## Studies")[0]
    first = [line for line in table.splitlines() if line.startswith("| 8 | 8 | 5 | 20 |")]
    assert first and first[0].endswith("| no |")
    assert "not comparable" not in table

import csv
import math
import statistics

import pytest

from charlstm import sweep
from charlstm.sweep import report


def noise(config):
    return 0.05 * (((config.seed + 1) * 7919 + config.nodes * 104729) % 11 - 5) / 5


def levels_off_at_16(config, milestones=None, progress=True):
    return {"valid_perplexity": 4.0 + max(0, 16 - config.nodes) + noise(config),
            "steps": config.steps}


def bump_at_8(config, milestones=None, progress=True):
    return {"valid_perplexity": 10.0 - math.log2(config.nodes) + (3.0 if config.nodes == 8 else 0)
            + noise(config), "steps": config.steps}


def run(tmp_path, trainer, repeats, values="2,4,8,16,32,64"):
    grid = sweep.make_grid({"nodes": values}, repeats=repeats)
    summary = sweep.run([grid], out=tmp_path, trainer=trainer,
                        progress=False, poll_seconds=0.1)
    return (tmp_path / "report.md").read_text(), summary


def test_summary_is_the_student_t_interval():
    s = report.summarize([1.0, 3.0])
    assert s["mean"] == 2.0 and s["se"] == pytest.approx(1.0)
    assert (s["low"], s["high"]) == pytest.approx((2.0 - 12.706, 2.0 + 12.706))
    runs = [4.1, 4.3, 3.9, 4.0, 4.2]
    s = report.summarize(runs)
    half = 2.776 * statistics.stdev(runs) / math.sqrt(5)
    assert (s["low"], s["high"]) == pytest.approx((4.1 - half, 4.1 + half))
    assert report.summarize([5.0])["low"] is None
    assert report.t95(1000) == pytest.approx(1.962, abs=1e-3)


def test_difference_is_welch():
    a, b = report.summarize([1.0, 2.0, 3.0]), report.summarize([5.0, 7.0, 9.0])
    d = report.difference(b, a)
    var = a["se"] ** 2 + b["se"] ** 2
    df = var ** 2 / (a["se"] ** 4 / 2 + b["se"] ** 4 / 2)
    assert d["diff"] == 5.0
    assert d["high"] - d["low"] == pytest.approx(2 * report.t95(df) * math.sqrt(var))
    assert report.difference(report.summarize([1.0]), a)["low"] is None


def test_report_finds_where_gains_level_off_and_says_what_is_missing(tmp_path):
    text, _ = run(tmp_path, levels_off_at_16, repeats=3)
    assert "Gains level off at nodes = 16:" in text
    assert "- nodes: mean perplexity" in text
    assert "Not answered: no trials sweep batch_size" in text
    assert "Not answered: no trials sweep unrollings" in text
    assert "Not answered: no trials sweep steps" in text
    with open(tmp_path / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    mean_2 = statistics.fmean(float(r["valid_perplexity"]) for r in rows if r["nodes"] == "2")
    assert f"| 2 | 3 | {mean_2:.3f} |" in text


def test_report_flags_a_significant_rise(tmp_path):
    text, _ = run(tmp_path, bump_at_8, repeats=3)
    assert "- nodes: mean perplexity rises 1 time(s) over 6 values (1 significant): 4 -> 8" \
        in text


def test_report_with_one_seed_gives_no_interval_and_says_so(tmp_path):
    text, _ = run(tmp_path, bump_at_8, repeats=1)
    assert "no interval (one seed)" in text
    assert "(no intervals with one seed)" in text and "one seed, no interval" in text
    assert "rerun with --repeats 3 or more" in text


def test_hypotheses_compare_studies_from_the_data(tmp_path):
    grids = [sweep.make_grid({"nodes": "2,4,8,16"}, repeats=3, name="n"),
             sweep.make_grid({"batch_size": "2,4,8,16"}, repeats=3, name="b")]

    def nodes_matter(config, milestones=None, progress=True):
        return {"valid_perplexity": 5 + 40 / config.nodes + 0.1 / config.batch_size
                + noise(config)}

    sweep.run(grids, out=tmp_path, trainer=nodes_matter,
              progress=False, poll_seconds=0.1)
    text = (tmp_path / "report.md").read_text()
    section = text.split("### 1. ")[1].split("### 2. ")[0]
    assert "the data shows nodes giving the larger improvement" in section
    assert "study `n`" in section and "study `b`" in section
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


def test_inside_a_grid_effects_are_paired_over_the_other_parameter(tmp_path):
    grid = sweep.make_grid({"nodes": "2,4,8", "unrollings": "1,2,4"}, repeats=3, name="g")

    def nodes_matter(config, milestones=None, progress=True):
        return {"valid_perplexity": 5 + 40 / config.nodes + 0.2 / config.unrollings
                + noise(config)}

    sweep.run([grid], out=tmp_path, trainer=nodes_matter,
              progress=False, poll_seconds=0.1)
    text = (tmp_path / "report.md").read_text()
    section = text.split("Within the grid `g`:")[1].split("### 3. ")[0]
    assert "paired at each value of unrollings and seed" in section
    assert "the data shows nodes giving the larger improvement" in section
    with open(tmp_path / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    pairs = {}
    for r in rows:
        pairs.setdefault((r["unrollings"], r["seed"]), {})[r["nodes"]] = \
            float(r["valid_perplexity"])
    gains = [p["2"] - p["8"] for p in pairs.values()]
    assert f"by {statistics.fmean(gains):.3f}" in section

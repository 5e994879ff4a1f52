import pytest
from matplotlib.collections import PolyCollection

from charlstm.sweep import plots


@pytest.mark.parametrize("values, expected", [
    ([2, 4, 8, 256], True), ([1, 2, 4], True), ([1, 2, 3], False), ([4], False),
    ([0.5, 1, 2], False), (["lstm", "gru"], False),
])
def test_powers_of_two(values, expected):
    assert plots.powers_of_two(values) is expected


def test_a_line_plot_shows_means_seeds_and_intervals_where_there_are_some(tmp_path):
    points = [{"value": v, "mean": 10 / v, "low": 10 / v - 0.1 if v > 2 else None,
               "high": 10 / v + 0.1 if v > 2 else None, "runs": [10 / v, 10 / v + 0.05]}
              for v in (2, 4, 8)]
    (ax,) = plots.line(tmp_path / "a.png", "nodes", points).axes
    assert (tmp_path / "a.png").stat().st_size > 0
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "4", "8"]
    (means,) = ax.get_lines()
    assert list(means.get_ydata()) == [5.0, 2.5, 1.25]
    dots = [c for c in ax.collections if not isinstance(c, PolyCollection)]
    assert sum(len(c.get_offsets()) for c in dots) == 6  # every seed's value
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    xs = band.get_paths()[0].vertices[:, 0]
    assert xs.min() == 4 and xs.max() == 8  # no interval drawn for the single-seed point


def test_a_line_plot_of_names_places_them_in_order(tmp_path):
    names = [{"value": c, "mean": m, "low": None, "high": None, "runs": [m]}
             for c, m in (("gru", 5.0), ("lstm", 4.0))]
    (ax,) = plots.line(tmp_path / "b.png", "cell", names).axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["gru", "lstm"]
    assert list(ax.get_lines()[0].get_xdata()) == [0, 1]


def test_heatmap_writes_each_mean_in_its_cell_and_leaves_a_missing_one_empty(tmp_path):
    xs, ys = [2, 4, 8], [1, 5, 10]
    grid = [[9.0, 8.0, 7.0], [8.5, None, 6.5], [8.0, 7.0, 6.0]]
    ax = plots.heatmap(tmp_path / "h.png", "nodes", "unrollings", xs, ys, grid).axes[0]
    cells = {(t.get_position(), t.get_text()) for t in ax.texts}
    assert len(cells) == 8 and ((1, 1), "nan") not in cells
    assert ((2, 1), "6.50") in cells and ((0, 0), "9.00") in cells
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "4", "8"]


def test_surface_puts_powers_of_two_on_a_log2_axis_and_other_values_in_order(tmp_path):
    xs, ys = [2, 4, 8], [1, 2, 3, 4, 5, 10, 50]
    grid = [[9.0 - j, 8.0 - j, None if j == 3 else 7.0 - j] for j in range(len(ys))]
    ax = plots.surface(tmp_path / "s.png", "nodes", "unrollings", xs, ys, grid).axes[0]
    assert list(ax.get_xticks()) == [1.0, 2.0, 3.0]  # log2 of 2, 4, 8
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "4", "8"]
    # 1..5 would crowd at one end of a linear axis: one step per value instead
    assert list(ax.get_yticks()) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(y) for y in ys]
    assert ax.get_ylabel() == "unrollings (by order)" and ax.get_xlabel() == "nodes"
    assert ax.get_zlabel() == "validation perplexity"


def test_a_line_plot_of_a_wide_range_gets_a_log_axis_labelled_with_the_values(tmp_path):
    values = [1, 2, 3, 4, 5, 10, 15, 20, 25, 30, 50]
    points = [{"value": v, "mean": 5 + 1 / v, "low": None, "high": None, "runs": [5 + 1 / v]}
              for v in values]
    (ax,) = plots.line(tmp_path / "u.png", "unrollings", points).axes
    assert ax.get_xscale() == "log"
    assert list(ax.get_xticks()) == values
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(v) for v in values]
    narrow = [dict(p, value=v) for p, v in zip(points, range(11, 22))]
    (ax,) = plots.line(tmp_path / "n.png", "unrollings", narrow).axes
    assert ax.get_xscale() == "linear"


def test_a_line_plot_draws_another_studys_curve_beside_ours(tmp_path):
    points = [{"value": v, "mean": 10 / v, "low": None, "high": None, "runs": [10 / v]}
              for v in (16, 32, 64)]
    original = [(32, 5.748), (64, 4.675)]
    (ax,) = plots.line(tmp_path / "o.png", "nodes", points, original=original).axes
    ours, theirs = ax.get_lines()
    assert list(theirs.get_xdata()) == [32, 64] and list(theirs.get_ydata()) == [5.748, 4.675]
    assert theirs.get_label() == "the write-up (TensorFlow, text8)"
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == theirs.get_label()
    (ax,) = plots.line(tmp_path / "p.png", "nodes", points).axes
    assert len(ax.get_lines()) == 1

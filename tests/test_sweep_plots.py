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


def test_surface_puts_powers_of_two_on_a_log2_axis_and_other_numbers_as_they_are(tmp_path):
    xs, ys = [2, 4, 8], [1, 5, 10]
    grid = [[9.0, 8.0, 7.0], [8.5, None, 6.5], [8.0, 7.0, 6.0]]
    ax = plots.surface(tmp_path / "s.png", "nodes", "unrollings", xs, ys, grid).axes[0]
    assert list(ax.get_xticks()) == [1.0, 2.0, 3.0]  # log2 of 2, 4, 8
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "4", "8"]
    assert list(ax.get_yticks()) == [1.0, 5.0, 10.0]
    assert ax.get_zlabel() == "validation perplexity"

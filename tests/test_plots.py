import matplotlib.image
import pytest

from charlstm import plots


def decoded(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path)


@pytest.mark.parametrize("values, expected", [
    ([2, 4, 8, 256], True), ([1, 2, 4], True), ([1, 2, 3], False), ([4], False),
    ([0.5, 1, 2], False), (["lstm", "gru"], False),
])
def test_powers_of_two(values, expected):
    assert plots.powers_of_two(values) is expected


def test_line_plot_with_and_without_intervals(tmp_path):
    points = [{"value": v, "mean": 10 / v, "low": 10 / v - 0.1 if v > 2 else None,
               "high": 10 / v + 0.1 if v > 2 else None, "runs": [10 / v]} for v in (2, 4, 8)]
    plots.line(tmp_path / "a.png", "nodes", points)
    assert decoded(tmp_path / "a.png").shape[2] in (3, 4)
    names = [{"value": c, "mean": 5.0, "low": None, "high": None, "runs": [5.0]}
             for c in ("gru", "lstm")]
    plots.line(tmp_path / "b.png", "cell", names)
    decoded(tmp_path / "b.png")


def test_heatmap_and_surface_with_a_missing_cell(tmp_path):
    xs, ys = [2, 4, 8], [1, 5, 10]
    grid = [[9.0, 8.0, 7.0], [8.5, None, 6.5], [8.0, 7.0, 6.0]]
    plots.heatmap(tmp_path / "h.png", "nodes", "unrollings", xs, ys, grid)
    plots.surface(tmp_path / "s.png", "nodes", "unrollings", xs, ys, grid)
    assert decoded(tmp_path / "h.png").ndim == 3
    assert decoded(tmp_path / "s.png").ndim == 3

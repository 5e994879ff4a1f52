"""Figures of a sweep: perplexity against one parameter, or a heatmap and surface over two.

Each function writes a PNG and returns the matplotlib Figure it drew."""

import io
import math

from charlstm.checkpoint import atomic_write_bytes


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def powers_of_two(values) -> bool:
    """True when every value is a positive integer power of two (they then get a log2 axis)."""
    try:
        return len(values) > 1 and all(float(v) > 0 and float(v).is_integer()
                                       and int(v) & (int(v) - 1) == 0 for v in values)
    except (TypeError, ValueError):
        return False


def _save(fig, path):
    """Write the figure as a PNG and return it (closed to pyplot, still there to look at)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return fig


def wide_range(values) -> bool:
    """True for positive numbers spanning a factor of 10 or more (they then get a log axis)."""
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        return False
    return len(numbers) > 1 and min(numbers) > 0 and max(numbers) / min(numbers) >= 10


def line(path, param: str, points: list, title: str = "", original: list | None = None,
         interval_label: str = "95% interval"):
    """Mean validation perplexity against `param` with its 95% interval.

    `points`: dicts with value, mean, low, high (None without an interval) and runs (the
    per-seed perplexities, drawn as dots). `original`: (value, perplexity) pairs of another
    study on the same data, drawn as their own curve (the write-up's runs, on text8).
    The x axis is log2 for powers of two, log10 for positive values spanning a factor of 10 or
    more, the values' order for names, and linear otherwise.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    numeric = all(isinstance(p["value"], (int, float)) for p in points)
    xs = [p["value"] if numeric else i for i, p in enumerate(points)]
    means = [p["mean"] for p in points]
    for x, p in zip(xs, points):
        ax.scatter([x] * len(p["runs"]), p["runs"], s=10, color="0.6", zorder=1)
    with_ci = [(x, p) for x, p in zip(xs, points) if p["low"] is not None]
    if with_ci:
        ax.fill_between([x for x, _ in with_ci], [p["low"] for _, p in with_ci],
                        [p["high"] for _, p in with_ci], alpha=0.25, label=interval_label)
    ax.plot(xs, means, marker="o", label="mean over seeds")
    if original:
        ax.plot([v for v, _ in original], [p for _, p in original], marker="x", linestyle="--",
                color="tab:red", label="the write-up (TensorFlow, text8)")
    if numeric and powers_of_two(xs):
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(int(x)) for x in xs])
    elif numeric and wide_range(xs):
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
    elif not numeric:
        ax.set_xticks(xs, [str(p["value"]) for p in points])
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel(param)
    ax.set_ylabel("validation perplexity")
    ax.set_title(title or f"validation perplexity vs {param}")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def heatmap(path, x_param: str, y_param: str, xs: list, ys: list, grid: list,
            title: str = ""):
    """Mean perplexity for every (x, y), written in its cell; `grid[j][i]` is at (xs[i], ys[j])."""
    plt = _pyplot()
    import numpy as np
    data = np.array([[math.nan if v is None else v for v in row] for row in grid], dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(xs), 1.0 + 0.5 * len(ys)))
    image = ax.imshow(data, origin="lower", aspect="auto", cmap="viridis_r")
    fig.colorbar(image, ax=ax, label="validation perplexity")
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_yticks(range(len(ys)), [str(y) for y in ys])
    ax.set_xlabel(x_param)
    ax.set_ylabel(y_param)
    finite = data[np.isfinite(data)]
    middle = float(np.median(finite)) if finite.size else 0.0
    for j in range(len(ys)):
        for i in range(len(xs)):
            if np.isfinite(data[j, i]):
                ax.text(i, j, f"{data[j, i]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if data[j, i] > middle else "black")
    ax.set_title(title or f"validation perplexity: {y_param} x {x_param}")
    return _save(fig, path)


def _axis(values):
    """Positions on a surface's axis: log2 for powers of two (evenly spaced), else the values'
    order, so that a list such as 1, 2, 3, 4, 5, 10, ..., 50 keeps its labels apart."""
    import numpy as np
    if powers_of_two(values):
        return np.log2(np.asarray(values, dtype=float))
    return np.arange(len(values), dtype=float)


def surface(path, x_param: str, y_param: str, xs: list, ys: list, grid: list,
            title: str = ""):
    """The same means as a 3D surface; each axis log2 for powers of two, else by order (the
    values are the tick labels)."""
    plt = _pyplot()
    import numpy as np
    data = np.array([[math.nan if v is None else v for v in row] for row in grid], dtype=float)
    fx, fy = _axis(xs), _axis(ys)
    gx, gy = np.meshgrid(fx, fy)
    fig = plt.figure(figsize=(7, 5.5))
    ax = fig.add_subplot(projection="3d")
    ax.plot_surface(gx, gy, np.ma.masked_invalid(data), cmap="viridis_r", edgecolor="0.3",
                    linewidth=0.3)
    ax.set_xticks(fx, [str(x) for x in xs], fontsize=8)
    ax.set_yticks(fy, [str(y) for y in ys], fontsize=8)
    ax.set_xlabel(x_param + ("" if powers_of_two(xs) else " (by order)"))
    ax.set_ylabel(y_param + ("" if powers_of_two(ys) else " (by order)"))
    ax.set_zlabel("validation perplexity")
    ax.set_title(title or f"validation perplexity: {y_param} x {x_param}")
    return _save(fig, path)

"""Robustness maps: seed-averaged heatmaps over two axes (the others fixed or at their best), good regions,
one colour range, differences."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from study.analysis.scores import best_per, swept_axes, within
from study.statuses import FINISHED


@dataclass
class Heatmap:
    """A seed-averaged map over x (and y, if the optimizer sweeps two or more axes)."""

    optimizer: str
    x: str
    y: str | None
    x_values: list[float]
    y_values: list[float]
    score: np.ndarray  # shape (len(y_values), len(x_values)): what the map's colour shows
    mean: np.ndarray  # NaN where no seed finished un-diverged
    std: np.ndarray
    n: np.ndarray
    diverged: np.ndarray  # diverged seeds per cell
    runs: np.ndarray
    # with the study's cells (heatmap's ``cells``): the grid's cells at each point of the map (over the
    # seeds and the reduced axes), how many of them finished, and where none has: "not run yet"
    planned: np.ndarray | None = None
    finished: np.ndarray | None = None
    missing: np.ndarray | None = None  # bool: no cell of the point has finished (pending, running, cancelled)


AUTO = "auto"  # heatmap's y: the optimizer's next swept axis


def heatmap(scores: pd.DataFrame, optimizer: str, direction: str, x: str = "lr", y: str | None = AUTO,
            reduce: str = "best", fixed: dict[str, float] | None = None,
            cells: pd.DataFrame | None = None) -> Heatmap:
    """The map over (x, y) (``y`` None: a strip over x; AUTO: the next swept axis). Every other swept
    axis is first fixed where ``fixed`` says, then reduced per (x, y) cell: ``best`` takes the
    configuration with the best score, ``mean`` averages the configurations (scores and seed means
    averaged, seeds and diverged seeds summed).

    ``cells``: the study's cells (``store.results``: every cell, whatever its status). Then the map spans
    the optimizer's whole grid, finished or not (its axes and values are the grid's), and says per point
    how many cells it has (``planned``), how many finished (``finished``) and where none did
    (``missing``): a study still running, or stopped, shows what is not run yet. Without it, the map
    spans what finished."""
    if reduce not in ("best", "mean"):
        raise ValueError(f"reduce must be 'best' or 'mean', not {reduce!r}")
    rows = scores[scores["optimizer"] == optimizer]
    grid = cells[cells["optimizer"] == optimizer] if cells is not None else None
    for axis, value in (fixed or {}).items():
        rows = rows[np.isclose(rows[axis], value)]
        if grid is not None:
            grid = grid[np.isclose(grid[axis], value)]
    axes = swept_axes(scores if cells is None else cells, optimizer)
    if x not in axes:
        x = axes[0] if axes else x
    if y == AUTO:
        y = next((a for a in axes if a != x), None)
    keys = [x] + ([y] if y else [])
    if set(keys) <= set(rows.columns):  # a coupled coordinate is undefined on some rows (τ where λ = 0)
        rows = rows[np.isfinite(rows[keys].to_numpy(dtype=float)).all(axis=1)]
    if grid is not None and set(keys) <= set(grid.columns):
        grid = grid[np.isfinite(grid[keys].to_numpy(dtype=float)).all(axis=1)]
    if rows.empty or not set(keys) <= set(rows.columns):  # nothing of it finished yet
        best = pd.DataFrame(columns=[*keys, "score", "mean", "std", "n", "diverged", "runs"])
    elif reduce == "best":
        best = best_per(rows, keys, direction)
    else:
        best = rows.groupby(keys, sort=True).agg(score=("score", "mean"), mean=("mean", "mean"), std=("std", "mean"),
                                                  n=("n", "sum"), diverged=("diverged", "sum"),
                                                  runs=("runs", "sum")).reset_index()
    shown = rows if grid is None else grid
    x_values = sorted(shown[x].unique())
    y_values = sorted(shown[y].unique()) if y else [math.nan]
    shape = (len(y_values), len(x_values))
    grids = {name: np.full(shape, np.nan) for name in ("score", "mean", "std", "n", "diverged", "runs")}
    place = _placer(x, y, x_values, y_values)
    rows_at, columns = place(best)
    for name in grids:
        grids[name][rows_at, columns] = best[name].to_numpy(dtype=float)
    hm = Heatmap(optimizer, x, y, x_values, y_values, **grids)
    if grid is not None:
        hm.planned, hm.finished = np.zeros(shape, dtype=int), np.zeros(shape, dtype=int)
        np.add.at(hm.planned, place(grid), 1)
        np.add.at(hm.finished, place(grid[grid["status"].isin(FINISHED)]), 1)
        hm.missing = (hm.planned > 0) & (hm.finished == 0)
    return hm


def _placer(x: str, y: str | None, x_values: list[float], y_values: list[float]):
    """(row, column) indices on a map of each row of a frame (by its x and y values)."""
    def place(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        columns = frame[x].map({v: j for j, v in enumerate(x_values)}).to_numpy(dtype=int)
        rows = frame[y].map({v: i for i, v in enumerate(y_values)}).to_numpy(dtype=int) if y else np.zeros_like(columns)
        return rows, columns

    return place


def axis_label(value: float) -> str:
    """A grid value as an axis shows it: powers of ten as 1e-3, others with 3 significant digits."""
    if value > 0 and abs(math.log10(value) - round(math.log10(value))) < 1e-9:
        return f"1e{round(math.log10(value))}"
    return f"{value:.3g}"


def good_mask(hm: Heatmap, direction: str, best: float, delta: float, relative: bool = True) -> np.ndarray:
    """Which cells of a map are good (as :func:`good_cells`): no seed diverged, mean within δ of ``best``."""
    with np.errstate(invalid="ignore"):
        return (np.nan_to_num(hm.diverged, nan=1) == 0) & np.isfinite(hm.mean) & within(best, hm.mean, delta, relative)


def colour_range(maps: list[Heatmap]) -> tuple[float, float]:
    """One colour range for every map of a study (so colours compare across optimizers)."""
    values = np.concatenate([m.score[np.isfinite(m.score)] for m in maps]) if maps else np.array([])
    return (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)


def difference(a: Heatmap, b: Heatmap) -> Heatmap:
    """``a``'s score minus ``b``'s over the points of their common axes (both maps over the same x and y)."""
    if (a.x, a.y) != (b.x, b.y):
        raise ValueError(f"the maps are over different axes: {a.x}/{a.y} and {b.x}/{b.y}")
    xs = [v for v in a.x_values if v in b.x_values]
    ys = [v for v in a.y_values if v in b.y_values] if a.y else [math.nan]

    def pick(hm: Heatmap, grid: np.ndarray) -> np.ndarray:
        rows = [hm.y_values.index(y) for y in ys] if hm.y else [0]
        return grid[np.ix_(rows, [hm.x_values.index(x) for x in xs])]

    grids = {name: pick(a, getattr(a, name)) - pick(b, getattr(b, name)) if name in ("score", "mean")
             else pick(a, getattr(a, name)) + pick(b, getattr(b, name))
             for name in ("score", "mean", "std", "n", "diverged", "runs")}
    grids["std"] = np.full_like(grids["score"], np.nan)  # a difference of means has no seed std here
    return Heatmap(f"{a.optimizer} − {b.optimizer}", a.x, a.y, xs, ys, **grids)

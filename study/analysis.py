"""Robustness analysis computed from stored results; the dashboard only draws what this returns.

Definitions (documented in the README):

* configuration: an optimizer and one point of its hyperparameter grid; its seeds are its runs.
* seed statistics: mean, std, standard error (std/√n) and n of the study metric over the seeds
  that did not diverge; ``diverged`` counts the seeds that did, ``diverged_share`` = diverged/runs.
* score (what ranks configurations and colours the maps): the mean over *every* finished seed,
  a diverged seed (or one with no finite value) taking the study's worst finished value. A
  configuration where 2 of 3 seeds diverged thus ranks below one where none did, whatever its
  surviving seed reached; with no divergence the score is the seed mean.
* relative best (DeepOBS-style): an optimizer's best score as a fraction of the study-wide best
  (best/study best when maximised, study best/best when minimised; 1 for the winner).
* good configuration: no seed diverged and the mean is within δ of the reference best —
  the **study-wide** best score (default: an optimizer that never trains well has no good
  region) or the optimizer's own best; relative |best − mean| ≤ δ·|best|, absolute ≤ δ.
* good-region fraction: good configurations / configurations in the optimizer's grid.
* learning-rate window: with the other axes at their best, the longest run of consecutive
  good learning rates that contains the optimizer's best one; its width is log10(hi/lo)
  decades (0 for a single point).
* divergence rate: diverged runs / finished runs.
* expected best of k (Show-Your-Work): E[max of k configs drawn with replacement] =
  Σ_v v·(F(v)^k − F(v⁻)^k) over the per-configuration scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from optimizers import HPARAM_NAMES
from .schema import FINISHED

SCORED = ("complete", "diverged")  # failed cells have no score
# sweep_results columns that are not hyperparameters (every other column is one: HPARAM_NAMES, and the
# names of a study's own optimizers' hyperparameters that store.results adds)
NOT_HPARAMS = {"study", "optimizer", "seed", "status", "final_train_loss", "final_test_loss", "final_test_accuracy",
               "best_test_accuracy", "diverged", "wall_seconds", "cell", "error", "score", "final_metrics", "hparams",
               "started_at", "finished_at", "device", "peak_memory_mib",
               "mean", "std", "n", "runs", "sem", "diverged_share"}  # the last: cell_scores' statistics


def metric_column(metric: str, results: pd.DataFrame | None = None) -> str:
    """The sweep_results column that holds ``metric``'s final value (``score``, the study metric's final
    value, for a metric with no column of its own)."""
    column = f"final_{metric}"
    return column if results is None or column in results else "score"


def hparam_columns(results: pd.DataFrame) -> list[str]:
    """The hyperparameter columns of a results frame, canonical ones first."""
    return [n for n in HPARAM_NAMES if n in results] + [c for c in results.columns
                                                         if c not in NOT_HPARAMS and c not in HPARAM_NAMES
                                                         and not c.startswith(("_", "final_", "best_"))]


def cell_scores(results: pd.DataFrame, metric: str, direction: str = "maximize") -> pd.DataFrame:
    """One row per configuration (optimizer, hyperparameter point): the seed statistics (mean, std, sem,
    n over non-diverged seeds; diverged, runs, diverged_share) and ``score`` (diverged seeds at the
    study's worst finished value; see the module's definitions)."""
    done = results[results["status"].isin(SCORED)].copy()
    column = metric_column(metric, results)
    values = pd.to_numeric(done[column], errors="coerce")
    done["_ok"] = ~done["diverged"].astype(bool) & np.isfinite(values)
    done["_bad"] = ~done["_ok"]
    done["_value"] = values.where(done["_ok"])
    finished = done["_value"].dropna()
    worst = (finished.min() if direction == "maximize" else finished.max()) if len(finished) else math.nan
    done["_scored"] = done["_value"].fillna(worst)
    keys = ["optimizer", *[n for n in hparam_columns(done) if done[n].notna().any()]]
    grouped = done.groupby(keys, dropna=False, sort=True)
    scores = grouped["_value"].agg(mean="mean", std="std", n="count").reset_index()
    scores["sem"] = scores["std"] / np.sqrt(scores["n"])
    scores["diverged"] = grouped["_bad"].sum().to_numpy().astype(int)
    scores["runs"] = grouped.size().to_numpy()
    scores["diverged_share"] = scores["diverged"] / scores["runs"]
    scores["score"] = grouped["_scored"].mean().to_numpy()
    return scores


def swept_axes(scores: pd.DataFrame, optimizer: str) -> list[str]:
    """The axes with more than one value among ``optimizer``'s rows: of what finished (``scores``), or of
    its whole grid (the study's results, which list every cell whatever its status)."""
    rows = scores[scores["optimizer"] == optimizer]
    return [n for n in hparam_columns(rows) if rows[n].nunique() > 1]


def finished_line(counts: dict[str, int], total: int) -> str:
    """How far a study is, as the dashboard and the report say it: "N of M cells finished" (finished:
    complete, diverged or failed), with what is running, diverged, failed or cancelled."""
    done = sum(counts.get(status, 0) for status in FINISHED)
    parts = [f"{done} of {total} cells finished"]
    parts += [f"{counts[status]} {status}" for status in ("running", "diverged", "failed", "cancelled")
              if counts.get(status)]
    return " · ".join(parts)


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
    if rows.empty or not set(keys) <= set(rows.columns):  # nothing of it finished yet
        best = pd.DataFrame(columns=[*keys, "score", "mean", "std", "n", "diverged", "runs"])
    elif reduce == "best":
        best = _best_per(rows, keys, direction)
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
        return (np.nan_to_num(hm.diverged, nan=1) == 0) & np.isfinite(hm.mean) & _within(best, hm.mean, delta, relative)


def _within(best: float, means, delta: float, relative: bool):
    """Elementwise: |best − mean| ≤ δ·|best| (relative) or ≤ δ (absolute)."""
    tolerance = delta * abs(best) if relative else delta
    return abs(best - means) <= tolerance + 1e-12


def colour_range(maps: list[Heatmap]) -> tuple[float, float]:
    """One colour range for every map of a study (so colours compare across optimizers)."""
    values = np.concatenate([m.score[np.isfinite(m.score)] for m in maps]) if maps else np.array([])
    return (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)


def _best_per(rows: pd.DataFrame, keys: list[str], direction: str) -> pd.DataFrame:
    """The best-scored configuration of ``rows`` for each value of ``keys``."""
    ranked = rows.assign(_rank=_rank_key(rows["score"], direction)).sort_values("_rank", kind="stable")
    return ranked.groupby(keys, sort=True).head(1)


def _rank_key(values: pd.Series, direction: str) -> pd.Series:
    """Smaller is better; NaN (nothing finished) last."""
    key = -values if direction == "maximize" else values
    return key.fillna(math.inf)


def best_score(rows: pd.DataFrame, direction: str) -> float:
    """The best configuration's score among ``rows`` (NaN if none has one)."""
    scored = rows["score"].dropna()
    if scored.empty:
        return math.nan
    return float(scored.max() if direction == "maximize" else scored.min())


def good_cells(rows: pd.DataFrame, direction: str, delta: float, relative: bool = True,
               best: float | None = None) -> pd.Series:
    """Configurations with no diverged seed whose mean is within δ of ``best`` (default: the best of
    ``rows``; pass the study-wide best to compare optimizers)."""
    valid = rows["mean"].notna() & (rows["diverged"] == 0)
    best = best_score(rows, direction) if best is None else best
    if not valid.any() or math.isnan(best):
        return valid & False
    return valid & _within(best, rows["mean"], delta, relative)


def lr_window_decades(rows: pd.DataFrame, direction: str, good: pd.Series) -> float:
    """Width in decades of the contiguous good lr run (other axes at their best) around the best lr."""
    if "lr" not in rows or rows["lr"].nunique() < 2 or not good.any():
        return 0.0
    per_lr = rows.assign(_good=good).groupby("lr")["_good"].any().sort_index()
    best_lr = rows.loc[good].assign(_k=_rank_key(rows.loc[good, "score"], direction)).sort_values("_k")["lr"].iloc[0]
    lrs, flags = list(per_lr.index), list(per_lr.to_numpy())
    lo = hi = lrs.index(best_lr)
    while lo > 0 and flags[lo - 1]:
        lo -= 1
    while hi < len(lrs) - 1 and flags[hi + 1]:
        hi += 1
    return round(math.log10(lrs[hi] / lrs[lo]), 6)


def expected_best_of_k(values: np.ndarray, k: int, direction: str) -> float:
    """Show-Your-Work estimator of the expected best score among k configs drawn with replacement."""
    scores = np.sort(values if direction == "maximize" else -values)
    n = len(scores)
    unique = np.unique(scores)
    cdf = np.searchsorted(scores, unique, side="right") / n
    below = np.concatenate([[0.0], cdf[:-1]])
    expected = float(np.sum(unique * (cdf**k - below**k)))
    return expected if direction == "maximize" else -expected


@dataclass
class Robustness:
    optimizer: str
    best: float  # the best configuration's score
    relative_best: float  # best against the study-wide best (1 for the winner; DeepOBS-style)
    good_fraction: float
    lr_window_decades: float
    divergence_rate: float
    mean_seed_std: float  # over configurations with two or more surviving seeds
    expected_best_1: float
    expected_best_10: float
    configs: int


def _relative(best: float, study_best: float, direction: str) -> float:
    """``best`` as a fraction of the study's best: best/study for a maximised metric, study/best for a
    minimised one (so 0.9 reads "10 % short of the winner" either way); NaN where undefined."""
    numerator, denominator = (best, study_best) if direction == "maximize" else (study_best, best)
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator == 0:
        return math.nan
    return numerator / denominator


def robustness(scores: pd.DataFrame, direction: str, delta: float = 0.05, relative: bool = True,
               reference: str = "study") -> list[Robustness]:
    """Each optimizer's robustness; ``reference``: "study" measures good regions against the study-wide
    best (comparable across optimizers), "optimizer" against each optimizer's own best."""
    if reference not in ("study", "optimizer"):
        raise ValueError(f"reference must be 'study' or 'optimizer', not {reference!r}")
    study_best = best_score(scores, direction)
    summary = []
    for optimizer in scores["optimizer"].unique():
        rows = scores[scores["optimizer"] == optimizer].reset_index(drop=True)
        good = good_cells(rows, direction, delta, relative, best=study_best if reference == "study" else None)
        per_config = rows["score"].dropna().to_numpy(dtype=float)
        summary.append(Robustness(
            optimizer=optimizer,
            best=best_score(rows, direction),
            relative_best=_relative(best_score(rows, direction), study_best, direction),
            good_fraction=float(good.mean()),
            lr_window_decades=lr_window_decades(rows, direction, good),
            divergence_rate=float(rows["diverged"].sum() / rows["runs"].sum()),
            mean_seed_std=float(rows["std"].mean()) if rows["std"].notna().any() else math.nan,
            expected_best_1=expected_best_of_k(per_config, 1, direction) if len(per_config) else math.nan,
            expected_best_10=expected_best_of_k(per_config, 10, direction) if len(per_config) else math.nan,
            configs=len(rows)))
    return summary


@dataclass
class Sensitivity:
    """The metric against one axis (lr by default) with every other axis at its best per value."""

    optimizer: str
    axis: str
    values: list[float]
    score: list[float]
    mean: list[float]  # over the surviving seeds of the chosen configuration (NaN: none survived)
    std: list[float]
    diverged: list[int]
    runs: list[int]


def sensitivity(scores: pd.DataFrame, optimizer: str, direction: str, axis: str = "lr") -> Sensitivity:
    best = _best_per(scores[scores["optimizer"] == optimizer], [axis], direction).sort_values(axis)
    return Sensitivity(optimizer, axis, best[axis].tolist(), best["score"].tolist(), best["mean"].tolist(),
                       best["std"].fillna(0.0).tolist(), best["diverged"].astype(int).tolist(),
                       best["runs"].astype(int).tolist())


def expected_best_curve(scores: pd.DataFrame, optimizer: str, direction: str) -> list[float]:
    """Expected best score of k configurations drawn at random, for k = 1 … the grid's size."""
    values = scores.loc[scores["optimizer"] == optimizer, "score"].dropna().to_numpy(dtype=float)
    return [expected_best_of_k(values, k, direction) for k in range(1, len(values) + 1)]


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


def across_studies(studies: dict[str, tuple[pd.DataFrame, str]], delta: float = 0.05) -> pd.DataFrame:
    """Per optimizer × study (``studies``: name → (cell_scores, direction)): best, good-region fraction
    (against each study's own best) and lr window — is an optimizer robust everywhere?"""
    rows = []
    for name, (scores, direction) in studies.items():
        for r in robustness(scores, direction, delta):
            rows.append({"optimizer": r.optimizer, "study": name, "best": r.best, "good_fraction": r.good_fraction,
                         "lr_window_decades": r.lr_window_decades, "divergence_rate": r.divergence_rate})
    return pd.DataFrame(rows, columns=["optimizer", "study", "best", "good_fraction", "lr_window_decades",
                                       "divergence_rate"])


def importance(results: pd.DataFrame, metric: str, optimizer: str, direction: str,
               evaluator: str = "fanova") -> dict[str, float]:
    """How much each swept hyperparameter of ``optimizer`` matters, by Optuna's own evaluators (fANOVA or
    PED-ANOVA) on an in-memory Optuna study of its runs: one trial per seed, a diverged seed at the
    study's worst finished value (the score rule). Empty when the optimizer sweeps no axis."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    scores = cell_scores(results, metric, direction)
    axes = swept_axes(scores, optimizer)
    if not axes:
        return {}
    done = results[(results["optimizer"] == optimizer) & results["status"].isin(SCORED)]
    values = pd.to_numeric(done[metric_column(metric, results)], errors="coerce")
    finished = pd.to_numeric(results.loc[results["status"] == "complete", metric_column(metric, results)],
                             errors="coerce").dropna()
    worst = finished.min() if direction == "maximize" else finished.max()
    values = values.where(~done["diverged"].astype(bool) & np.isfinite(values), worst)
    distributions = {}
    for axis in axes:
        points = sorted(done[axis].dropna().unique())
        positive = min(points) > 0
        log = positive and max(points) / min(points) >= 100  # lr-like ranges are searched in decades
        distributions[axis] = FloatDistribution(min(points), max(points), log=log)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line per call
    study = optuna.create_study(direction=direction)
    study.add_trials([optuna.trial.create_trial(params={a: float(row[a]) for a in axes}, distributions=distributions,
                                                value=float(value))
                      for (_, row), value in zip(done.iterrows(), values)])
    chosen = {"fanova": optuna.importance.FanovaImportanceEvaluator(seed=0),
              "ped-anova": optuna.importance.PedAnovaImportanceEvaluator()}[evaluator]
    return dict(optuna.importance.get_param_importances(study, evaluator=chosen))

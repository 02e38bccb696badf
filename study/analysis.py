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

The literature's measures (beside ours; formulas and citations also in :data:`LITERATURE`):

* LR sensitivity (Wortsman et al. 2023): over the swept learning rates η₁ < … < η_L (a log-spaced grid:
  the mean over its points is the expectation over log η), mean_η [min(ℓ(η), ℓ₀)] − ℓ* with ℓ* = min_η
  ℓ(η); for a maximised metric (accuracy) the mirror ℓ* − mean_η [max(ℓ(η), ℓ₀)], ℓ* = max_η ℓ(η).
  ℓ(η) is a configuration's mean over its seeds of each run's capped value (a diverged run counts as ℓ₀).
  ℓ₀, the value before training: a run's ``final_initial_<metric>`` where the results hold one (a worker
  that records the metric at initialisation), else the **study's worst finished value** of the metric —
  the value the score rule gives a diverged seed; with it the cap changes nothing but diverged runs and
  the measure is mean_η score(η) − best. Per optimizer with every other axis at its best per lr (the
  Sensitivity page's curve: the leaderboard's value) and for each combination of the other axes' values.
* tunability (Sivaprasad et al. 2020, as idiap/hypaobp computes it): the optimizer's T per-configuration
  scores drawn in random order — ``SHUFFLES`` seeded bootstrap resamples of length T, with replacement
  (sklearn's ``resample``, which their code calls; no unshuffled run, a grid's order not being random) —
  P_t the best score after t draws; ω-tunability Σ_t ω_t·P_t averaged over the resamples (one-shot ω₁ = 1,
  peak ω_T = 1, uniform 1/T, early ω_t ∝ T − t + 1, late ω_t ∝ t); α-tunability: on the mean curve, the
  share t/T of the budget at the first t with P_t ≥ α·max P (minimised: P_t ≤ (2 − α)·min P, their rule;
  both meant for positive metrics), α = 0.9, 0.95, 1.0; sharpness = α₁.₀ − α₀.₉₅.
* expected best of k with a band: Dodge et al.'s estimator on the scores, and a pointwise 95 % percentile
  band from ``RESAMPLES`` bootstrap resamples of the configurations (the estimator on each resample).
* coupled coordinates: τ = 1/(η·λ), the timescale AdamW's decoupled weight decay averages over (Wang &
  Aitchison 2025), in epochs where the steps per epoch are known (else in steps: ``tau_steps``); β2's
  half-life ln 0.5 / ln β2 in steps (:func:`coupled_axes`).
* seed bootstrap: ``RESAMPLES`` resamples of the study's seeds with replacement, the same draw for every
  optimizer (paired: a seed fixes the initial weights and the data order of every optimizer's run); each
  measure recomputed from the resampled seeds (good region, lr window, LR sensitivity); 95 % percentile
  intervals; P(A less sensitive than B) = the share of resamples where A's LR sensitivity is lower (good
  region: larger; lr window: wider), a tie counting half. A study with one seed has no seed uncertainty
  to resample: its intervals are points.
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
    if set(keys) <= set(rows.columns):  # a coupled coordinate is undefined on some rows (τ where λ = 0)
        rows = rows[np.isfinite(rows[keys].to_numpy(dtype=float)).all(axis=1)]
    if grid is not None and set(keys) <= set(grid.columns):
        grid = grid[np.isfinite(grid[keys].to_numpy(dtype=float)).all(axis=1)]
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


# --- the literature's sensitivity measures (see the module's definitions) ------------------------------

RESAMPLES = 200  # seed-bootstrap and configuration-bootstrap resamples
SHUFFLES = 100  # Sivaprasad et al.'s num_shuffle default
LEVEL = 0.95  # the intervals' and bands' coverage
ALPHAS = (0.9, 0.95, 1.0)

LITERATURE = {
    "lr_sensitivity": "LR sensitivity (Wortsman et al. 2023, small-scale proxies): mean over the swept log-spaced "
                      "learning rates of min(ℓ(η), ℓ₀) − ℓ*, ℓ* the best over the range, ℓ₀ the value before "
                      "training (a diverged run counts as ℓ₀; the study's worst finished value where no initial "
                      "value is recorded); for accuracies the mirror ℓ* − max(ℓ(η), ℓ₀). Lower: less sensitive. "
                      "Other axes at their best per lr",
    "one_shot": "one-shot tunability ω₁ = 1: the expected score of 1 random configuration "
                "(Sivaprasad et al. 2020, Σ_t ω_t·P_t, P_t the best after t random draws)",
    "peak": "peak tunability ω_T = 1: the expected best of all T draws (Sivaprasad et al. 2020)",
    "uniform": "uniform tunability (CPU) ω_t = 1/T: Σ_t P_t / T (Sivaprasad et al. 2020)",
    "early": "early-weighted tunability (CPE) ω_t ∝ T − t + 1 (Sivaprasad et al. 2020)",
    "late": "late-weighted tunability (CPL) ω_t ∝ t (Sivaprasad et al. 2020)",
    "alpha_0.9": "α-tunability at α = 0.9: share t/T of the budget until the mean best-so-far P_t reaches "
                 "0.9 × its best (minimised: (2 − 0.9) × best) (Sivaprasad et al. 2020)",
    "alpha_0.95": "α-tunability at α = 0.95 (Sivaprasad et al. 2020)",
    "alpha_1.0": "α-tunability at α = 1.0: share of the budget until P_t reaches its best (Sivaprasad et al. 2020)",
    "sharpness": "sharpness: α-tunability at 1.0 minus at 0.95 (Sivaprasad et al. 2020)",
    "expected_best": "expected best of k (Dodge et al. 2019): Σ_j v_j [F̂(v_j)^k − F̂(v_{j−1})^k] over the "
                     "configurations' scores; band: pointwise 95 % percentile bootstrap over the configurations",
    "tau": "τ = 1/(η·λ): the timescale AdamW's decoupled weight decay averages over (Wang & Aitchison 2025); "
           "in epochs where the steps per epoch are known, else in steps",
    "beta2_half_life": "β2's half-life in steps: ln 0.5 / ln β2",
    "interval": "95 % percentile interval of a seed bootstrap (the study's seeds resampled with replacement, "
                f"{RESAMPLES} resamples, the same for every optimizer)",
    "comparison": "P(row less sensitive than column): share of the seed-bootstrap resamples where the row's LR "
                  "sensitivity is lower (good region: larger; lr window: wider), ties counting half",
}

AXIS_TITLES = {"tau_epochs": "τ = 1/(η·λ) (epochs)", "tau_steps": "τ = 1/(η·λ) (steps)",
               "beta2_half_life": "β2 half-life ln 0.5/ln β2 (steps)"}
DERIVED_FROM = {"tau_epochs": ("lr", "weight_decay"), "tau_steps": ("lr", "weight_decay"),
                "beta2_half_life": ("beta2",)}


def _significant(values: np.ndarray, digits: int = 6) -> np.ndarray:
    """``values`` rounded to ``digits`` significant digits (products of grid values meet on one point)."""
    values = np.asarray(values, dtype=float)
    out = values.copy()
    finite = np.isfinite(values) & (values != 0)
    scale = 10.0 ** np.floor(np.log10(np.abs(values[finite])))
    out[finite] = np.round(values[finite] / scale, digits - 1) * scale
    return out


def steps_per_epoch(results: pd.DataFrame, spec: dict | None = None) -> float | None:
    """Optimizer steps per epoch, where the study knows it: a ``final_steps_per_epoch`` the worker recorded,
    else the study file's ``task_options.steps_per_epoch`` (rosenbrock, reddi); None otherwise."""
    if "final_steps_per_epoch" in results:
        recorded = pd.to_numeric(results["final_steps_per_epoch"], errors="coerce").dropna()
        if len(recorded):
            return float(recorded.median())
    given = ((spec or {}).get("task_options") or {}).get("steps_per_epoch")
    return float(given) if given else None


def coupled_axes(frame: pd.DataFrame, steps_per_epoch: float | None = None) -> pd.DataFrame:
    """``frame`` (results or cell scores) with the coupled coordinates as columns a map can take as axes:
    ``tau_epochs`` = 1/(η·λ) / steps per epoch (``tau_steps`` = 1/(η·λ) when they are unknown), where a
    row has lr and weight_decay (NaN where λ = 0: no decay, no timescale), and ``beta2_half_life`` =
    ln 0.5 / ln β2 steps where it has beta2 in (0, 1). Values rounded to 6 significant digits."""
    out = frame.copy()
    if {"lr", "weight_decay"} <= set(frame.columns):
        lr = pd.to_numeric(frame["lr"], errors="coerce").to_numpy(float)
        wd = pd.to_numeric(frame["weight_decay"], errors="coerce").to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            tau = np.where((lr > 0) & (wd > 0), 1.0 / (lr * wd), np.nan)
        if steps_per_epoch:
            out["tau_epochs"] = _significant(tau / steps_per_epoch)
        else:
            out["tau_steps"] = _significant(tau)
    if "beta2" in frame.columns:
        beta2 = pd.to_numeric(frame["beta2"], errors="coerce").to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["beta2_half_life"] = _significant(np.where((beta2 > 0) & (beta2 < 1), math.log(0.5) / np.log(beta2),
                                                           np.nan))
    return out


@dataclass
class SeedTable:
    """A study's runs as configuration × seed matrices (the configurations in :func:`cell_scores`' order)."""

    configs: pd.DataFrame  # one row per configuration: optimizer and hyperparameters
    seeds: np.ndarray
    value: np.ndarray  # (C, S): an undiverged run's metric; NaN where it diverged, has no value or did not run
    diverged: np.ndarray  # (C, S) bool: ran and diverged (or no finite value)
    present: np.ndarray  # (C, S) bool: a scored run
    initial: np.ndarray  # (C, S): each run's ℓ₀ (the worst finished value where none is recorded)
    worst: float
    maximize: bool


def seed_table(results: pd.DataFrame, metric: str, direction: str = "maximize",
               initial: float | None = None) -> SeedTable:
    """The runs as matrices; ℓ₀: ``initial`` if given, else each run's ``final_initial_<metric>`` where
    recorded, else the study's worst finished value."""
    done = results[results["status"].isin(SCORED)]
    values = pd.to_numeric(done[metric_column(metric, results)], errors="coerce").to_numpy(float)
    ok = ~done["diverged"].astype(bool).to_numpy() & np.isfinite(values)
    maximize = direction == "maximize"
    worst = float((values[ok].min() if maximize else values[ok].max()) if ok.any() else math.nan)
    keys = ["optimizer", *[n for n in hparam_columns(done) if done[n].notna().any()]]
    grouped = done.groupby(keys, dropna=False, sort=True)
    config = grouped.ngroup().to_numpy()
    configs = grouped.size().reset_index()[keys]
    seeds, seed = np.unique(done["seed"].to_numpy(), return_inverse=True)
    shape = (len(configs), len(seeds))
    value, diverged, present = np.full(shape, np.nan), np.zeros(shape, bool), np.zeros(shape, bool)
    value[config, seed] = np.where(ok, values, np.nan)
    diverged[config, seed] = ~ok
    present[config, seed] = True
    recorded = f"final_initial_{metric}"
    start = np.full(shape, worst)
    if initial is not None:
        start[:] = initial
    elif recorded in done:
        start[config, seed] = pd.to_numeric(done[recorded], errors="coerce").fillna(worst).to_numpy(float)
    return SeedTable(configs, seeds, value, diverged, present, start, worst, maximize)


def _seed_weights(seeds: int, resamples: int, seed: int) -> np.ndarray:
    """Row 0: every seed once (the estimate); rows 1…: how often each seed is drawn in a resample."""
    draws = np.random.default_rng(seed).integers(0, seeds, size=(resamples, seeds))
    weights = np.zeros((resamples, seeds))
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1.0)
    return np.vstack([np.ones((1, seeds)), weights])


def _weighted_mean(weights: np.ndarray, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B, C): Σ_s w_bs·values_cs over ``mask`` / Σ_s w_bs over ``mask`` (NaN where the weight is 0)."""
    total = weights @ np.where(mask, values, 0.0).T
    count = weights @ mask.T.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.where(count > 0, count, 1.0), np.nan)


def _nanbest(values: np.ndarray, maximize: bool, axis: int) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are NaN
        return np.nanmax(values, axis=axis) if maximize else np.nanmin(values, axis=axis)


@dataclass
class _Replicates:
    score: np.ndarray  # (B, C) the score rule on the drawn seeds
    mean: np.ndarray  # over the drawn seeds that did not diverge
    diverged: np.ndarray  # drawn diverged runs
    capped: np.ndarray  # mean of min(ℓ, ℓ₀) (max for a maximised metric), a diverged run at ℓ₀


def _replicates(table: SeedTable, weights: np.ndarray) -> _Replicates:
    ok = table.present & ~table.diverged
    scored = np.where(table.diverged, table.worst, table.value)
    cap = np.maximum if table.maximize else np.minimum
    capped = np.where(table.diverged, table.initial, cap(table.value, table.initial))
    return _Replicates(score=_weighted_mean(weights, scored, table.present),
                       mean=_weighted_mean(weights, table.value, ok),
                       diverged=weights @ (table.present & table.diverged).T.astype(float),
                       capped=_weighted_mean(weights, capped, table.present))


def _lr_index(configs: pd.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The optimizer's swept learning rates (sorted) and each of its configurations' index among them."""
    lrs = np.array(sorted(configs.loc[rows, "lr"].dropna().unique()), dtype=float) if "lr" in configs else np.array([])
    index = np.searchsorted(lrs, configs.loc[rows, "lr"].to_numpy(float)) if len(lrs) else np.zeros(len(rows), int)
    return lrs, index


def _lr_profile_sensitivity(capped: np.ndarray, index: np.ndarray, lrs: int, maximize: bool) -> np.ndarray:
    """(B,): the LR sensitivity of the profile — each lr at its best configuration — from (B, C') values."""
    if lrs < 2:
        return np.full(capped.shape[0], np.nan)
    profile = np.stack([_nanbest(capped[:, index == j], maximize, axis=1) for j in range(lrs)], axis=1)
    return _lr_sensitivity_of(profile, maximize)


def _lr_sensitivity_of(profile: np.ndarray, maximize: bool) -> np.ndarray:
    """Rows of ℓ(η) over the lr grid (capped at ℓ₀ already): mean − best (minimised), best − mean (maximised)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        best = _nanbest(profile, maximize, axis=1)
        mean = np.nanmean(profile, axis=1)
    return best - mean if maximize else mean - best


def _lr_window(good: np.ndarray, score: np.ndarray, index: np.ndarray, lrs: np.ndarray, maximize: bool) -> np.ndarray:
    """(B,): as :func:`lr_window_decades`, per resample: the contiguous run of lrs with a good configuration
    that holds the best-scored good configuration's lr, in decades."""
    b = good.shape[0]
    if len(lrs) < 2:
        return np.zeros(b)
    per_lr = np.stack([good[:, index == j].any(axis=1) for j in range(len(lrs))], axis=1)  # (B, L)
    key = np.where(good, score if maximize else -score, -np.inf)
    best = index[np.argmax(key, axis=1)]
    run = np.cumsum(~per_lr, axis=1)  # a run of good lrs shares the count of bad ones before it
    same = per_lr & (run == run[np.arange(b), best][:, None])
    lo = np.argmax(same, axis=1)
    hi = len(lrs) - 1 - np.argmax(same[:, ::-1], axis=1)
    width = np.round(np.log10(lrs[hi] / lrs[lo]), 6)
    return np.where(good.any(axis=1), width, 0.0)


MEASURES = {"good_fraction": "larger", "lr_window_decades": "larger", "lr_sensitivity": "smaller"}


@dataclass
class SeedBootstrap:
    optimizers: list[str]
    seeds: int
    resamples: int
    estimates: dict[str, np.ndarray]  # measure → (O,) on every seed once
    replicates: dict[str, np.ndarray]  # measure → (resamples, O)
    level: float = LEVEL

    def interval(self, measure: str) -> tuple[np.ndarray, np.ndarray]:
        """The percentile interval per optimizer (NaN where the measure is undefined)."""
        draws = self.replicates[measure]
        tail = (1 - self.level) / 2 * 100
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanpercentile(draws, tail, axis=0), np.nanpercentile(draws, 100 - tail, axis=0)

    def less_sensitive(self, measure: str = "lr_sensitivity") -> pd.DataFrame:
        """P(row less sensitive than column) from the resamples (ties half; NaN where either is undefined)."""
        draws = self.replicates[measure]
        a, b = draws[:, :, None], draws[:, None, :]
        wins = (a < b) if MEASURES[measure] == "smaller" else (a > b)
        p = (wins + 0.5 * (a == b)).mean(axis=0)
        p[np.isnan(draws).any(axis=0)[:, None] | np.isnan(draws).any(axis=0)[None, :]] = np.nan
        np.fill_diagonal(p, np.nan)
        return pd.DataFrame(p, index=self.optimizers, columns=self.optimizers)


def seed_bootstrap(results: pd.DataFrame, metric: str, direction: str = "maximize", delta: float = 0.05,
                   relative: bool = True, reference: str = "study", initial: float | None = None,
                   resamples: int = RESAMPLES, seed: int = 0) -> SeedBootstrap:
    """Good-region share, lr window and LR sensitivity per optimizer, on every seed and on ``resamples``
    seeded resamples of the seeds (the same for every optimizer); see the module's definitions."""
    if reference not in ("study", "optimizer"):
        raise ValueError(f"reference must be 'study' or 'optimizer', not {reference!r}")
    table = seed_table(results, metric, direction, initial)
    names = list(dict.fromkeys(table.configs["optimizer"]))
    if not names:  # nothing scored yet
        return SeedBootstrap([], len(table.seeds), resamples, {m: np.array([]) for m in MEASURES},
                             {m: np.zeros((resamples, 0)) for m in MEASURES})
    weights = _seed_weights(len(table.seeds), resamples, seed)
    rep = _replicates(table, weights)
    maximize = table.maximize
    study_best = _nanbest(rep.score, maximize, axis=1)[:, None]
    measures = {m: np.full((len(weights), len(names)), np.nan) for m in MEASURES}
    for k, optimizer in enumerate(names):
        rows = np.flatnonzero(table.configs["optimizer"].to_numpy() == optimizer)
        score, mean = rep.score[:, rows], rep.mean[:, rows]
        best = study_best if reference == "study" else _nanbest(score, maximize, axis=1)[:, None]
        tolerance = delta * np.abs(best) if relative else delta
        with np.errstate(invalid="ignore"):
            good = (rep.diverged[:, rows] == 0) & np.isfinite(mean) & (np.abs(best - mean) <= tolerance + 1e-12)
        lrs, index = _lr_index(table.configs, rows)
        measures["good_fraction"][:, k] = good.mean(axis=1)
        measures["lr_window_decades"][:, k] = _lr_window(good, score, index, lrs, maximize)
        measures["lr_sensitivity"][:, k] = _lr_profile_sensitivity(rep.capped[:, rows], index, len(lrs), maximize)
    return SeedBootstrap(names, len(table.seeds), resamples, {m: v[0] for m, v in measures.items()},
                         {m: v[1:] for m, v in measures.items()})


def lr_sensitivity(results: pd.DataFrame, metric: str, direction: str = "maximize",
                   initial: float | None = None) -> pd.DataFrame:
    """LR sensitivity (Wortsman et al. 2023) per optimizer: first with the other axes at their best per lr
    (``other axes`` = "at their best per lr"), then for each combination of the other swept axes' values
    (the lr sweep at those values). Columns: optimizer, other axes, lrs (how many), lr_sensitivity, best
    (ℓ*)."""
    table = seed_table(results, metric, direction, initial)
    capped = _replicates(table, np.ones((1, len(table.seeds)))).capped[0]
    rows_out = []
    for optimizer in (o for o in dict.fromkeys(results["optimizer"]) if o in set(table.configs["optimizer"])):
        rows = np.flatnonzero(table.configs["optimizer"].to_numpy() == optimizer)
        mine = table.configs.loc[rows]
        lrs, index = _lr_index(table.configs, rows)
        if len(lrs) < 2:
            continue
        profile = np.array([_nanbest(capped[rows][index == j], table.maximize, axis=0) for j in range(len(lrs))])
        rows_out.append({"optimizer": optimizer, "other axes": "at their best per lr", "lrs": len(lrs),
                         "lr_sensitivity": float(_lr_sensitivity_of(profile[None], table.maximize)[0]),
                         "best": float(_nanbest(profile, table.maximize, axis=0))})
        others = [a for a in hparam_columns(mine) if a != "lr" and mine[a].nunique() > 1]
        if not others:
            continue
        for values, group in mine.groupby(others, sort=True):
            values = values if isinstance(values, tuple) else (values,)
            at = np.searchsorted(rows, group.index.to_numpy())  # positions among the optimizer's rows
            curve = capped[rows][at][np.argsort(index[at])]
            if len(curve) < 2:
                continue
            rows_out.append({"optimizer": optimizer,
                             "other axes": ", ".join(f"{a} = {axis_label(v)}" for a, v in zip(others, values)),
                             "lrs": len(curve),
                             "lr_sensitivity": float(_lr_sensitivity_of(curve[None], table.maximize)[0]),
                             "best": float(_nanbest(curve, table.maximize, axis=0))})
    return pd.DataFrame(rows_out, columns=["optimizer", "other axes", "lrs", "lr_sensitivity", "best"])


def leaderboard(results: pd.DataFrame, metric: str, direction: str = "maximize", delta: float = 0.05,
                relative: bool = True, reference: str = "study", initial: float | None = None,
                order: list[str] | None = None) -> tuple[pd.DataFrame, SeedBootstrap]:
    """The leaderboard the dashboard and the report show: :func:`robustness`' columns, then the LR
    sensitivity and the seed-bootstrap intervals (``*_low``, ``*_high``) of the good-region share, the lr
    window and the LR sensitivity; with the bootstrap itself (for the pairwise comparison)."""
    scores = cell_scores(results, metric, direction)
    board = pd.DataFrame([vars(r) for r in robustness(scores, direction, delta, relative, reference)])
    boot = seed_bootstrap(results, metric, direction, delta, relative, reference, initial)
    where = {o: k for k, o in enumerate(boot.optimizers)}
    at = [where[o] for o in board["optimizer"]]
    board["lr_sensitivity"] = boot.estimates["lr_sensitivity"][at]
    for measure in ("good_fraction", "lr_window_decades", "lr_sensitivity"):
        low, high = boot.interval(measure)
        board[f"{measure}_low"], board[f"{measure}_high"] = low[at], high[at]
    if order is not None:
        board = board.set_index("optimizer").loc[[o for o in order if o in set(board["optimizer"])]].reset_index()
    return board, boot


def comparison(boot: SeedBootstrap, order: list[str] | None = None) -> pd.DataFrame:
    """Each ordered pair of optimizers: P(a less sensitive than b) by LR sensitivity, good region and lr window."""
    names = [o for o in (order or boot.optimizers) if o in boot.optimizers]
    tables = {m: boot.less_sensitive(m) for m in MEASURES}
    rows = [{"optimizer": a, "than": b, **{f"P({m})": float(tables[m].loc[a, b]) for m in
                                           ("lr_sensitivity", "good_fraction", "lr_window_decades")}}
            for a in names for b in names if a != b]
    return pd.DataFrame(rows, columns=["optimizer", "than", "P(lr_sensitivity)", "P(good_fraction)",
                                       "P(lr_window_decades)"])


# Sivaprasad et al. 2020 --------------------------------------------------------------------------------

def best_so_far(values: np.ndarray, direction: str, orders: np.ndarray) -> np.ndarray:
    """P[b, t−1]: the best of ``values[orders[b, :t]]`` — the best-so-far curve of each drawn order."""
    drawn = np.asarray(values, dtype=float)[np.asarray(orders)]
    return np.maximum.accumulate(drawn, axis=1) if direction == "maximize" else np.minimum.accumulate(drawn, axis=1)


def omega_weights(budget: int) -> dict[str, np.ndarray]:
    """Sivaprasad et al.'s weightings ω over t = 1 … T (each sums to 1)."""
    t = np.arange(1, budget + 1, dtype=float)
    one = np.zeros(budget)
    one[0] = 1.0
    peak = np.zeros(budget)
    peak[-1] = 1.0
    early, late = budget - t + 1, t
    return {"one_shot": one, "peak": peak, "uniform": np.full(budget, 1.0 / budget), "early": early / early.sum(),
            "late": late / late.sum()}


def alpha_tunability(curve: np.ndarray, direction: str, alphas=ALPHAS) -> dict[float, float]:
    """Share t/T of the budget at the first t where the (mean) best-so-far curve reaches α × its best
    (minimised: (2 − α) × its best), as their code's ``_compute_tunability_at_lvl``."""
    curve = np.asarray(curve, dtype=float)
    out = {}
    for alpha in alphas:
        if direction == "maximize":
            reached = curve >= alpha * curve.max() - 1e-12
        else:
            reached = curve <= (2 - alpha) * curve.min() + 1e-12
        out[alpha] = float((np.argmax(reached) + 1) / len(curve)) if reached.any() else math.inf
    return out


@dataclass
class Tunability:
    optimizer: str
    budget: int  # T: the optimizer's configurations
    curve: list[float]  # the mean best-so-far P_t over the shuffles, t = 1 … T
    one_shot: float
    peak: float
    uniform: float
    early: float
    late: float
    alpha: dict[float, float]
    sharpness: float


def tunability_of(values: np.ndarray, direction: str, orders: np.ndarray, optimizer: str = "") -> Tunability:
    """The measures from given draw orders (rows of indexes into ``values``; each row one shuffle of T draws)."""
    curves = best_so_far(values, direction, orders)
    omegas = {name: float((curves @ w).mean()) for name, w in omega_weights(curves.shape[1]).items()}
    mean = curves.mean(axis=0)
    alpha = alpha_tunability(mean, direction)
    return Tunability(optimizer, curves.shape[1], mean.tolist(), **omegas, alpha=alpha,
                      sharpness=alpha[1.0] - alpha[0.95])


def tunability(scores: pd.DataFrame, direction: str, shuffles: int = SHUFFLES, seed: int = 0) -> list[Tunability]:
    """Each optimizer's tunability over its configurations' scores, drawn in ``shuffles`` seeded bootstrap
    orders (T draws with replacement each; the same generator state for every optimizer: reproducible and
    independent of the optimizers' order)."""
    out = []
    for optimizer in scores["optimizer"].unique():
        values = scores.loc[scores["optimizer"] == optimizer, "score"].dropna().to_numpy(float)
        if not len(values):
            continue
        orders = np.random.default_rng(seed).integers(0, len(values), size=(shuffles, len(values)))
        out.append(tunability_of(values, direction, orders, optimizer))
    return out


def tunability_frame(found: list[Tunability]) -> pd.DataFrame:
    """One row per optimizer: T, the ω-tunabilities, the α-tunabilities and the sharpness."""
    return pd.DataFrame([{"optimizer": t.optimizer, "budget": t.budget, "one_shot": t.one_shot, "peak": t.peak,
                          "uniform": t.uniform, "early": t.early, "late": t.late,
                          **{f"alpha_{a}": v for a, v in t.alpha.items()}, "sharpness": t.sharpness} for t in found],
                        columns=["optimizer", "budget", "one_shot", "peak", "uniform", "early", "late",
                                 *[f"alpha_{a}" for a in ALPHAS], "sharpness"])


def _dodge_weights(n: int, ks: np.ndarray) -> np.ndarray:
    """(n, K): (j/n)^k − ((j−1)/n)^k, so that sorted values @ it = Dodge et al.'s E[max of k] (ties included)."""
    j = np.arange(1, n + 1, dtype=float)[:, None]
    return (j / n) ** ks[None, :] - ((j - 1) / n) ** ks[None, :]


def expected_best_band(values: np.ndarray, direction: str, resamples: int = RESAMPLES, level: float = LEVEL,
                       seed: int = 0, ks: np.ndarray | None = None) -> pd.DataFrame:
    """Expected best of k (k = 1 … N) with a pointwise percentile band from ``resamples`` bootstrap
    resamples of the N configurations' scores. Columns: k, expected, low, high."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if ks is None:  # every k; a large grid at 100 log-spaced k (the weights are n × len(ks))
        ks = np.arange(1, n + 1) if n <= 200 else np.unique(np.round(np.geomspace(1, n, 100)).astype(int))
    ks = np.asarray(ks)
    if not n:
        return pd.DataFrame(columns=["k", "expected", "low", "high"])
    sign = 1.0 if direction == "maximize" else -1.0
    weights = _dodge_weights(n, ks.astype(float))
    expected = np.sort(sign * values) @ weights * sign
    drawn = np.sort(sign * values[np.random.default_rng(seed).integers(0, n, size=(resamples, n))], axis=1)
    curves = drawn @ weights * sign
    tail = (1 - level) / 2 * 100
    return pd.DataFrame({"k": ks, "expected": expected, "low": np.percentile(curves, tail, axis=0),
                         "high": np.percentile(curves, 100 - tail, axis=0)})


def expected_best_bands(scores: pd.DataFrame, optimizer: str, direction: str) -> pd.DataFrame:
    """:func:`expected_best_band` over ``optimizer``'s configurations."""
    values = scores.loc[scores["optimizer"] == optimizer, "score"].dropna().to_numpy(float)
    return expected_best_band(values, direction)

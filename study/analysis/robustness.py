"""Our robustness measures per optimizer: best and relative best, good-region share, lr window, divergence
rate, lr sensitivity curves, expected best of k, across studies, hyperparameter importance."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from study.analysis.scores import SCORED, best_per, best_score, cell_scores, rank_key, scored_runs, swept_axes, within


def good_cells(rows: pd.DataFrame, direction: str, delta: float, relative: bool = True,
               best: float | None = None) -> pd.Series:
    """Configurations with no diverged seed whose mean is within δ of ``best`` (default: the best of
    ``rows``; pass the study-wide best to compare optimizers)."""
    valid = rows["mean"].notna() & (rows["diverged"] == 0)
    best = best_score(rows, direction) if best is None else best
    if not valid.any() or math.isnan(best):
        return valid & False
    return valid & within(best, rows["mean"], delta, relative)


def lr_window_decades(rows: pd.DataFrame, direction: str, good: pd.Series) -> float:
    """Width in decades of the contiguous good lr run (other axes at their best) around the best lr."""
    if "lr" not in rows or rows["lr"].nunique() < 2 or not good.any():
        return 0.0
    per_lr = rows.assign(_good=good).groupby("lr")["_good"].any().sort_index()
    best_lr = rows.loc[good].assign(_k=rank_key(rows.loc[good, "score"], direction)).sort_values("_k")["lr"].iloc[0]
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
    best = best_per(scores[scores["optimizer"] == optimizer], [axis], direction).sort_values(axis)
    return Sensitivity(optimizer, axis, best[axis].tolist(), best["score"].tolist(), best["mean"].tolist(),
                       best["std"].fillna(0.0).tolist(), best["diverged"].astype(int).tolist(),
                       best["runs"].astype(int).tolist())


def expected_best_curve(scores: pd.DataFrame, optimizer: str, direction: str) -> list[float]:
    """Expected best score of k configurations drawn at random, for k = 1 … the grid's size."""
    values = scores.loc[scores["optimizer"] == optimizer, "score"].dropna().to_numpy(dtype=float)
    return [expected_best_of_k(values, k, direction) for k in range(1, len(values) + 1)]


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
    from optuna.distributions import FloatDistribution

    scores = cell_scores(results, metric, direction)
    axes = swept_axes(scores, optimizer)
    if not axes:
        return {}
    done = results[results["status"].isin(SCORED)]
    kept, _, worst = scored_runs(done, metric, direction)
    mine = done["optimizer"] == optimizer
    done, values = done[mine], kept[mine].fillna(worst)
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

"""Configurations and their scores: which columns are hyperparameters, each cell's score, the swept axes.

A configuration is an optimizer and one point of its grid; its seeds are its runs. Its score (what ranks
configurations and colours the maps) is the mean over *every* finished seed, a diverged seed (or one with no
finite value) taking the study's worst finished value."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from optimizers import HPARAM_NAMES
from study.statuses import FINISHED, SCORED, CellStatus
from study.store.results import OWN_HPARAMS


def metric_column(metric: str, results: pd.DataFrame | None = None) -> str:
    """The sweep_results column that holds ``metric``'s final value (``score``, the study metric's final
    value, for a metric with no column of its own)."""
    column = f"final_{metric}"
    return column if results is None or column in results else "score"


def hparam_columns(results: pd.DataFrame) -> list[str]:
    """The hyperparameter columns of a results frame, chosen by inclusion: the registry's
    (``optimizers.HPARAM_NAMES``), then those its ``attrs[OWN_HPARAMS]`` names (``store.results`` names
    the study's own optimizers' there; :func:`with_hparams` carries them on). Any other column (a result,
    a statistic) is none, whatever its name."""
    own = [n for n in results.attrs.get(OWN_HPARAMS, ()) if n in results and n not in HPARAM_NAMES]
    return [n for n in HPARAM_NAMES if n in results] + own


def with_hparams(frame: pd.DataFrame, names) -> pd.DataFrame:
    """``frame`` with ``names`` (and the hyperparameters its attrs named already) among its hyperparameter
    columns: for a frame built anew (a groupby's) or given new axes."""
    frame.attrs[OWN_HPARAMS] = tuple(dict.fromkeys([*frame.attrs.get(OWN_HPARAMS, ()), *names]))
    return frame


def scored_runs(done: pd.DataFrame, metric: str, direction: str) -> tuple[pd.Series, pd.Series, float]:
    """The score rule on finished runs (status in SCORED): each run's value of ``metric`` (NaN where it
    diverged or has no finite value), which runs count as diverged, and the study's worst finished value,
    which a diverged run takes (NaN where none finished)."""
    values = pd.to_numeric(done[metric_column(metric, done)], errors="coerce")
    bad = done["diverged"].astype(bool) | ~np.isfinite(values)
    kept = values.where(~bad)
    finished = kept.dropna()
    worst = (finished.min() if direction == "maximize" else finished.max()) if len(finished) else math.nan
    return kept, bad, worst


def cell_scores(results: pd.DataFrame, metric: str, direction: str = "maximize") -> pd.DataFrame:
    """One row per configuration (optimizer, hyperparameter point): the seed statistics (mean, std, sem,
    n over non-diverged seeds; diverged, runs, diverged_share) and ``score`` (diverged seeds at the
    study's worst finished value; see the module's definitions)."""
    done = results[results["status"].isin(SCORED)].copy()
    done["_value"], done["_bad"], worst = scored_runs(done, metric, direction)
    done["_scored"] = done["_value"].fillna(worst)
    keys = ["optimizer", *[n for n in hparam_columns(done) if done[n].notna().any()]]
    grouped = done.groupby(keys, dropna=False, sort=True)
    scores = grouped["_value"].agg(mean="mean", std="std", n="count").reset_index()
    scores["sem"] = scores["std"] / np.sqrt(scores["n"])
    scores["diverged"] = grouped["_bad"].sum().to_numpy().astype(int)
    scores["runs"] = grouped.size().to_numpy()
    scores["diverged_share"] = scores["diverged"] / scores["runs"]
    scores["score"] = grouped["_scored"].mean().to_numpy()
    return with_hparams(scores, hparam_columns(results))


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
    parts += [f"{counts[status]} {status}" for status in (CellStatus.RUNNING, CellStatus.DIVERGED,
                                                           CellStatus.FAILED, CellStatus.CANCELLED)
              if counts.get(status)]
    return " · ".join(parts)


def within(best: float, means, delta: float, relative: bool):
    """Elementwise: |best − mean| ≤ δ·|best| (relative) or ≤ δ (absolute)."""
    tolerance = delta * abs(best) if relative else delta
    return abs(best - means) <= tolerance + 1e-12


def best_per(rows: pd.DataFrame, keys: list[str], direction: str) -> pd.DataFrame:
    """The best-scored configuration of ``rows`` for each value of ``keys``."""
    ranked = rows.assign(_rank=rank_key(rows["score"], direction)).sort_values("_rank", kind="stable")
    return ranked.groupby(keys, sort=True).head(1)


def rank_key(values: pd.Series, direction: str) -> pd.Series:
    """Smaller is better; NaN (nothing finished) last."""
    key = -values if direction == "maximize" else values
    return key.fillna(math.inf)


def best_score(rows: pd.DataFrame, direction: str) -> float:
    """The best configuration's score among ``rows`` (NaN if none has one)."""
    scored = rows["score"].dropna()
    if scored.empty:
        return math.nan
    return float(scored.max() if direction == "maximize" else scored.min())

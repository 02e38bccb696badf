"""The literature's sensitivity measures beside ours: Wortsman et al.'s LR sensitivity, Sivaprasad et al.'s
tunability, expected best of k with bands, coupled axes, seed-bootstrap intervals and pairwise comparisons
(definitions in :mod:`study.analysis`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from study.analysis.maps import axis_label
from study.analysis.robustness import robustness
from study.analysis.scores import SCORED, cell_scores, hparam_columns, scored_runs, with_hparams

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


INTERVALS = ("good_fraction", "lr_window_decades", "lr_sensitivity")  # the leaderboard's measures with an interval


# the leaderboard's columns (:func:`leaderboard`), in order, and what each is: the report's legend and the
# dashboard's help, ours and then the literature's
GLOSSARY = {
    "optimizer": "the optimizer, as the study file names it",
    "best": "the best configuration's score (the study metric's seed mean; diverged seeds at the study's worst)",
    "relative_best": "best as a fraction of the study's best (1: the winner; DeepOBS-style)",
    "good_fraction": "configurations within δ of the reference best score (the study's best, or the optimizer's "
                     "own where chosen), no seed diverged",
    "lr_window_decades": "consecutive good learning rates around the best one, in decades",
    "divergence_rate": "diverged runs / finished runs",
    "mean_seed_std": "mean std over a configuration's seeds",
    "expected_best_1": "expected best score of 1 random configuration",
    "expected_best_10": "expected best score of 10 random configurations (Show-Your-Work)",
    "configs": "configurations in the grid",
    "lr_sensitivity": LITERATURE["lr_sensitivity"],
    **{f"{measure}_{end}": f"{measure}, {side} end of the seed-bootstrap interval"
       for measure in INTERVALS for end, side in (("low", "lower"), ("high", "upper"))},
    "good_fraction_low": "good_fraction, lower end of its " + LITERATURE["interval"],
}


# tunability_frame's measures, in order (each explained in LITERATURE)
TUNABILITY = ("one_shot", "peak", "uniform", "early", "late", *[f"alpha_{a}" for a in ALPHAS], "sharpness")


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
    return with_hparams(out, [axis for axis in AXIS_TITLES if axis in out and axis not in frame])  # axes of a map


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
    kept, bad, worst = scored_runs(done, metric, direction)
    values, ok, worst = kept.to_numpy(float), ~bad.to_numpy(bool), float(worst)
    maximize = direction == "maximize"
    keys = ["optimizer", *[n for n in hparam_columns(done) if done[n].notna().any()]]
    grouped = done.groupby(keys, dropna=False, sort=True)
    config = grouped.ngroup().to_numpy()
    configs = with_hparams(grouped.size().reset_index()[keys], keys[1:])
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
    for measure in INTERVALS:
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
                        columns=["optimizer", "budget", *TUNABILITY])


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

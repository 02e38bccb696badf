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

The package: ``scores`` (configurations, the score rule), ``maps``, ``robustness`` (ours), ``literature``
(the literature's measures), ``report`` (PNG + HTML; imports matplotlib, so by its own path).
"""

from study.analysis.literature import (
    ALPHAS,
    AXIS_TITLES,
    DERIVED_FROM,
    GLOSSARY,
    INTERVALS,
    LEVEL,
    LITERATURE,
    MEASURES,
    RESAMPLES,
    SHUFFLES,
    TUNABILITY,
    SeedBootstrap,
    SeedTable,
    Tunability,
    alpha_tunability,
    best_so_far,
    comparison,
    coupled_axes,
    expected_best_band,
    expected_best_bands,
    leaderboard,
    lr_sensitivity,
    omega_weights,
    seed_bootstrap,
    seed_table,
    steps_per_epoch,
    tunability,
    tunability_frame,
    tunability_of,
)
from study.analysis.maps import AUTO, Heatmap, axis_label, colour_range, difference, good_mask, heatmap
from study.analysis.robustness import (
    Robustness,
    Sensitivity,
    across_studies,
    expected_best_curve,
    expected_best_of_k,
    good_cells,
    importance,
    lr_window_decades,
    robustness,
    sensitivity,
)
from study.analysis.scores import (
    SCORED,
    best_per,
    best_score,
    cell_scores,
    finished_line,
    hparam_columns,
    metric_column,
    rank_key,
    scored_runs,
    swept_axes,
    with_hparams,
    within,
)

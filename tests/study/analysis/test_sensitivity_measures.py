"""The literature's sensitivity measures (study.analysis) on hand-made tables, each checked against values
worked out by hand in the comments — never against the function under test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from study import analysis


def _runs(rows: list[tuple], metric: str = "final_test_loss", **extra) -> pd.DataFrame:
    """(optimizer, {hparams}, seed, value or None for a diverged run) → a results table."""
    return pd.DataFrame([dict(optimizer=o, **h, seed=s, status="diverged" if v is None else "complete",
                              diverged=v is None, **{metric: v}, **{k: f(o, h, s) for k, f in extra.items()})
                         for o, h, s, v in rows])


# --- LR sensitivity (Wortsman et al. 2023) ----------------------------------------------------------------

LOSS_SWEEP = _runs([("adam", {"lr": 1e-4}, 0, 2.0), ("adam", {"lr": 1e-3}, 0, 1.0), ("adam", {"lr": 1e-2}, 0, 0.5),
                    ("adam", {"lr": 1e-1}, 0, None)])  # lr 1e-1 diverged


def test_lr_sensitivity_of_a_loss_counts_a_diverged_run_as_the_loss_before_training():
    # no initial loss recorded: ℓ₀ = the study's worst finished value, 2.0
    # ℓ(η) = [2.0, 1.0, 0.5, ℓ₀ = 2.0]; ℓ* = 0.5; mean = 5.5 / 4 = 1.375; LRS = 1.375 − 0.5 = 0.875
    (row,) = analysis.lr_sensitivity(LOSS_SWEEP, "test_loss", "minimize").to_dict("records")
    assert row["lr_sensitivity"] == pytest.approx(0.875) and row["best"] == pytest.approx(0.5) and row["lrs"] == 4
    # ℓ₀ given, 2.3: the diverged run counts 2.3, min(2.0, 2.3) = 2.0: [2.0, 1.0, 0.5, 2.3], mean 5.8 / 4 = 1.45
    (row,) = analysis.lr_sensitivity(LOSS_SWEEP, "test_loss", "minimize", initial=2.3).to_dict("records")
    assert row["lr_sensitivity"] == pytest.approx(1.45 - 0.5)
    # ℓ₀ = 1.5 caps the worst lr: [min(2.0, 1.5), 1.0, 0.5, 1.5] = [1.5, 1.0, 0.5, 1.5], mean 4.5 / 4 = 1.125
    (row,) = analysis.lr_sensitivity(LOSS_SWEEP, "test_loss", "minimize", initial=1.5).to_dict("records")
    assert row["lr_sensitivity"] == pytest.approx(1.125 - 0.5)


def test_lr_sensitivity_takes_each_runs_recorded_initial_loss():
    recorded = LOSS_SWEEP.assign(final_initial_test_loss=1.5)  # a worker that records the loss at initialisation
    (row,) = analysis.lr_sensitivity(recorded, "test_loss", "minimize").to_dict("records")
    assert row["lr_sensitivity"] == pytest.approx(1.125 - 0.5)  # as ℓ₀ = 1.5 above


ACCURACY_SWEEP = _runs([("adam", {"lr": lr, "beta1": b}, 0, v) for b, values in
                        ((0.9, (0.6, 0.9, 0.3)), (0.5, (0.7, 0.8, None))) for lr, v in zip((1e-3, 1e-2, 1e-1), values)],
                       metric="final_test_accuracy")


def test_lr_sensitivity_of_an_accuracy_is_mirrored_per_optimizer_and_per_value_of_the_other_axis():
    table = analysis.lr_sensitivity(ACCURACY_SWEEP, "test_accuracy", "maximize").set_index("other axes")
    # ℓ₀ = the worst finished accuracy, 0.3; lr 1e-1 at beta1 0.5 diverged: it counts 0.3
    # other axes at their best per lr: [max(0.6, 0.7), max(0.9, 0.8), max(0.3, 0.3)] = [0.7, 0.9, 0.3]
    #   ℓ* = 0.9, mean = 1.9 / 3; LRS = 0.9 − 0.63333 = 0.26667
    assert table.loc["at their best per lr", "lr_sensitivity"] == pytest.approx(0.9 - 1.9 / 3)
    # beta1 = 0.5: [0.7, 0.8, 0.3] → 0.8 − 1.8 / 3 = 0.2; beta1 = 0.9: [0.6, 0.9, 0.3] → 0.9 − 1.8 / 3 = 0.3
    assert table.loc["beta1 = 0.5", "lr_sensitivity"] == pytest.approx(0.2)
    assert table.loc["beta1 = 0.9", "lr_sensitivity"] == pytest.approx(0.3)
    assert table.loc["beta1 = 0.9", "best"] == pytest.approx(0.9) and set(table["lrs"]) == {3}


def test_an_optimizer_without_an_lr_sweep_has_no_lr_sensitivity():
    single = _runs([("adam", {"lr": 1e-3, "beta1": b}, 0, v) for b, v in ((0.5, 0.4), (0.9, 0.6))])
    assert analysis.lr_sensitivity(single, "test_loss", "minimize").empty
    board, _ = analysis.leaderboard(single, "test_loss", "minimize")
    assert math.isnan(board.loc[0, "lr_sensitivity"])


# --- seed-bootstrap intervals and the pairwise comparison -------------------------------------------------
#
# Two seeds: a resample draws {0, 0} (probability 1/4), {0, 1} (1/2) or {1, 1} (1/4). Over 200 seeded
# resamples each extreme is drawn about 50 times, so the 2.5 % and 97.5 % percentiles are the measure on
# seed 0 alone and on seed 1 alone (whichever is smaller first).
#
# Each optimizer's loss at lr 1e-2 is 0 on both seeds (ℓ* = 0), so LRS = (ℓ(1e-3) + ℓ(1e-1)) / 3; the worst
# finished loss is 2.5, above every value: the cap at ℓ₀ changes nothing.
#            seed 0 (lr 1e-3, 1e-1)   seed 1         both (means)
#   A        0.5, 0.25 → 0.75/3       0.75, 0.5 → 1.25/3   0.625, 0.375 → 1.0/3
#   B        0.25, 0.25 → 0.5/3       1.0, 0.5 → 1.5/3     0.625, 0.375 → 1.0/3
#   C        2.0, 1.0 → 3.0/3         2.5, 1.5 → 4.0/3     2.25, 1.25 → 3.5/3
# A: [0.25, 0.4167] lies inside B: [0.1667, 0.5] (overlap); C: [1.0, 1.3333] lies above both (no overlap).

PAIRED = {"A": ((0.5, 0.25), (0.75, 0.5)), "B": ((0.25, 0.25), (1.0, 0.5)), "C": ((2.0, 1.0), (2.5, 1.5))}
BOOTSTRAPPED = _runs([(o, {"lr": lr}, s, v) for o, seeds in PAIRED.items() for s, (low, high) in enumerate(seeds)
                      for lr, v in ((1e-3, low), (1e-2, 0.0), (1e-1, high))])


def test_seed_bootstrap_intervals_of_the_lr_sensitivity_overlap_or_not_as_worked_out():
    board, boot = analysis.leaderboard(BOOTSTRAPPED, "test_loss", "minimize")
    board = board.set_index("optimizer")
    assert board["lr_sensitivity"].to_dict() == pytest.approx({"A": 1 / 3, "B": 1 / 3, "C": 3.5 / 3})
    assert board["lr_sensitivity_low"].to_dict() == pytest.approx({"A": 0.75 / 3, "B": 0.5 / 3, "C": 1.0})
    assert board["lr_sensitivity_high"].to_dict() == pytest.approx({"A": 1.25 / 3, "B": 0.5, "C": 4 / 3})
    low, high = board["lr_sensitivity_low"], board["lr_sensitivity_high"]
    assert low["B"] < low["A"] < high["A"] < high["B"]  # overlap
    assert high["A"] < low["C"] and high["B"] < low["C"]  # apart
    assert boot.seeds == 2 and boot.resamples == analysis.RESAMPLES


def test_the_probability_that_one_optimizer_is_less_sensitive_comes_from_the_same_resamples():
    _, boot = analysis.leaderboard(BOOTSTRAPPED, "test_loss", "minimize")
    p = boot.less_sensitive("lr_sensitivity")
    # apart: A and B are below C in every resample
    assert p.loc["A", "C"] == 1.0 and p.loc["B", "C"] == 1.0 and p.loc["C", "A"] == 0.0
    # overlapping, paired: {0,0}: B (0.5/3) below A (0.75/3); {1,1}: A (1.25/3) below B (1.5/3); {0,1}: a tie (1/3
    # each), half. So P(A less sensitive than B) = 1/4 + 1/2 · 1/2 = 1/2 in expectation (sd 0.025 over 200 draws)
    assert 0.4 < p.loc["A", "B"] < 0.6 and p.loc["A", "B"] + p.loc["B", "A"] == pytest.approx(1.0)
    pairs = analysis.comparison(boot, ["C", "A", "B"]).set_index(["optimizer", "than"])
    assert len(pairs) == 6 and pairs.loc[("A", "C"), "P(lr_sensitivity)"] == 1.0
    assert math.isnan(p.loc["A", "A"])


def test_the_bootstrap_is_seeded_and_reproducible():
    first = analysis.seed_bootstrap(BOOTSTRAPPED, "test_loss", "minimize").replicates["lr_sensitivity"]
    again = analysis.seed_bootstrap(BOOTSTRAPPED, "test_loss", "minimize").replicates["lr_sensitivity"]
    other = analysis.seed_bootstrap(BOOTSTRAPPED, "test_loss", "minimize", seed=1).replicates["lr_sensitivity"]
    assert np.array_equal(first, again) and not np.array_equal(first, other)


# adam, accuracy, absolute δ = 0.05 against the study's best (0.90 at lr 1e-2 on both seeds):
#   lr         1e-3   1e-2   1e-1            1
#   seed 0     0.80   0.90   0.86            0.50
#   seed 1     0.86   0.90   diverged        0.50
# both seeds: means 0.83 (0.07 short), 0.90, 1e-1 has a diverged seed, 0.50 → good: 1e-2 only → 1/4, window 0
# {0, 0}: 0.80 (0.10 short), 0.90, 0.86 (0.04), 0.50 → good 1e-2, 1e-1 → 2/4, window 1e-2…1e-1 = 1 decade
# {1, 1}: 0.86 (0.04), 0.90, diverged, 0.50 → good 1e-3, 1e-2 → 2/4, window 1e-3…1e-2 = 1 decade
# so the good region's interval is [1/4, 2/4] and the lr window's [0, 1]
GOOD_REGION = _runs([("adam", {"lr": lr}, s, v) for s, values in enumerate(((0.80, 0.90, 0.86, 0.50),
                                                                             (0.86, 0.90, None, 0.50)))
                     for lr, v in zip((1e-3, 1e-2, 1e-1, 1.0), values)], metric="final_test_accuracy")


def test_seed_bootstrap_intervals_of_the_good_region_and_the_lr_window():
    board, _ = analysis.leaderboard(GOOD_REGION, "test_accuracy", "maximize", delta=0.05, relative=False)
    (row,) = board.to_dict("records")
    assert (row["good_fraction"], row["good_fraction_low"], row["good_fraction_high"]) == pytest.approx(
        (0.25, 0.25, 0.5))
    assert (row["lr_window_decades"], row["lr_window_decades_low"], row["lr_window_decades_high"]) == pytest.approx(
        (0.0, 0.0, 1.0))
    # LR sensitivity, both seeds: ℓ₀ = the worst finished accuracy, 0.50; lr 1e-1's diverged seed counts 0.50:
    # ℓ(η) = [0.83, 0.90, (0.86 + 0.50) / 2 = 0.68, 0.50], ℓ* = 0.90, mean = 2.91 / 4 → 0.90 − 0.7275 = 0.1725
    assert row["lr_sensitivity"] == pytest.approx(0.1725)


def test_one_seed_has_point_intervals():
    board, boot = analysis.leaderboard(LOSS_SWEEP, "test_loss", "minimize")
    (row,) = board.to_dict("records")
    assert boot.seeds == 1 and row["lr_sensitivity_low"] == row["lr_sensitivity_high"] == pytest.approx(0.875)


# --- tunability (Sivaprasad et al. 2020) -------------------------------------------------------------------

def test_omega_and_alpha_tunability_from_given_draw_orders():
    values = np.array([0.2, 0.85, 0.9, 1.0])  # accuracies of T = 4 configurations
    orders = np.array([[1, 0, 2, 3], [3, 3, 0, 1]])
    # P (best so far): [0.85, 0.85, 0.9, 1.0] and [1.0, 1.0, 1.0, 1.0]; mean [0.925, 0.925, 0.95, 1.0]
    t = analysis.tunability_of(values, "maximize", orders)
    assert t.curve == pytest.approx([0.925, 0.925, 0.95, 1.0]) and t.budget == 4
    assert t.one_shot == pytest.approx(0.925) and t.peak == pytest.approx(1.0)
    assert t.uniform == pytest.approx(3.8 / 4)  # (0.925 + 0.925 + 0.95 + 1.0) / 4
    assert t.early == pytest.approx(9.375 / 10)  # ω = [4, 3, 2, 1] / 10: 3.7 + 2.775 + 1.9 + 1.0 = 9.375
    assert t.late == pytest.approx(9.625 / 10)  # ω = [1, 2, 3, 4] / 10: 0.925 + 1.85 + 2.85 + 4.0 = 9.625
    # best of the mean curve 1.0: ≥ 0.9 at t = 1, ≥ 0.95 at t = 3, ≥ 1.0 at t = 4 (shares of T = 4)
    assert t.alpha == pytest.approx({0.9: 0.25, 0.95: 0.75, 1.0: 1.0}) and t.sharpness == pytest.approx(0.25)


def test_alpha_tunability_of_a_loss_uses_their_two_minus_alpha_rule():
    values = np.array([3.0, 1.08, 1.0, 1.2])
    orders = np.array([[0, 1, 3, 2], [1, 1, 1, 1]])
    # P: [3.0, 1.08, 1.08, 1.0] and [1.08] × 4; mean [2.04, 1.08, 1.08, 1.04]; best 1.04
    # α 0.9: ≤ 1.1 × 1.04 = 1.144 at t = 2; α 0.95: ≤ 1.05 × 1.04 = 1.092 at t = 2; α 1.0: ≤ 1.04 at t = 4
    t = analysis.tunability_of(values, "minimize", orders)
    assert t.curve == pytest.approx([2.04, 1.08, 1.08, 1.04])
    assert t.one_shot == pytest.approx(2.04) and t.peak == pytest.approx(1.04)
    assert t.alpha == pytest.approx({0.9: 0.5, 0.95: 0.5, 1.0: 1.0}) and t.sharpness == pytest.approx(0.5)


def test_shuffled_best_so_far_curves_average_to_the_expected_best_of_t():
    """Bootstrap orders draw with replacement: the mean P_t is E[max of t draws] (Dodge et al.'s estimator)."""
    scores = pd.DataFrame({"optimizer": "adam", "score": [0.2, 0.5, 0.9]})
    (t,) = analysis.tunability(scores, "maximize", shuffles=20_000)
    # E[max of 1] = (0.2 + 0.5 + 0.9) / 3 = 1.6 / 3
    # E[max of 2] = 0.2·(1/9) + 0.5·(4/9 − 1/9) + 0.9·(1 − 4/9) = (0.2 + 1.5 + 4.5) / 9 = 6.2 / 9
    # E[max of 3] = 0.2·(1/27) + 0.5·(8/27 − 1/27) + 0.9·(1 − 8/27) = (0.2 + 3.5 + 17.1) / 27 = 20.8 / 27
    assert t.curve == pytest.approx([1.6 / 3, 6.2 / 9, 20.8 / 27], abs=0.01)
    (again,) = analysis.tunability(scores, "maximize", shuffles=20_000)
    assert again.curve == t.curve  # seeded


def test_expected_best_of_k_with_a_bootstrap_band():
    band = analysis.expected_best_band(np.array([0.2, 0.5, 0.9]), "maximize")
    assert band["expected"].tolist() == pytest.approx([1.6 / 3, 6.2 / 9, 20.8 / 27])  # as worked out above
    assert (band["low"] <= band["expected"] + 1e-12).all() and (band["expected"] <= band["high"] + 1e-12).all()
    assert band["low"].min() >= 0.2 and band["high"].max() <= 0.9 and (band["high"] > band["low"]).all()
    # a loss: E[min of 2] = 0.9·(1/9) + 0.5·(4/9 − 1/9) + 0.2·(1 − 4/9) = (0.9 + 1.5 + 1.0) / 9 = 3.4 / 9
    losses = analysis.expected_best_band(np.array([0.2, 0.5, 0.9]), "minimize")
    assert losses["expected"].iloc[1] == pytest.approx(3.4 / 9)
    same = analysis.expected_best_band(np.array([0.7, 0.7]), "maximize")  # nothing varies: a band of width 0
    assert same["low"].tolist() == same["high"].tolist() == pytest.approx([0.7, 0.7])


# --- coupled coordinates ----------------------------------------------------------------------------------

def test_coupled_axes_tau_in_epochs_or_steps_and_the_beta2_half_life():
    frame = pd.DataFrame({"optimizer": "adamw", "lr": [1e-3, 1e-3, 1e-4], "weight_decay": [1e-2, 0.0, 1e-1],
                          "beta2": [0.999, 0.5, 0.9]})
    steps = analysis.coupled_axes(frame)
    # τ = 1/(η·λ): 1/(1e-3 · 1e-2) = 1e5 steps; λ = 0: no timescale; 1/(1e-4 · 1e-1) = 1e5 (one point with the first)
    assert steps["tau_steps"].iloc[0] == 1e5 and math.isnan(steps["tau_steps"].iloc[1])
    assert steps["tau_steps"].iloc[2] == steps["tau_steps"].iloc[0]
    # ln 0.5 / ln 0.999 = −0.693147 / −0.0010005 = 692.80; ln 0.5 / ln 0.5 = 1; ln 0.5 / ln 0.9 = 6.5788
    assert steps["beta2_half_life"].tolist() == pytest.approx([692.80, 1.0, 6.5788], rel=1e-4)
    epochs = analysis.coupled_axes(frame, steps_per_epoch=100)  # 1e5 steps / 100 per epoch = 1000 epochs
    assert epochs["tau_epochs"].iloc[0] == pytest.approx(1000.0) and "tau_steps" not in epochs
    assert analysis.steps_per_epoch(frame, {"task_options": {"steps_per_epoch": 250}}) == 250
    assert analysis.steps_per_epoch(frame, {"task_options": {}}) is None
    assert analysis.steps_per_epoch(frame.assign(final_steps_per_epoch=12), {}) == 12


def test_a_map_over_tau_places_each_configuration_at_its_timescale():
    # lr {1e-3, 1e-2} × λ {1e-2, 1e-1}: τ = 1e5, 1e4 (lr 1e-3) and 1e4, 1e3 (lr 1e-2) steps
    rows = [("adamw", {"lr": lr, "weight_decay": wd}, 0, v) for lr, wd, v in
            ((1e-3, 1e-2, 0.5), (1e-3, 1e-1, 0.4), (1e-2, 1e-2, 0.3), (1e-2, 1e-1, 0.9))]
    results = _runs(rows)
    scores = analysis.coupled_axes(analysis.cell_scores(results, "test_loss", "minimize"))
    hm = analysis.heatmap(scores, "adamw", "minimize", x="tau_steps", y="lr", cells=analysis.coupled_axes(results))
    assert hm.x_values == pytest.approx([1e3, 1e4, 1e5]) and hm.y_values == [1e-3, 1e-2]
    # row lr 1e-3: τ 1e4 (λ 1e-1) 0.4, τ 1e5 (λ 1e-2) 0.5; row lr 1e-2: τ 1e3 0.9, τ 1e4 0.3
    assert np.allclose(hm.score, [[np.nan, 0.4, 0.5], [0.9, 0.3, np.nan]], equal_nan=True)
    assert hm.planned.tolist() == [[0, 1, 1], [1, 1, 0]]
    strip = analysis.heatmap(scores, "adamw", "minimize", x="tau_steps", y=None)  # the best lr per τ
    assert strip.score[0].tolist() == pytest.approx([0.9, 0.3, 0.5])  # τ 1e4: min(0.4, 0.3)


def test_the_leaderboard_agrees_with_the_robustness_summary():
    board, _ = analysis.leaderboard(GOOD_REGION, "test_accuracy", "maximize", delta=0.05, relative=False)
    (summary,) = analysis.robustness(analysis.cell_scores(GOOD_REGION, "test_accuracy"), "maximize", 0.05, False)
    for column in ("best", "good_fraction", "lr_window_decades", "divergence_rate", "expected_best_10"):
        assert board.loc[0, column] == pytest.approx(getattr(summary, column))


def test_lr_sensitivity_uses_the_loss_at_initialisation_the_workers_recorded(tmp_path):
    """The worker's ``final["initial_test_loss"]`` (workers.training.initial_metrics) travels through the
    results store — the cell's final_metrics JSON, a ``final_initial_test_loss`` column of the results — and
    is each run's ℓ₀; the score stays the final test loss."""
    from study import spec, store
    from tests.conftest import study_file

    engine = store.connect(f"sqlite:///{tmp_path / 'results.db'}")
    store.register(engine, spec.load(study_file(tmp_path, metric="test_loss", body="[optimizers.adam]\n"
                                                                                     "lr = [0.001, 0.01, 0.1]\n")))
    # ℓ₀ per seed (a seed fixes the initial weights): 2.5 for seed 0, 1.2 for seed 1; lr 0.1 diverges on seed 0
    initial = {0: 2.5, 1: 1.2}
    loss = {(0.001, 0): 2.0, (0.01, 0): 1.0, (0.1, 0): None, (0.001, 1): 1.5, (0.01, 1): 0.5, (0.1, 1): 0.9}
    cells = store.claim(engine, store.get_study(engine, "tiny"), "driver", 10, lease_seconds=60)
    assert len(cells) == 6
    finished = []
    for cell in cells:
        value = loss[(cell["hparams"]["lr"], cell["seed"])]
        final = {"test_loss": float("inf") if value is None else value, "initial_test_loss": initial[cell["seed"]]}
        finished.append({"cell": cell, "status": "diverged" if value is None else "complete", "final": final})
    with store.transaction(engine) as conn:
        store.finish(conn, "driver", finished, metric="test_loss")
    results = store.results("tiny", engine)
    assert sorted(zip(results["seed"], results["final_initial_test_loss"])) == [(0, 2.5)] * 3 + [(1, 1.2)] * 3
    done = results[~results["diverged"].astype(bool)]
    assert (done["score"] == done["final_test_loss"]).all()  # the score is the final value, not ℓ₀

    # recorded ℓ₀: min(ℓ, ℓ₀) per run, a diverged run at its ℓ₀, then the mean over seeds per lr:
    #   lr 0.001: (min(2.0, 2.5) + min(1.5, 1.2)) / 2 = (2.0 + 1.2) / 2 = 1.6
    #   lr 0.01:  (1.0 + 0.5) / 2 = 0.75;  lr 0.1: (2.5 + 0.9) / 2 = 1.7
    #   ℓ* = 0.75, mean = (1.6 + 0.75 + 1.7) / 3 = 1.35, LRS = 1.35 − 0.75 = 0.6
    (row,) = analysis.lr_sensitivity(results, "test_loss", "minimize").to_dict("records")
    assert row["lr_sensitivity"] == pytest.approx(0.6) and row["best"] == pytest.approx(0.75)
    # without it, ℓ₀ = the study's worst finished value, 2.0, for every run:
    #   lr 0.001: (2.0 + 1.5) / 2 = 1.75; lr 0.01: 0.75; lr 0.1: (2.0 + 0.9) / 2 = 1.45
    #   mean = 3.95 / 3, LRS = 3.95 / 3 − 0.75 = 1.7 / 3
    (row,) = analysis.lr_sensitivity(results.drop(columns="final_initial_test_loss"), "test_loss",
                                     "minimize").to_dict("records")
    assert row["lr_sensitivity"] == pytest.approx(1.7 / 3)

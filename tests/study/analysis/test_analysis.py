"""Robustness analysis against independent computations on a small synthetic results table."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from study import analysis

LRS = [1e-4, 1e-3, 1e-2, 1e-1]
BETAS = [0.5, 0.9]


def _results(seed_noise=0.01) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for lr, beta1, seed in itertools.product(LRS, BETAS, [0, 1, 2]):
        diverged = lr == 1e-1 and beta1 == 0.9 and seed == 0
        accuracy = 0.9 - 0.1 * abs(math.log10(lr) + 2) - (beta1 == 0.5) * 0.05 + rng.normal(0, seed_noise)
        rows.append(dict(optimizer="adam", lr=lr, beta1=beta1, seed=seed, status="diverged" if diverged else "complete",
                         diverged=diverged, final_test_accuracy=0.1 if diverged else accuracy))
    rows.append(dict(optimizer="adam", lr=1e-4, beta1=0.5, seed=9, status="pending", diverged=None,
                     final_test_accuracy=None))
    return pd.DataFrame(rows)


def test_cell_scores_average_seeds_and_count_divergence():
    results = _results()
    scores = analysis.cell_scores(results, "test_accuracy").set_index(["lr", "beta1"])
    finished = results[results.status != "pending"]
    for (lr, beta1), group in finished.groupby(["lr", "beta1"]):
        ok = group[~group.diverged.astype(bool)]["final_test_accuracy"]
        row = scores.loc[(lr, beta1)]
        assert row["mean"] == pytest.approx(ok.mean()) and row["std"] == pytest.approx(ok.std())
        assert row["n"] == len(ok) and row["diverged"] == group.diverged.sum() and row["runs"] == len(group)


def test_heatmap_places_each_cell_on_its_axes():
    scores = analysis.cell_scores(_results(), "test_accuracy")
    hm = analysis.heatmap(scores, "adam", "maximize")
    assert (hm.x, hm.y, hm.x_values, hm.y_values) == ("lr", "beta1", LRS, BETAS)
    for i, beta1 in enumerate(BETAS):
        for j, lr in enumerate(LRS):
            expected = scores[(scores.lr == lr) & (scores.beta1 == beta1)]["mean"].item()
            assert hm.mean[i, j] == pytest.approx(expected)
    assert hm.diverged[BETAS.index(0.9), LRS.index(1e-1)] == 1 and np.nansum(hm.diverged) == 1


def _rows(rows: list[tuple]) -> pd.DataFrame:
    """(lr, beta1, seed, value or None for a diverged seed) of adam → a results table."""
    return pd.DataFrame([dict(optimizer="adam", lr=lr, beta1=b, seed=s, status="diverged" if v is None else "complete",
                              diverged=v is None, final_test_accuracy=v) for lr, b, s, v in rows])


# per lr, the beta1 with the best *score* (diverged seeds at the study's worst finished value, 0.40) is not
# the first, nor the last, nor the one with the best seed mean; by hand:
#   lr 1e-3: beta1 0.5 (0.80, 0.80) scores 0.80 > beta1 0.9 (0.60, 0.70) 0.65
#   lr 1e-2: beta1 0.5 (0.90, 0.86) scores 0.88 > beta1 0.9 (0.99, diverged) (0.99 + 0.40) / 2 = 0.695
#   lr 1e-1: beta1 0.9 (0.40, 0.50) scores 0.45 > beta1 0.5 (both diverged) 0.40
STRIP = _rows([(1e-3, 0.9, 0, 0.60), (1e-3, 0.9, 1, 0.70), (1e-3, 0.5, 0, 0.80), (1e-3, 0.5, 1, 0.80),
               (1e-2, 0.9, 0, 0.99), (1e-2, 0.9, 1, None), (1e-2, 0.5, 0, 0.90), (1e-2, 0.5, 1, 0.86),
               (1e-1, 0.9, 0, 0.40), (1e-1, 0.9, 1, 0.50), (1e-1, 0.5, 0, None), (1e-1, 0.5, 1, None)])


def test_one_axis_map_takes_the_best_of_the_other_axis():
    scores = analysis.cell_scores(STRIP, "test_accuracy")
    hm = analysis.heatmap(scores, "adam", "maximize", y=None)
    assert hm.y is None and hm.x_values == [1e-3, 1e-2, 1e-1] and len(hm.y_values) == 1
    assert hm.score.shape == (1, 3) and hm.score[0].tolist() == pytest.approx([0.80, 0.88, 0.45])
    assert hm.mean.shape == (1, 3) and hm.mean[0].tolist() == pytest.approx([0.80, 0.88, 0.45])
    assert hm.std.shape == (1, 3)
    assert hm.std[0].tolist() == pytest.approx([0.0, np.std([0.90, 0.86], ddof=1), np.std([0.40, 0.50], ddof=1)])
    assert hm.n.tolist() == [[2, 2, 2]] and hm.diverged.tolist() == [[0, 0, 0]] and hm.runs.tolist() == [[2, 2, 2]]
    # reduce="mean" averages the two beta1 configurations instead (scores, seed means; seeds summed)
    avg = analysis.heatmap(scores, "adam", "maximize", y=None, reduce="mean")
    assert avg.score.shape == (1, 3)
    assert avg.score[0].tolist() == pytest.approx([(0.80 + 0.65) / 2, (0.88 + 0.695) / 2, (0.45 + 0.40) / 2])
    assert avg.diverged.tolist() == [[0, 1, 2]] and avg.runs.tolist() == [[4, 4, 4]]


def test_a_map_of_an_optimizer_that_sweeps_one_axis_is_a_strip_of_its_values():
    scores = analysis.cell_scores(STRIP, "test_accuracy")
    hm = analysis.heatmap(scores[scores.beta1 == 0.9], "adam", "maximize")  # y AUTO: no second swept axis
    assert hm.y is None and hm.x_values == [1e-3, 1e-2, 1e-1] and math.isnan(hm.y_values[0])
    assert hm.score.shape == (1, 3) and hm.score[0].tolist() == pytest.approx([0.65, (0.99 + 0.40) / 2, 0.45])
    assert hm.mean.shape == (1, 3) and hm.mean[0].tolist() == pytest.approx([0.65, 0.99, 0.45])
    assert hm.n.tolist() == [[2, 1, 2]] and hm.diverged.tolist() == [[0, 1, 0]]


def test_robustness_metrics():
    scores = analysis.cell_scores(_results(seed_noise=0.0), "test_accuracy")
    (summary,) = analysis.robustness(scores, "maximize", delta=0.12, relative=False)
    # best 0.9 at lr 1e-2, beta1 0.9; good (within 0.12, undiverged): lr 1e-3, 1e-2 at 0.9 (0.8, 0.9);
    # lr 1e-2 at 0.5 (0.85); lr 1e-1 at 0.9 diverged once, lr 1e-3 at 0.5 is 0.75
    assert summary.best == pytest.approx(0.9)
    assert summary.good_fraction == pytest.approx(3 / 8)
    assert summary.lr_window_decades == pytest.approx(1.0)
    assert summary.divergence_rate == pytest.approx(1 / 24)


def test_expected_best_of_k_matches_monte_carlo():
    values = np.array([0.2, 0.5, 0.5, 0.7, 0.9])
    rng = np.random.default_rng(1)
    for k in (1, 3, 10):
        draws = rng.choice(values, size=(200_000, k)).max(axis=1).mean()
        assert analysis.expected_best_of_k(values, k, "maximize") == pytest.approx(draws, abs=3e-3)
    assert analysis.expected_best_of_k(values, 1, "minimize") == pytest.approx(values.mean())
    assert analysis.expected_best_of_k(values, 50, "minimize") == pytest.approx(0.2, abs=1e-3)


def _table(rows: list[tuple], metric: str = "final_test_accuracy") -> pd.DataFrame:
    """(optimizer, lr, beta1, seed, value or None for a diverged seed) → a results table."""
    return pd.DataFrame([dict(optimizer=o, lr=lr, beta1=b, seed=s, status="diverged" if v is None else "complete",
                              diverged=v is None, **{metric: v}) for o, lr, b, s, v in rows])


PARTLY_DIVERGED = _table([
    ("adam", 1e-2, 0.9, 0, 0.95), ("adam", 1e-2, 0.9, 1, None), ("adam", 1e-2, 0.9, 2, None),  # 2 of 3 diverged
    ("adam", 1e-2, 0.5, 0, 0.80), ("adam", 1e-2, 0.5, 1, 0.80), ("adam", 1e-2, 0.5, 2, 0.80),
    ("adam", 1e-3, 0.9, 0, 0.50), ("adam", 1e-3, 0.9, 1, 0.60), ("adam", 1e-3, 0.9, 2, 0.70),
    ("adam", 1e-3, 0.5, 0, 0.40), ("adam", 1e-3, 0.5, 1, 0.40), ("adam", 1e-3, 0.5, 2, 0.40),
])


def test_a_partly_diverged_configuration_is_scored_with_its_diverged_seeds_at_the_worst():
    scores = analysis.cell_scores(PARTLY_DIVERGED, "test_accuracy").set_index(["lr", "beta1"])
    partly = scores.loc[(1e-2, 0.9)]
    # worst finished value in the study: 0.40; score = (0.95 + 0.40 + 0.40) / 3
    assert partly["score"] == pytest.approx((0.95 + 0.4 + 0.4) / 3) and partly["mean"] == pytest.approx(0.95)
    assert (partly["n"], partly["diverged"], partly["runs"]) == (1, 2, 3)
    assert partly["diverged_share"] == pytest.approx(2 / 3) and math.isnan(partly["sem"])
    spread = scores.loc[(1e-3, 0.9)]
    assert spread["sem"] == pytest.approx(np.std([0.5, 0.6, 0.7], ddof=1) / math.sqrt(3))
    assert spread["score"] == pytest.approx(0.6)


def test_the_score_rule_is_one_rule_for_the_scores_the_seed_table_and_importance():
    """A diverged seed takes the study's worst finished value (0.40 here) wherever a score is computed."""
    values, diverged, worst = analysis.scored_runs(PARTLY_DIVERGED, "test_accuracy", "maximize")
    assert worst == 0.40 and diverged.sum() == 2 and values[diverged].isna().all()
    assert analysis.seed_table(PARTLY_DIVERGED, "test_accuracy").worst == worst
    partly = analysis.cell_scores(PARTLY_DIVERGED, "test_accuracy").set_index(["lr", "beta1"]).loc[(1e-2, 0.9)]
    assert partly["score"] == pytest.approx((0.95 + 2 * worst) / 3)


def test_hyperparameters_are_chosen_by_inclusion():
    """The registry's hyperparameters and those the frame names (``store.results`` names a study's own
    optimizers' in its attrs) group configurations; any other column, whatever its name (a results column
    added later, say), splits none. The names travel with the scores and gain the coupled axes."""
    results = PARTLY_DIVERGED.assign(grad_norm=np.arange(len(PARTLY_DIVERGED), dtype=float),
                                     rho=np.where(PARTLY_DIVERGED["lr"] == 1e-3, 0.7, 0.5))
    assert analysis.hparam_columns(results) == ["lr", "beta1"]  # rho is named nowhere: no hyperparameter
    assert len(analysis.cell_scores(results, "test_accuracy")) == 4  # grad_norm's 12 values split nothing
    own = analysis.with_hparams(results.copy(), ["rho"])
    assert analysis.hparam_columns(own) == ["lr", "beta1", "rho"]
    scores = analysis.cell_scores(own, "test_accuracy")
    assert list(scores.columns[:4]) == ["optimizer", "lr", "beta1", "rho"] and len(scores) == 4
    assert analysis.swept_axes(scores, "adam") == ["lr", "beta1", "rho"]  # rho moves with lr: no new split
    coupled = analysis.coupled_axes(scores.assign(weight_decay=0.1))
    assert analysis.hparam_columns(coupled) == ["lr", "beta1", "weight_decay", "rho", "tau_steps"]


def test_the_map_and_the_summary_agree_on_the_best_configuration():
    scores = analysis.cell_scores(PARTLY_DIVERGED, "test_accuracy")
    (summary,) = analysis.robustness(scores, "maximize", delta=0.05)
    assert summary.best == pytest.approx(0.8)  # not the 0.95 of the seed that survived
    hm = analysis.heatmap(scores, "adam", "maximize")
    i, j = np.unravel_index(np.nanargmax(hm.score), hm.score.shape)
    assert (hm.y_values[i], hm.x_values[j]) == (0.5, 1e-2) and hm.score[i, j] == pytest.approx(summary.best)
    # one-axis map (beta1 reduced to its best per lr): lr 1e-2 shows the un-diverged beta1 = 0.5
    one = analysis.heatmap(scores[scores.lr > 0], "adam", "maximize", x="beta1")
    assert one.x == "beta1"
    assert summary.good_fraction == pytest.approx(1 / 4)  # only (1e-2, 0.5): the 0.95 had diverged seeds


def test_a_minimised_metric_scores_diverged_seeds_at_the_largest_loss():
    table = _table([("sgd", 0.1, 0.9, 0, 0.2), ("sgd", 0.1, 0.9, 1, None),
                    ("sgd", 0.01, 0.9, 0, 0.3), ("sgd", 0.01, 0.9, 1, 0.5),
                    ("sgd", 0.001, 0.9, 0, 0.9), ("sgd", 0.001, 0.9, 1, 0.9)], metric="final_test_loss")
    scores = analysis.cell_scores(table, "test_loss", "minimize").set_index("lr")
    assert scores.loc[0.1, "score"] == pytest.approx((0.2 + 0.9) / 2)
    (summary,) = analysis.robustness(scores.reset_index(), "minimize", delta=0.5, relative=True)
    assert summary.best == pytest.approx(0.4)  # lr 0.01: (0.3 + 0.5) / 2
    assert summary.relative_best == 1.0  # the only optimizer: the winner
    # good: no divergence and |0.4 − mean| ≤ 0.2: lr 0.01 only
    assert summary.good_fraction == pytest.approx(1 / 3) and summary.lr_window_decades == 0
    assert summary.mean_seed_std == pytest.approx(np.mean([np.std([0.3, 0.5], ddof=1), 0.0]))


def test_good_regions_are_measured_against_the_study_wide_best_by_default():
    """An optimizer that never trains well has no good region beside one that does (unless asked for its own best)."""
    rows = [("adam", lr, 0.9, s, v) for lr, v in ((1e-3, 0.90), (1e-2, 0.88), (1e-1, 0.60)) for s in (0, 1)]
    rows += [("sgdm", lr, 0.9, s, v) for lr, v in ((1e-3, 0.30), (1e-2, 0.31), (1e-1, 0.31)) for s in (0, 1)]
    scores = analysis.cell_scores(_table(rows), "test_accuracy")
    study = {r.optimizer: r for r in analysis.robustness(scores, "maximize", delta=0.05)}
    own = {r.optimizer: r for r in analysis.robustness(scores, "maximize", delta=0.05, reference="optimizer")}
    assert study["adam"].good_fraction == pytest.approx(2 / 3) and study["sgdm"].good_fraction == 0
    assert own["sgdm"].good_fraction == pytest.approx(1.0) and own["adam"].good_fraction == pytest.approx(2 / 3)
    assert study["adam"].lr_window_decades == pytest.approx(1.0) and study["sgdm"].lr_window_decades == 0
    assert study["adam"].relative_best == 1.0 and study["sgdm"].relative_best == pytest.approx(0.31 / 0.90)
    with pytest.raises(ValueError, match="reference"):
        analysis.robustness(scores, "maximize", reference="own")


def test_every_map_of_a_study_shares_one_colour_range():
    rows = [("adam", lr, b, 0, 0.5 + lr + b / 10) for lr in (1e-3, 1e-1) for b in (0.5, 0.9)]
    rows += [("sgdm", lr, b, 0, 0.1 + lr) for lr in (1e-3, 1e-1) for b in (0.5, 0.9)]
    scores = analysis.cell_scores(_table(rows), "test_accuracy")
    maps = [analysis.heatmap(scores, o, "maximize") for o in ("adam", "sgdm")]
    low, high = analysis.colour_range(maps)
    assert (low, high) == pytest.approx((0.1 + 1e-3, 0.5 + 1e-1 + 0.09))


def test_sensitivity_takes_each_lr_at_its_best_other_axes():
    scores = analysis.cell_scores(PARTLY_DIVERGED, "test_accuracy")
    curve = analysis.sensitivity(scores, "adam", "maximize")
    assert curve.values == [1e-3, 1e-2]
    # lr 1e-3: beta1 0.9 (0.6) beats 0.5 (0.4); lr 1e-2: the un-diverged 0.80 beats the partly diverged 0.617
    assert curve.score == pytest.approx([0.6, 0.8]) and curve.mean == pytest.approx([0.6, 0.8])
    assert curve.diverged == [0, 0] and curve.runs == [3, 3]


def test_expected_best_curve_rises_from_the_mean_score_to_the_best():
    scores = analysis.cell_scores(PARTLY_DIVERGED, "test_accuracy")
    curve = analysis.expected_best_curve(scores, "adam", "maximize")
    per_config = scores["score"].to_numpy()
    assert len(curve) == 4 and curve[0] == pytest.approx(per_config.mean())
    assert all(b >= a for a, b in zip(curve, curve[1:])) and curve[-1] < per_config.max()


def test_a_difference_map_subtracts_scores_over_the_common_points():
    rows = [("adam", lr, 0.9, 0, 0.5 + lr) for lr in (1e-3, 1e-2, 1e-1)]
    rows += [("sgdm", lr, 0.9, 0, 0.2 + 2 * lr) for lr in (1e-2, 1e-1, 1.0)]
    scores = analysis.cell_scores(_table(rows), "test_accuracy")
    a, b = (analysis.heatmap(scores, o, "maximize") for o in ("adam", "sgdm"))
    diff = analysis.difference(a, b)
    assert diff.x_values == [1e-2, 1e-1] and diff.y is None
    assert diff.score[0] == pytest.approx([(0.5 + 1e-2) - (0.2 + 2e-2), (0.5 + 1e-1) - (0.2 + 2e-1)])


def test_across_studies_lists_each_optimizer_on_each_study():
    easy = analysis.cell_scores(_table([("adam", lr, 0.9, 0, v) for lr, v in ((1e-3, 0.9), (1e-2, 0.89))]),
                                "test_accuracy")
    hard = analysis.cell_scores(_table([("adam", lr, 0.9, 0, v) for lr, v in ((1e-3, 0.9), (1e-2, 0.3))]),
                                "test_accuracy")
    table = analysis.across_studies({"easy": (easy, "maximize"), "hard": (hard, "maximize")})
    assert table.set_index("study")["good_fraction"].to_dict() == {"easy": 1.0, "hard": 0.5}
    assert table.set_index("study")["lr_window_decades"].to_dict() == {"easy": 1.0, "hard": 0.0}


@pytest.mark.parametrize("evaluator", ["fanova", "ped-anova"])
def test_importance_finds_the_hyperparameter_that_moves_the_metric(evaluator):
    """The metric depends on lr only; beta1 is noise-free irrelevant: Optuna's evaluator ranks lr first."""
    rows = [("adam", lr, beta1, seed, 0.9 - 0.1 * abs(math.log10(lr) + 3))
            for lr in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1) for beta1 in (0.0, 0.5, 0.9) for seed in (0, 1)]
    found = analysis.importance(_table(rows), "test_accuracy", "adam", "maximize", evaluator)
    assert set(found) == {"lr", "beta1"} and found["lr"] > 0.9 and found["lr"] > found["beta1"]


def test_a_map_fixes_or_reduces_the_other_axes_as_asked():
    rows = [("adam", lr, b1, 0, 0.5 + lr + b1 / 10 + eps * 1e6) for lr in (1e-3, 1e-1) for b1 in (0.5, 0.9)
            for eps in (1e-8, 1e-7)]
    table = _table(rows)
    table["eps"] = [eps for _ in (1e-3, 1e-1) for _ in (0.5, 0.9) for eps in (1e-8, 1e-7)]
    scores = analysis.cell_scores(table, "test_accuracy")
    best = analysis.heatmap(scores, "adam", "maximize")  # lr × beta1, eps at its best (1e-7)
    assert (best.x, best.y) == ("lr", "beta1") and best.score[0, 0] == pytest.approx(0.5 + 1e-3 + 0.05 + 0.1)
    mean = analysis.heatmap(scores, "adam", "maximize", reduce="mean")  # eps averaged: + 0.055
    assert mean.score[0, 0] == pytest.approx(0.5 + 1e-3 + 0.05 + 0.055) and mean.runs[0, 0] == 2
    fixed = analysis.heatmap(scores, "adam", "maximize", fixed={"eps": 1e-8})
    assert fixed.score[0, 0] == pytest.approx(0.5 + 1e-3 + 0.05 + 0.01)
    strip = analysis.heatmap(scores, "adam", "maximize", y=None, reduce="mean")
    assert strip.score.shape == (1, 2) and strip.runs[0, 0] == 4
    with pytest.raises(ValueError, match="reduce"):
        analysis.heatmap(scores, "adam", "maximize", reduce="median")


# --- a study still running or stopped: the map shows what is not run yet -----------------------------

PARTIAL_STUDY = """name = "partial"
task = "digits-mlp"
seeds = [0, 1]
metric = "test_accuracy"

[optimizers.adam]
lr = { log = [1e-4, 1e-1], num = 4 }
beta1 = [0.5, 0.7, 0.9]
eps = [1e-8, 1e-6]

[optimizers.sgdm]
lr = [0.01, 0.1, 1.0]
"""


def _partly_run(finished: int, failed: set[int] = frozenset(), diverged: set[int] = frozenset()) -> pd.DataFrame:
    """A results frame as ``store.results`` gives it for PARTIAL_STUDY: every cell, the first ``finished``
    of its run order finished (``failed`` / ``diverged``: those cell indexes), the others pending."""
    from study import spec

    study = spec.parse(PARTIAL_STUDY)
    cells = spec.expand(study)
    position = spec.run_order(cells)
    rows = []
    for cell in cells:
        status = "pending"
        if position[cell.index] < finished:
            status = "failed" if cell.index in failed else "diverged" if cell.index in diverged else "complete"
        value = 0.5 + 0.1 * math.log10(cell.hparams["lr"]) + cell.seed / 100 if status == "complete" else None
        rows.append(dict(optimizer=cell.optimizer, seed=cell.seed, cell=cell.index, status=status,
                         diverged=status == "diverged" if status != "pending" else None,
                         final_test_accuracy=value, **cell.hparams))
    return pd.DataFrame(rows)


def test_a_partly_run_study_maps_its_whole_grid_and_marks_exactly_what_has_not_run():
    results = _partly_run(finished=12, failed={0, 1})  # 12 of adam's 16 scouts; its cells 0, 1 failed
    done = results[results.status != "pending"]
    scores = analysis.cell_scores(results, "test_accuracy")
    lrs, betas = [1e-4, 1e-3, 1e-2, 1e-1], [0.5, 0.7, 0.9]
    for reduce in ("best", "mean"):
        hm = analysis.heatmap(scores, "adam", "maximize", reduce=reduce, cells=results)
        assert (hm.x, hm.y) == ("lr", "beta1")
        assert hm.x_values == pytest.approx(lrs) and hm.y_values == betas  # the grid, not only what finished
        for i, beta1 in enumerate(betas):
            for j, lr in enumerate(lrs):
                point = results[(results.optimizer == "adam") & np.isclose(results.lr, lr) & (results.beta1 == beta1)]
                finished = point.status.isin(["complete", "diverged", "failed"]).sum()
                assert (hm.planned[i, j], hm.finished[i, j]) == (len(point), finished)  # 2 eps × 2 seeds
                assert hm.missing[i, j] == (finished == 0)
                scored = point.status.isin(["complete", "diverged"]).any()
                assert np.isfinite(hm.score[i, j]) == scored  # colour only where something has a score
    hm = analysis.heatmap(scores, "adam", "maximize", cells=results)
    assert 0 < hm.missing.sum() < hm.missing.size  # partly run: some points done, some not
    expected_missing = {(b, lr) for lr in lrs for b in betas} - {
        (r.beta1, lr) for r in done[done.optimizer == "adam"].itertuples() for lr in lrs if math.isclose(r.lr, lr)}
    assert {(hm.y_values[i], hm.x_values[j]) for i, j in zip(*np.nonzero(hm.missing))} == expected_missing
    fixed = analysis.heatmap(scores, "adam", "maximize", fixed={"eps": 1e-6}, cells=results)
    assert fixed.planned.max() == 2  # the two seeds at eps = 1e-6
    nothing = analysis.heatmap(analysis.cell_scores(_partly_run(0), "test_accuracy"), "sgdm", "maximize",
                               cells=_partly_run(0))
    assert nothing.missing.all() and nothing.x_values == [0.01, 0.1, 1.0] and np.isnan(nothing.score).all()
    without = analysis.heatmap(scores, "adam", "maximize")  # without the cells: what finished only
    assert without.missing is None and len(without.x_values) <= len(lrs)


def test_a_stopped_studys_first_cells_in_run_order_map_every_optimizer_across_its_axes():
    results = _partly_run(finished=19)  # 19 of 108: the scouts (adam's first 16, sgdm's 3)
    scores = analysis.cell_scores(results, "test_accuracy")
    adam = analysis.heatmap(scores, "adam", "maximize", cells=results)
    # the scouts: each axis' ends and middle (lr 1e-4, 1e-3, 1e-1; every beta1); only lr 1e-2 is missing
    assert adam.missing.sum() == 3 and adam.missing[:, adam.x_values.index(1e-2)].all()
    sgdm = analysis.heatmap(scores, "sgdm", "maximize", cells=results)
    assert sgdm.y is None and not sgdm.missing.any()  # its whole (one-seed) grid


def test_the_progress_line_counts_every_finished_status():
    line = analysis.finished_line({"complete": 5, "diverged": 2, "failed": 1, "running": 3, "pending": 9}, 20)
    assert line == "8 of 20 cells finished · 3 running · 2 diverged · 1 failed"
    assert analysis.finished_line({}, 4) == "0 of 4 cells finished"

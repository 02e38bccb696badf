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


def test_one_axis_map_takes_the_best_of_the_other_axis():
    scores = analysis.cell_scores(_results(), "test_accuracy")
    hm = analysis.heatmap(scores[scores.beta1 == 0.9], "adam", "maximize")
    assert hm.y is None and hm.mean.shape == (1, len(LRS))


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

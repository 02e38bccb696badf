"""Schedule-Free AdamW, step by step in float64, against the authors' ``schedulefree.AdamWScheduleFree``.

As the parity suite (``test_reference_equality.py``) checks the others: 200 steps of a random quartic-plus-
quadratic loss, two parameter groups (here with their own lr and weight decay), a StepLR schedule, to 1e-10
relative. Beyond the training point y (what the parameters hold in train mode) it compares the evaluation
point x after ``.eval()`` and the parameters after switching back with ``.train()``, at every seventh step
and at the end; the switches are part of both trajectories.
"""

from __future__ import annotations

import pytest
import schedulefree  # the test extra's (pyproject.toml): missing, the suite fails rather than skips
import torch

import optimizers
from optimizers.base import train_mode
from tests.optimizers.parity import STEPS, copies, problem, trajectory


EVAL_EVERY = 7
pytestmark = pytest.mark.usefixtures("float64_by_default")  # every test here in float64

# hyperparameters, then the second group's own (lr, weight_decay)
CASES = [
    (dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, warmup_steps=0, r=0.0, weight_lr_power=2.0),
     {}),
    (dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, warmup_steps=20, r=0.0, weight_lr_power=2.0),
     dict(lr=3e-2, weight_decay=1e-1)),
    (dict(lr=5e-3, beta1=0.95, beta2=0.99, eps=1e-6, weight_decay=5e-2, warmup_steps=50, r=0.5, weight_lr_power=1.0),
     dict(lr=2e-2)),
    (dict(lr=2e-2, beta1=0.8, beta2=0.9999, eps=1e-8, weight_decay=1e-3, warmup_steps=100, r=1.0,
          weight_lr_power=0.0), dict(weight_decay=0.0)),
]


def _theirs(params, beta1, beta2, **hparams):
    return schedulefree.AdamWScheduleFree(params, betas=(beta1, beta2), **hparams)


def _ours(params, **hparams):
    return optimizers.create("adamw-schedulefree", params, **hparams)


def _trajectory(make, hparams, second, seed=3):
    """Per step: the parameters after the step (y) and, every EVAL_EVERY steps and at the last, after
    ``.eval()`` (x) and after ``.train()`` again."""
    def build(params):
        optimizer = make([{"params": params[:2]}, {"params": params[2:], **second}], **hparams)
        train_mode(optimizer)  # the authors' class starts in eval mode; ours in train mode
        return optimizer

    def points(optimizer, params, step):
        points = {"y": copies(params)}
        if step % EVAL_EVERY == 0 or step == STEPS - 1:
            optimizer.eval()
            points["x"] = copies(params)
            optimizer.train()
            points["y after train()"] = copies(params)
        return points

    return trajectory(seed, build, points)


@pytest.mark.parametrize("hparams,second", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_matches_the_authors_schedulefree_every_step_in_both_modes(hparams, second):
    ours = _trajectory(_ours, hparams, second)
    theirs = _trajectory(_theirs, hparams, second)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert a.keys() == b.keys()
        for point in a:
            for x, y in zip(a[point], b[point]):
                torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12, msg=lambda m: f"step {step} {point}: {m}")
    start = problem(3)[0]
    moved = max((p - q).abs().max().item() for p, q in zip(ours[-1]["y"], start))
    assert moved > 1e-2, "the trajectory must actually move for the comparison to mean anything"
    apart = max((p - q).abs().max().item() for p, q in zip(ours[-1]["x"], ours[-1]["y"]))
    assert apart > 1e-6, "x and y must differ for the eval-mode comparison to mean anything"


def test_a_step_in_eval_mode_is_refused_like_the_authors():
    for make in (_ours, _theirs):
        params = [torch.zeros(3, requires_grad=True)]
        optimizer = make(params, **CASES[0][0])
        train_mode(optimizer)
        params[0].grad = torch.ones(3)
        optimizer.step()
        optimizer.eval()
        with pytest.raises(Exception, match="train"):
            optimizer.step()

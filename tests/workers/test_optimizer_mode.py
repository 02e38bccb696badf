"""Optimizers with a mode (``train()`` / ``eval()``, ``optimizers.base``): a cell's test metrics are taken at the
optimizer's evaluation point.

Schedule-Free AdamW trains at y and evaluates at the average x. Its test metrics from adamscape's training path
(``workers.training.train``, what a cell trains with, and ``workers.population``, what a worker runs) equal a
hand-written loop that calls ``.eval()`` before each evaluation and ``.train()`` after, and differ from one
that evaluates without ``.eval()``: with the registered optimizer and with the authors' class as a study's
own optimizer.
"""

from __future__ import annotations

import math

import pytest
import schedulefree  # the test extra's: missing, the suite fails rather than skips
import torch

import optimizers
from study import plugins
from study.catalog import TrainingProtocol
from study.protocol import BatchPayload, CellPayload, CellResult, EpochRecord
from workers import tasks, training
from workers.population import train_cells, train_payload, train_population

NAME = "adamw-schedulefree"
TASK = "digits-mlp"
PLAN = TrainingProtocol(epochs=3, batch_size=256, eval_every=1, lr_schedule={"kind": "cosine", "final_factor": 0.1})
HPARAMS = optimizers.spec(NAME).defaults() | {"lr": 1e-2, "weight_decay": 1e-2, "warmup_steps": 10}  # every key, as a cell's
SEED = 5


def _hand_written(make, hparams, seed, plan, switch: bool) -> list[dict]:
    """Each epoch's test metrics from a loop written out by hand as a user would: seeded model, the
    optimizer, the study's lr schedule as a LambdaLR, ``.train()`` before training, and around each
    evaluation ``.eval()`` / ``.train()`` when ``switch``."""
    torch.manual_seed(seed)
    problem = tasks.build(TASK, plan, "cpu")
    params = dict(problem.model.named_parameters())
    optimizer = make(params.values(), **hparams)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                 lambda step: training.schedule_factor(problem, plan, step))
    generator = torch.Generator().manual_seed(seed)
    optimizer.train()
    found = []
    for _ in range(plan.epochs):
        for batch in problem.batches(generator):
            loss, _ = problem.loss(batch, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            problem.after_step(params)
            schedule.step()
        if switch:
            optimizer.eval()
        found.append(problem.evaluate())
        if switch:
            optimizer.train()
    return found


def _metrics(records: list) -> list[dict]:
    return [{k: v for k, v in r.metrics.items() if k.startswith("test_")}
            for r in records if isinstance(r, EpochRecord)]


def _fields(record) -> dict:
    """A record's fields by name, an epoch's metrics among them."""
    return {**{k: v for k, v in vars(record).items() if k != "metrics"}, **getattr(record, "metrics", {})}


def _ours(params, **hparams):
    return optimizers.create(NAME, params, **hparams)


def _authors(params, beta1=0.9, beta2=0.999, **hparams):
    return schedulefree.AdamWScheduleFree(params, betas=(beta1, beta2), **hparams)


def _differ(a: list[dict], b: list[dict]) -> bool:
    return any(abs(x["test_loss"] - y["test_loss"]) > 1e-4 for x, y in zip(a, b))


def test_a_cells_test_metrics_are_taken_in_eval_mode():
    cell = _metrics(training.train(TASK, NAME, HPARAMS, SEED, PLAN))
    assert len(cell) == PLAN.epochs and all(m.keys() == {"test_loss", "test_accuracy"} for m in cell)
    evaluated = _hand_written(_ours, HPARAMS, SEED, PLAN, switch=True)
    assert cell == evaluated  # the same operations in the same order: bit for bit
    assert _differ(cell, _hand_written(_ours, HPARAMS, SEED, PLAN, switch=False))
    # and where the authors' loop would evaluate (their class, float32: equal to rounding)
    authors = _hand_written(_authors, HPARAMS, SEED, PLAN, switch=True)
    for mine, theirs in zip(cell, authors):
        assert mine == pytest.approx(theirs, rel=1e-5, abs=1e-6)
    assert _differ(cell, _hand_written(_authors, HPARAMS, SEED, PLAN, switch=False))


def test_a_workers_batch_evaluates_in_eval_mode_alone_and_as_a_population():
    """What a worker runs (``train_payload``): one at a time and as a population, the same test metrics."""
    members = [HPARAMS, HPARAMS | {"lr": 3e-3, "beta1": 0.95}, HPARAMS | {"warmup_steps": 0, "r": 1.0}]
    cells = tuple(CellPayload(i, NAME, SEED, h) for i, h in enumerate(members))
    for population in (1, 3):
        records = list(train_payload(BatchPayload(TASK, PLAN, cells, population=population)))
        for index, hparams in enumerate(members):
            mine = _metrics([r for r in records if r.key == index])
            evaluated = _hand_written(_ours, hparams, SEED, PLAN, switch=True)
            for got, expected in zip(mine, evaluated):
                assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), (population, index)
            assert _differ(mine, _hand_written(_ours, hparams, SEED, PLAN, switch=False))
        sizes = {r.population.size for r in records if isinstance(r, CellResult)}
        assert sizes == {population}


def test_a_population_of_schedulefree_configs_equals_separate_runs():
    """K configs differing in every hyperparameter, evaluated every epoch in eval mode, equal K runs alone."""
    members = [optimizers.spec(NAME).defaults(),
               HPARAMS | {"beta1": 0.8, "beta2": 0.99, "r": 0.5, "weight_lr_power": 1.0},
               HPARAMS | {"lr": 2e-3, "eps": 1e-6, "warmup_steps": 40, "weight_decay": 0.1}]
    together: dict[int, list] = {}
    for member, record in train_population(TASK, NAME, members, SEED, PLAN):
        together.setdefault(member, []).append(record)
    for index, hparams in enumerate(members):
        alone = list(training.train(TASK, NAME, hparams, SEED, PLAN))
        assert len(together[index]) == len(alone)
        for mine, theirs in zip(together[index], alone):
            assert type(mine) is type(theirs), index
            mine = _fields(mine)
            for key, value in _fields(theirs).items():
                if key in ("wall_seconds", "population", "final"):
                    continue
                if isinstance(value, float) and math.isfinite(value):
                    assert mine[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (index, key)
                else:
                    assert mine[key] == value, (index, key)


def test_the_authors_class_as_a_studys_own_optimizer_trains_and_evaluates_in_its_modes():
    """``schedulefree:AdamWScheduleFree`` named in a study file: it starts in eval mode and refuses a step
    there, so without the hook it could not train at all; with it, its cells evaluate at x (one config per
    pass: it has no batched kernel)."""
    reference = "schedulefree:AdamWScheduleFree"
    plugins.install({reference: plugins.describe_optimizer(plugins.locate(reference, "optimizer", "."))})
    hparams = {"lr": 1e-2, "weight_decay": 1e-2, "warmup_steps": 10}
    cell = _metrics(training.train(TASK, reference, hparams, SEED, PLAN))
    evaluated = _hand_written(_authors, hparams, SEED, PLAN, switch=True)
    assert cell == evaluated
    assert _differ(cell, _hand_written(_authors, hparams, SEED, PLAN, switch=False))
    records = list(train_cells(TASK, reference, SEED, [hparams, hparams | {"lr": 3e-3}], PLAN, population=2))
    assert {r.population.size for _, r in records if isinstance(r, CellResult)} == {1}
    assert _metrics([r for index, r in records if index == 0]) == cell

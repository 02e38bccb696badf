"""``adamscape check``: try a study's own optimizers and task before any cell is registered.

For each optimizer the file names, one configuration (its first grid point, the first seed)
trains a few steps on the task, twice; the task's loss before training must be finite, its
evaluation must report the metrics it declares (an optimizer with a mode, ``train()`` / ``eval()``,
trains in train mode and is evaluated once more after its steps in eval mode, as cells are:
optimizers.base), the same seed must give the same losses, and a
population of two must give the losses of one-at-a-time training (else the study trains one
configuration per pass). Every problem is a :class:`study.plugins.PluginError`: one line naming
the file, the line where it can, and the fix.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

import optimizers
from optimizers.base import has_mode, train_mode
from study import plugins
from study.spec import StudySpec, expand
from workers import population, tasks
from workers.training import plan_of

STEPS = 3
NOT_BATCHED = "the optimizer does not implement the batched kernel of optimizers.base"
CONTRACT = ("batches", "prepare", "objective", "evaluate", "reference_loss", "after_step")  # a Problem's methods


def check_study(spec: StudySpec, source: str) -> dict[str, Any]:
    """Check ``spec``'s plugins (installed into this process); returns what was found. A task whose
    model cannot train as a population is marked so in ``spec.plugins`` (its cells train one at a time)."""
    plugins.install(spec.plugins)
    plan = plan_of(spec.protocol())
    first = {}
    for cell in expand(spec):
        first.setdefault(cell.optimizer, cell)
    report: dict[str, Any] = {"task": spec.task, "metrics": spec.task_info.metrics, "primary": spec.task_info.primary,
                              "optimizers": {}}
    task_blockers = []  # why the task's cells cannot train as populations, whatever the optimizer
    for key, cell in first.items():
        losses = _steps(spec, source, key, cell.hparams, cell.seed, plan)
        again = _steps(spec, source, key, cell.hparams, cell.seed, plan)
        if losses != again:
            raise plugins.PluginError(f"{source}: the same seed gave different losses ({_shown(losses)} then "
                                      f"{_shown(again)}); draw all randomness from the generator adamscape passes "
                                      "to batches() and prepare(), and build the model from torch's seeded RNG")
        if optimizers.spec(key).batched:
            blocker = _task_population_problem(spec, key, cell.hparams, cell.seed, plan, losses)
            task_blockers += [blocker] if blocker else []
        else:
            blocker = NOT_BATCHED
        report["optimizers"][key] = {"hparams": spec.optimizer_spec(key).defaults(), "losses": losses,
                                     "populations": blocker}
    if task_blockers and spec.task in spec.plugins:
        spec.plugins[spec.task] = dataclasses.replace(spec.plugins[spec.task], populations=task_blockers[0])
    return report


def _fail(spec: StudySpec, source: str, name: str, exc: BaseException) -> plugins.PluginError:
    return plugins.PluginError(f"{source}: {plugins.failure(exc, name, spec.plugins.get(name))}")


def _steps(spec: StudySpec, source: str, key: str, hparams: dict[str, float], seed: int, plan) -> list[float]:
    """The training losses of the first few steps of one configuration."""
    torch.manual_seed(seed)
    try:
        problem = tasks.build(spec.task, plan, "cpu")
    except Exception as exc:
        raise _fail(spec, source, spec.task, exc) from None
    missing = [name for name in CONTRACT if not callable(getattr(problem, name, None))]
    if missing or not isinstance(getattr(problem, "model", None), torch.nn.Module):
        lacks = ", ".join(f"{name}()" for name in missing) or "a model (torch.nn.Module)"
        raise plugins.PluginError(f"{source}: {spec.task}: build returned a {type(problem).__name__!r}, which lacks {lacks}; "
                                  "return a workers.tasks.Problem (README 'Your own task')")
    try:
        reference = problem.reference_loss()
        metrics = problem.evaluate()
    except Exception as exc:
        raise _fail(spec, source, spec.task, exc) from None
    if not math.isfinite(reference):
        raise plugins.PluginError(f"{source}: {spec.task}: the loss before training is {reference} (reference_loss()); "
                                  "it must be a finite number")
    declared = set(spec.task_info.metrics) - {"train_loss"}
    if set(metrics) != declared:
        raise plugins.PluginError(f"{source}: {spec.task}: evaluate() returned {sorted(metrics) or 'nothing'} but the "
                                  f"task declares {sorted(declared) or 'none'}; make the two agree")
    try:
        opt = optimizers.create(key, problem.model.parameters(), **hparams)
        train_mode(opt)  # an optimizer with a mode trains in train mode (optimizers.base), as a study's cells do
    except Exception as exc:
        raise _fail(spec, source, key, exc) from None
    parameters = dict(problem.model.named_parameters())
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    for batch in problem.batches(generator):
        if len(losses) == STEPS:
            break
        try:
            loss, _ = problem.loss(batch, generator)
        except Exception as exc:
            raise _fail(spec, source, spec.task, exc) from None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        try:
            opt.step()
        except Exception as exc:
            raise _fail(spec, source, key, exc) from None
        problem.after_step(parameters)
        losses.append(loss.item())
    if not losses:
        raise plugins.PluginError(f"{source}: {spec.task}: batches() yielded nothing; an epoch needs at least one batch")
    if has_mode(opt):  # evaluated as a cell evaluates: eval() before, train() after
        _evaluated_in_eval_mode(spec, source, key, opt, problem, declared)
    return losses


def _evaluated_in_eval_mode(spec: StudySpec, source: str, key: str, opt, problem, declared: set[str]) -> None:
    """An optimizer with a mode, after its steps: ``eval()``, the task's evaluation, ``train()``, as every cell
    runs them (optimizers.base.evaluating); a failure of a switch names the optimizer, one of the evaluation
    the task."""
    try:
        opt.eval()
    except Exception as exc:
        raise _fail(spec, source, key, exc) from None
    try:
        metrics = problem.evaluate()
    except Exception as exc:
        raise _fail(spec, source, spec.task, exc) from None
    try:
        opt.train()
    except Exception as exc:
        raise _fail(spec, source, key, exc) from None
    if set(metrics) != declared:
        raise plugins.PluginError(f"{source}: {spec.task}: evaluate() returned {sorted(metrics) or 'nothing'} in "
                                  f"{key}'s eval mode but the task declares {sorted(declared) or 'none'}")


def _task_population_problem(spec: StudySpec, key: str, hparams: dict[str, float], seed: int, plan,
                             single: list[float]) -> str | None:
    """Why the task cannot train as a population under batched optimizer ``key`` (None: it can, and its
    first loss matches one-at-a-time training's)."""
    torch.manual_seed(seed)
    problem = tasks.build(spec.task, plan, "cpu")
    reason = population.batchable(problem.model)
    if reason:
        return reason
    try:
        pair = population._Population(problem, key, [hparams, hparams], "cpu")
        generator = torch.Generator().manual_seed(seed)
        data, _ = problem.prepare(next(iter(problem.batches(generator))), generator)
        losses = pair.losses(data).tolist()
    except Exception as exc:
        return f"its objective cannot run under torch.func.vmap ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    if not all(math.isclose(value, single[0], rel_tol=1e-4, abs_tol=1e-6) for value in losses):
        return f"a population's first loss {losses[0]:.6g} differs from one-at-a-time training's {single[0]:.6g}"
    return None


def _shown(losses: list[float]) -> str:
    return ", ".join(f"{value:.6g}" for value in losses)

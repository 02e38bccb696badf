"""Population training: K configurations of one optimizer trained together as one stacked model.

The K cells share task, optimizer, seed and protocol, so they start from the same
initial weights and see the same minibatches (and augmentation) — common random
numbers, as one-at-a-time training with that seed would give each of them. Each
parameter gets a leading dimension of size K; the task's objective runs under
``torch.func.vmap`` over ``functional_call``, and the optimizer's batched kernel
takes one value per config for every hyperparameter that differs between them
(``optimizers.pieces``). Results equal one-at-a-time training within float32
rounding (the tests check every task and optimizer).

A config that diverges is evaluated, reported and removed from the population at
the end of that epoch: its rows leave the stacked parameters, the optimizer state
and the hyperparameter tensors, so it can neither disturb the others nor cost
compute. No operation mixes rows of different configs.
"""

from __future__ import annotations

import logging
import math
import os
import time
import traceback
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

import optimizers
from study import plugins
from study.catalog import TrainingProtocol
from . import tasks
from .training import (autocast_for, device_label, is_diverged, plan_of, reproducible, schedule_factor, summary,
                       train, watch_memory)

log = logging.getLogger("adamscape")
MEMORY_SHARE = 0.5  # of the device's free memory one population may plan to use
CPU_MEMORY_CAP = 8 << 30  # on a CPU, never plan beyond this (the node's other actors need memory too)


def batchable(model: nn.Module) -> str | None:
    """Why ``model`` cannot be trained as a stacked population, or None when it can.

    BatchNorm in training mode updates running statistics in place, which a vmapped
    forward cannot do per config.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase):
            return f"it has BatchNorm ({name or 'the model'}) in training mode"
    return None


def train_population(task: str, optimizer: str, members: list[dict[str, float]], seed: int,
                     protocol: TrainingProtocol | dict, device: str = "cpu") -> Iterator[tuple[int, dict[str, Any]]]:
    """Train ``members`` (one hyperparameter dict each, same keys) as one population.

    Yields ``(member index, record)``; for each member the records are exactly what
    ``workers.training.train`` yields for it alone: ``{"epoch": e, **metrics}`` per
    epoch, then its summary. A member's ``wall_seconds`` is its share of the
    population's wall time (elapsed / K).
    """
    plan = plan_of(protocol)
    with reproducible(plan.deterministic):
        yield from _train_population(task, optimizer, members, seed, plan, device)


def _train_population(task: str, optimizer: str, members: list[dict[str, float]], seed: int,
                      plan: TrainingProtocol, device: str) -> Iterator[tuple[int, dict[str, Any]]]:
    started = time.perf_counter()
    watch_memory(device)
    torch.manual_seed(seed)
    problem = tasks.build(task, plan, device)
    population = _Population(problem, optimizer, members, device)
    generator = torch.Generator().manual_seed(seed)
    reference = problem.reference_loss()
    autocast = autocast_for(plan, device, task)
    best_accuracy = [-math.inf] * len(members)
    step = 0
    for epoch in range(1, plan.epochs + 1):
        total, weight = torch.zeros(population.size, device=device), 0
        for batch in problem.batches(generator):
            population.set_lr(schedule_factor(problem, plan, step))
            data, size = problem.prepare(batch, generator)
            with autocast:
                losses = population.losses(data)
            population.step(losses)
            total += losses.detach().float() * size
            weight += size
            step += 1
        epoch_losses = (total / weight).tolist()  # one sync per epoch
        finished = []
        for row, member in enumerate(population.members):
            metrics = {"train_loss": epoch_losses[row]}
            diverged = is_diverged(metrics["train_loss"], reference, plan)
            if diverged or epoch % plan.eval_every == 0 or epoch == plan.epochs:
                with autocast:
                    metrics |= population.evaluate(row)
            best_accuracy[member] = max(best_accuracy[member], metrics.get("test_accuracy", -math.inf))
            yield member, {"epoch": epoch, **metrics}
            if diverged or epoch == plan.epochs:
                share = (time.perf_counter() - started) / len(members)
                finished.append(row)
                yield member, summary(metrics, diverged, best_accuracy[member], share, device)
        if finished:
            population.drop(finished)
        if not population.size:
            return


class _Population:
    """The stacked parameters of the live members, their optimizer and its per-config hyperparameters."""

    def __init__(self, problem: tasks.Problem, optimizer: str, members: list[dict[str, float]], device: str):
        self.problem, self.members = problem, list(range(len(members)))
        model = problem.model
        self.names = [name for name, _ in model.named_parameters()]
        size = len(members)
        self.params = [p.detach().unsqueeze(0).repeat(size, *([1] * p.dim())).requires_grad_()
                       for p in model.parameters()]
        self.buffers = dict(model.named_buffers())
        hparams = {name: _per_config([m[name] for m in members], device) for name in members[0]}
        self.base_lr = hparams.get("lr", optimizers.spec(optimizer).defaults().get("lr"))
        self.opt = optimizers.create(optimizer, self.params, **hparams)

        objective = _Objective(problem)
        buffers = {f"model.{n}": b for n, b in self.buffers.items()}

        def one(params: tuple[Tensor, ...], data: Any) -> Tensor:
            return functional_call(objective, ({f"model.{n}": p for n, p in zip(self.names, params)}, buffers),
                                   (data,))
        self._losses = vmap(one, in_dims=(0, None))

    @property
    def size(self) -> int:
        return len(self.members)

    def set_lr(self, factor: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = self.base_lr * factor

    def losses(self, data: Any) -> Tensor:
        """Each live member's mean loss on ``data``: shape (K,)."""
        return self._losses(tuple(self.params), data)

    def step(self, losses: Tensor) -> None:
        # the sum's gradient with respect to member k's rows is member k's own gradient
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.opt.step()
        self.problem.after_step(dict(zip(self.names, self.params)))

    @torch.no_grad()
    def evaluate(self, row: int) -> dict[str, float]:
        """The task's metrics for one member: its rows copied into the task's own model."""
        for target, stacked in zip(self.problem.model.parameters(), self.params):
            target.copy_(stacked[row])
        return self.problem.evaluate()

    @torch.no_grad()
    def drop(self, rows: list[int]) -> None:
        """Remove members: their rows leave parameters, optimizer state and hyperparameters."""
        old = len(self.members)
        keep = [r for r in range(old) if r not in set(rows)]
        self.members = [self.members[r] for r in keep]
        if not keep:
            return
        index = torch.tensor(keep, device=self.params[0].device)
        kept = lambda value: (value.index_select(0, index.to(value.device))  # noqa: E731
                              if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == old else value)
        new_params = []
        for param in self.params:
            fresh = kept(param.detach()).requires_grad_()
            self.opt.state[fresh] = {key: kept(value) for key, value in self.opt.state.pop(param, {}).items()}
            new_params.append(fresh)
        (group,) = self.opt.param_groups  # optimizers.create makes one group
        group.update({key: kept(value) for key, value in group.items() if key != "params"}, params=new_params)
        self.params = new_params
        self.base_lr = kept(self.base_lr)


class _Objective(nn.Module):
    """The task's objective as a module call, so ``functional_call`` can swap in one member's parameters."""

    def __init__(self, problem: tasks.Problem):
        super().__init__()
        self.model = problem.model
        self._problem = [problem]  # not a submodule

    def forward(self, data: Any) -> Tensor:
        return self._problem[0].objective(data)


def _per_config(values: list[float], device: str) -> float | Tensor:
    """One number when every member has the same value (the scalar fast path); else a (K,) float64 tensor,
    so the hyperparameter arithmetic rounds as Python's floats do in one-at-a-time training."""
    if all(v == values[0] for v in values):
        return values[0]
    return torch.tensor(values, dtype=torch.float64, device=device)


# --- how many configs fit, and the loop over populations a worker runs ----------------------------

def population_size(problem: tasks.Problem, device: str) -> int:
    """How many configs of ``problem`` one population may hold on ``device`` (memory-bound estimate).

    Per config: parameters, gradients and up to four optimizer buffers, plus the activations of one
    forward and backward pass (measured with hooks on one batch), with 2× headroom.
    """
    param_bytes = sum(p.numel() * p.element_size() for p in problem.model.parameters())
    activation_bytes = _activation_bytes(problem)
    per_config = 2 * (6 * param_bytes + 3 * activation_bytes)
    return max(1, int(MEMORY_SHARE * _free_memory(device) // max(per_config, 1)))


def _activation_bytes(problem: tasks.Problem) -> int:
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, out: sizes.append(out.numel() * out.element_size())
                                     if isinstance(out, Tensor) else None) for m in problem.model.modules()]
    try:
        with torch.no_grad():
            batch = next(iter(problem.batches(torch.Generator().manual_seed(0))))
            problem.objective(problem.prepare(batch, torch.Generator().manual_seed(0))[0])
    finally:
        for hook in hooks:
            hook.remove()
    return sum(sizes)


def _free_memory(device: str) -> int:
    if device.startswith("cuda"):
        index = torch.device(device)
        free, total = torch.cuda.mem_get_info(index)
        # a worker that shares its GPU may use its fraction of it (CellWorker caps its allocator there)
        own = torch.cuda.get_per_process_memory_fraction(index) * total - torch.cuda.memory_reserved(index)
        return int(max(0, min(free, own)))
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        available = CPU_MEMORY_CAP
    return min(available, CPU_MEMORY_CAP)


def train_cells(task: str, optimizer: str, seed: int, members: list[dict[str, float]], protocol: TrainingProtocol | dict,
                device: str = "cpu", population: int | None = None, halvings: int = 0
                ) -> Iterator[tuple[int, dict[str, Any]]]:
    """Train every member (same task, optimizer, seed, protocol) in populations of at most ``population``
    configs (None: as many as fit the device's memory), halved ``halvings`` times (a retry of cells whose
    worker ran out of device memory); yields ``(member index, record)``.

    A model that cannot be stacked trains one config at a time (said once in the log). On CUDA a
    population that runs out of memory before its first epoch ends is split in two and retried.
    """
    plan = plan_of(protocol)
    torch.manual_seed(seed)
    probe = tasks.build(task, plan, device)
    reason = tasks.population_blocker(task) or batchable(probe.model)
    if not optimizers.spec(optimizer).batched:
        _say_once(f"optimizer {optimizer} trains one configuration per pass: it does not implement the batched "
                  "kernel of optimizers.base (README 'Your own optimizer')")
        limit = 1
    elif reason:
        _say_once(f"task {task} trains one configuration per pass: {reason}")
        limit = 1
    else:
        limit = population_size(probe, device) if population is None else population
        if halvings:
            limit = max(1, limit >> halvings)
            log.warning("%d cells whose worker was lost before (out of device memory, say): populations of at most %d "
                        "this time", len(members), limit)
    del probe
    pending = list(range(len(members)))
    while pending:
        chunk, pending = pending[:limit], pending[limit:]
        if len(chunk) == 1:
            for record in train(task, optimizer, members[chunk[0]], seed, plan, device):
                yield chunk[0], record
            continue
        started = False
        try:
            for index, record in train_population(task, optimizer, [members[i] for i in chunk], seed, plan, device):
                started = True
                yield chunk[index], record
        except torch.OutOfMemoryError:
            if started or len(chunk) == 1:
                raise
            limit = max(1, len(chunk) // 2)
            log.warning("a population of %d ran out of device memory; trying %d", len(chunk), limit)
            torch.cuda.empty_cache()
            pending = chunk + pending


def train_payload(payload: dict[str, Any], device: str = "cpu") -> Iterator[dict[str, Any]]:
    """Train a worker's batch (``study.runner.payload``): its cells sharing optimizer and seed as
    populations, each record tagged with its cell's ``key``. A crash ends the unfinished cells of its
    group as errors (with the traceback) and the worker goes on with the next group."""
    plugins.install(payload.get("plugins"))
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for cell in payload["cells"]:
        groups.setdefault((cell["optimizer"], cell["seed"]), []).append(cell)
    for (optimizer, seed), cells in groups.items():
        finished: set[int] = set()
        try:
            for index, record in train_cells(payload["task"], optimizer, seed, [c["hparams"] for c in cells],
                                             payload["protocol"], device, payload.get("population"),
                                             payload.get("halvings", 0)):
                if "epoch" not in record:
                    finished.add(index)
                yield {"key": cells[index]["key"], **record}
        except Exception as exc:  # a crashed trial is a result to record, not a reason to lose the worker
            if resource_fault(exc):  # not the cell's doing: it runs again on a fresh worker, this one goes
                yield {"key": next(c["key"] for i, c in enumerate(cells) if i not in finished),
                       "fault": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"}
                return
            error = traceback.format_exc(limit=8)
            for index, cell in enumerate(cells):
                if index not in finished:
                    yield {"key": cell["key"], "error": error, "device": device_label(device)}


CUDA_FAULTS = ("CUDA error", "CUBLAS_STATUS", "CUDNN_STATUS", "cuDNN error", "NCCL error")


def resource_fault(exc: BaseException) -> bool:
    """Out of device memory (a neighbour on a shared GPU may hold it) or a CUDA error (sticky: the process
    cannot use the GPU again): the worker's fault, not the configuration's."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in CUDA_FAULTS))


_said: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        log.warning(message)

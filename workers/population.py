"""Population training: K configurations of one optimizer trained together as one stacked model.

The K cells share task, optimizer, seed and protocol, so they start from the same
initial weights and see the same minibatches (and augmentation) — common random
numbers, as one-at-a-time training with that seed would give each of them. Each
parameter gets a leading dimension of size K; the task's objective runs under
``torch.func.vmap`` over ``functional_call``, and the optimizer's batched kernel
takes one value per config for every hyperparameter that differs between them
(``optimizers.pieces``). Results equal one-at-a-time training within float32
rounding (the tests check every task and optimizer).

An optimizer with a mode (``train()`` / ``eval()``, optimizers.base) is put in eval mode once for an
epoch's evaluations, all members together, and back in train mode after, as one config alone is around
its own; a member evaluated when the others are not (one that diverged) so takes the others through
that round trip too, which moves them by rounding only.

Every member's summary carries the metrics at initialisation (``initial_<name>``:
``workers.training.initial_metrics``), the same for all: they share the initial weights.

A config that diverges is evaluated, reported and removed from the population at
the end of that epoch: its rows leave the stacked parameters, the optimizer state
and the hyperparameter tensors, so it can neither disturb the others nor cost
compute. No operation mixes rows of different configs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

import optimizers
from optimizers.base import evaluating, train_mode
from study import plugins
from study.catalog import TrainingProtocol
from study.protocol import (BatchPayload, CellFailure, CellResult, EpochRecord, PopulationNote, ResourceFault,
                            TaskPlugin, WorkerRecord)
from workers import tasks
from workers.training import (SingleRun, autocast_for, device_label, initial_metrics, plan_of, reproducible, run_epochs,
                              schedule_factor, train, watch_memory)

log = logging.getLogger("adamscape")
MEMORY_SHARE = 0.5  # of the device's free memory one population may plan to use
CPU_MEMORY_CAP = 8 << 30  # on a CPU, never plan beyond this (the node's other actors need memory too)


def batchable(model: nn.Module) -> str | None:
    """Why ``model`` cannot be trained as a stacked population, or None when it can.

    Recurrent layers (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``) run one fused kernel that ``torch.func.vmap``
    has no batching rule for. BatchNorm is batchable: every member keeps its own running statistics
    (its rows of the stacked buffers, :class:`_Population`). What else cannot run under vmap (a random
    operation in the objective, say: dropout) is found by ``adamscape check`` trying it.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.RNNBase):
            return (f"it has a recurrent layer ({name or 'the model'}: {type(module).__name__}), whose fused kernel "
                    "torch.func.vmap cannot batch")
    return None


def train_population(task: str, optimizer: str, members: list[dict[str, float]], seed: int,
                     protocol: TrainingProtocol | dict, device: str = "cpu",
                     judge: Callable[[float], None] | None = None
                     ) -> Iterator[tuple[int, EpochRecord | CellResult]]:
    """Train ``members`` (one hyperparameter dict each, same keys) as one population.

    Yields ``(member index, record)``; for each member the records are exactly what
    ``workers.training.train`` yields for it alone: an ``EpochRecord`` per epoch, then its summary (a
    ``CellResult``). A member's ``wall_seconds`` is its share of the population's wall time (elapsed / K).

    ``judge``: called once within the first epoch, before anything is yielded, with the population's
    measured seconds per step (:class:`_StepTimer`); it may raise to abandon the population.
    """
    plan = plan_of(protocol)
    with reproducible(plan.deterministic):
        yield from _train_population(task, optimizer, members, seed, plan, device, judge)


def _train_population(task: str, optimizer: str, members: list[dict[str, float]], seed: int,
                      plan: TrainingProtocol, device: str,
                      judge: Callable[[float], None] | None = None
                      ) -> Iterator[tuple[int, EpochRecord | CellResult]]:
    started = time.perf_counter()
    watch_memory(device)
    torch.manual_seed(seed)
    problem = tasks.build(task, plan, device)
    population = _Population(problem, optimizer, members, device, task, seed, plan)
    reference = problem.reference_loss()
    initial = initial_metrics(task, seed, plan, device, problem, reference, population.autocast)  # every member's ℓ₀
    lap = None
    if judge is not None:
        timer = _StepTimer(device, MIN_SECONDS["together"])

        def lap(size: int | None) -> None:
            """Judge once, when enough steps were timed or, in an epoch shorter than that, on what it timed."""
            nonlocal timer
            if timer is not None and (size is None or timer.lap(size)):
                judge(timer.seconds_per_step())
                timer = None
    yield from run_epochs(population, plan, device, reference, initial, started, lap)


class _Population:
    """The stacked parameters of the live members, their optimizer and its per-config hyperparameters."""

    def __init__(self, problem: tasks.Problem, optimizer: str, members: list[dict[str, float]], device: str,
                 task: str = "", seed: int = 0, plan: TrainingProtocol | None = None):
        self.problem, self.members = problem, list(range(len(members)))
        self.plan = plan or TrainingProtocol(epochs=1, batch_size=1)  # None: stepped by hand (check, tests)
        self.generator = torch.Generator().manual_seed(seed)  # every member sees the same batches
        self.autocast = autocast_for(self.plan, device, task)
        model = problem.model
        self.names = [name for name, _ in model.named_parameters()]
        size = len(members)
        self.params = [p.detach().unsqueeze(0).repeat(size, *([1] * p.dim())).requires_grad_()
                       for p in model.parameters()]
        # every buffer stacked too: a BatchNorm's running statistics are per member, updated in place
        # through vmap on each member's own rows, and copied into the task's model with its parameters
        self.buffer_names = [name for name, _ in model.named_buffers()]
        self.buffers = [b.detach().unsqueeze(0).repeat(size, *([1] * b.dim())) for b in model.buffers()]
        hparams = {name: _per_config([m[name] for m in members], device) for name in members[0]}
        self.base_lr = hparams.get("lr", optimizers.spec(optimizer).defaults().get("lr"))
        self.opt = optimizers.create(optimizer, self.params, **hparams)
        for group in self.opt.param_groups:  # members that share every value leave no (K,) tensor to see K by
            group["population"] = True  # (optimizers.pieces.config_dims: per-config blocks, masks)
        train_mode(self.opt)  # as workers.training does: evaluations then wrap in optimizers.base.evaluating

        objective = _Objective(problem)

        def one(params: tuple[Tensor, ...], buffers: tuple[Tensor, ...], data: Any) -> Tensor:
            values = {f"model.{n}": p for n, p in zip(self.names, params)}
            values |= {f"model.{n}": b for n, b in zip(self.buffer_names, buffers)}
            return functional_call(objective, values, (data,))
        self._losses = vmap(one, in_dims=(0, 0, None))

    @property
    def size(self) -> int:
        return len(self.members)

    def set_lr(self, factor: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = self.base_lr * factor

    def train_step(self, batch: Any, step: int) -> tuple[Tensor, int]:
        """One step of every live member on ``batch`` (the :class:`workers.training.Trainer` contract)."""
        self.set_lr(schedule_factor(self.problem, self.plan, step))
        data, size = self.problem.prepare(batch, self.generator)
        with self.autocast:
            losses = self.losses(data)
        self.step(losses)
        return losses, size

    def losses(self, data: Any) -> Tensor:
        """Each live member's mean loss on ``data``: shape (K,)."""
        return self._losses(tuple(self.params), tuple(self.buffers), data)

    def step(self, losses: Tensor) -> None:
        # the sum's gradient with respect to member k's rows is member k's own gradient
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.opt.step()
        self.problem.after_step(dict(zip(self.names, self.params)))

    @torch.no_grad()
    def evaluate(self, row: int) -> dict[str, float]:
        """The task's metrics for one member: its rows (parameters and buffers, e.g. BatchNorm's running
        statistics) copied into the task's own model."""
        model = self.problem.model
        for target, stacked in zip([*model.parameters(), *model.buffers()], [*self.params, *self.buffers]):
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
        self.buffers = [kept(buffer) for buffer in self.buffers]
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

    Per config: parameters, gradients and up to four optimizer buffers, the model's buffers (BatchNorm's
    running statistics: each member has its own), plus the activations one training step keeps for its
    backward pass (measured on one batch: :func:`_activation_bytes`), with 2× headroom.
    """
    param_bytes = sum(p.numel() * p.element_size() for p in problem.model.parameters())
    buffer_bytes = sum(b.numel() * b.element_size() for b in problem.model.buffers())
    per_config = 2 * (6 * param_bytes + buffer_bytes + 3 * _activation_bytes(problem))
    return max(1, int(MEMORY_SHARE * _free_memory(device) // max(per_config, 1)))


def _activation_bytes(problem: tasks.Problem) -> int:
    """Bytes of the tensors autograd saves for the backward pass of one training step on one batch, the
    parameters left out: every layer's activations, also those of functional operations inside a module
    (attention's weights in scaled_dot_product_attention, say) that module hooks do not see. The model's
    buffers are restored afterwards (a training-mode forward updates BatchNorm's running statistics)."""
    model = problem.model
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    buffers = [b.detach().clone() for b in model.buffers()]
    saved: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            batch = next(iter(problem.batches(torch.Generator().manual_seed(0))))
            loss = problem.objective(problem.prepare(batch, torch.Generator().manual_seed(0))[0])
        del loss
    finally:
        with torch.no_grad():
            for buffer, value in zip(model.buffers(), buffers):
                buffer.copy_(value)
    return sum(saved.values())


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
                device: str = "cpu", population: int | None = None, halvings: int = 0, blocker: str | None = None
                ) -> Iterator[tuple[int, EpochRecord | CellResult | CellFailure]]:
    """Train every member (same task, optimizer, seed, protocol) in populations of at most ``population``
    configs (None: auto), halved ``halvings`` times (a retry of cells whose worker ran out of device
    memory); yields ``(member index, record)``. ``blocker``: why the task cannot train as a population, as
    ``adamscape check`` found it (its plugin record says; :func:`train_payload` passes it on). Each member's
    summary carries ``population``: a ``PopulationNote`` (the configs of its pass, and how that was
    decided). A member whose training crashes ends as a ``CellFailure``; the others still train.

    Auto: as many as fit the device's memory, if that is faster than one at a time *as measured here*: the
    first steps of the population are timed against the steps of one config alone (:func:`choose`); a
    population found slower is abandoned before it reports anything (its cells train one at a time). The
    measurements are kept per (task, optimizer, population size) for the worker's later batches.

    A model that cannot be stacked trains one config at a time (said once in the log). On CUDA a
    population that runs out of memory before its first epoch ends is split in two and retried.
    """
    plan = plan_of(protocol)
    torch.manual_seed(seed)
    probe = tasks.build(task, plan, device)
    reason = blocker or batchable(probe.model)
    fixed = None  # why every pass trains one config, whatever the measurements say
    if not optimizers.spec(optimizer).batched:
        _say_once(f"optimizer {optimizer} trains one configuration per pass: it does not implement the batched "
                  "kernel of optimizers.base (README 'Your own optimizer')")
        fixed, limit = f"optimizer {optimizer} has no batched kernel (optimizers.base)", 1
    elif reason:
        _say_once(f"task {task} trains one configuration per pass: {reason}")
        fixed, limit = f"task {task} cannot train as a population: {reason}", 1
    else:
        limit = population_size(probe, device) if population is None else population
        if halvings:
            limit = max(1, limit >> halvings)
            log.warning("%d cells whose worker was lost before (out of device memory, say): populations of at most %d "
                        "this time", len(members), limit)
    del probe
    key = _cost_key(task, optimizer, device, plan)

    def alone(chunk: list[int], why: str) -> Iterator[tuple[int, EpochRecord | CellResult | CellFailure]]:
        for index in chunk:  # a crash fails its own cell only: the next one still trains
            try:
                for record in train(task, optimizer, members[index], seed, plan, device):
                    yield index, _noted(record, 1, why)
            except Exception as exc:
                yield index, _crashed(exc, device)

    pending = list(range(len(members)))
    while pending:
        chunk, pending = pending[:limit], pending[limit:]
        size = len(chunk)
        if fixed or size == 1:
            yield from alone(chunk, f"1 config per pass: {fixed}" if fixed else _why_single(population, limit,
                                                                                            len(members), halvings))
            continue
        verdict = [size, f"{size} configs per pass: at most {population} asked (--population {population})"
                         + (f", halved {halvings}x after lost workers" if halvings else "") + ", not measured"]
        judge = None
        if population is None:  # auto: decided by what this worker measured
            lone = _LONE_STEP.get(key)
            if lone is None:
                try:
                    lone = _LONE_STEP[key] = _lone_seconds_per_step(task, optimizer, members[chunk[0]], seed, plan,
                                                                    device)
                except Exception as exc:  # its first config crashes: each config alone, each crash its own cell's
                    if resource_fault(exc):
                        raise
                    yield from alone(chunk, "1 config per pass: timing one config alone crashed "
                                            f"({type(exc).__name__})")
                    continue
            memory = f" (memory allows {limit} of these {len(members)})" if limit < len(members) else ""
            together = _TOGETHER_STEP.get(key + (size,))
            if together is None:
                def judge(seconds: float, size: int = size, lone: float = lone, memory: str = memory) -> None:
                    _TOGETHER_STEP[key + (size,)] = seconds
                    verdict[:] = choose(size, lone, seconds)
                    if verdict[0] == 1:
                        raise _Slower
                    verdict[1] += memory
            else:
                verdict[:] = choose(size, lone, together)
                verdict[1] += memory if verdict[0] > 1 else ""
                if verdict[0] == 1:
                    yield from alone(chunk, verdict[1])
                    continue
        started, ended = False, set()
        try:
            for index, record in train_population(task, optimizer, [members[i] for i in chunk], seed, plan, device,
                                                  **({"judge": judge} if judge else {})):
                started = True
                if isinstance(record, CellResult):
                    ended.add(chunk[index])
                yield chunk[index], _noted(record, size, verdict[1])
        except _Slower:  # measured in its first steps, before it reported anything
            yield from alone(chunk, verdict[1])
        except torch.OutOfMemoryError:
            if started or len(chunk) == 1:
                raise
            limit = max(1, len(chunk) // 2)
            log.warning("a population of %d ran out of device memory; trying %d", len(chunk), limit)
            torch.cuda.empty_cache()
            pending = chunk + pending
        except Exception as exc:
            failure = _crashed(exc, device)
            if started:  # its members reported epochs: the unfinished ones end with the crash
                yield from ((index, failure) for index in chunk if index not in ended)
            else:  # nothing reported yet: each config alone, so that a crash fails only the config that crashes
                yield from alone(chunk, f"1 config per pass: the population of {size} crashed ({type(exc).__name__}) "
                                        "before it reported")


# --- auto: populations only where this worker measured them faster than one config at a time --------

WARMUP_STEPS = 2  # a pass's first steps pay first calls (vmap's tracing, lazy imports, the allocator): not timed
MIN_STEPS = 8  # a measurement times at least this many steps, ...
MIN_SECONDS = {"lone": 0.02, "together": 0.05}  # ... and this long (one config alone: on a copy thrown away), ...
ENOUGH_SECONDS = 0.5  # ... or at least 3 steps that took this long (slow steps need no more)
MAX_PROBE_STEPS = 400  # the lone measurement's bound, whatever the clock says
_LONE_STEP: dict[tuple, float] = {}  # cost key -> seconds per step of one config alone, measured in this process
_TOGETHER_STEP: dict[tuple, float] = {}  # cost key + (K,) -> seconds per step of a population of K


class _Slower(Exception):
    """A population measured slower per config than one at a time: abandoned before it reported anything."""


def choose(size: int, lone: float, together: float) -> tuple[int, str]:
    """The configs per pass for a population of ``size`` that measured ``together`` seconds per step, against
    ``lone`` seconds per step of one config alone: ``size`` if that is less per config, else 1; and why,
    with the measured numbers."""
    per_config = together / size
    numbers = f"{_ms(per_config)} ms vs {_ms(lone)} ms per config and step"
    if per_config < lone:
        return size, (f"{size} configs per pass: {_times(lone / per_config)} faster per cell than one at a time "
                      f"(measured {numbers})")
    return 1, (f"1 config per pass: a population of {size} measured {_times(per_config / lone)} slower per cell "
               f"than one at a time ({numbers})")


def _ms(seconds: float) -> str:
    value = seconds * 1e3
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def _times(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio < 1.1 else f"{ratio:.1f}x"


def _why_single(population: int | None, limit: int, members: int, halvings: int) -> str:
    """Why a pass of one config, when that was not measured."""
    asked = f"--population {population}" + (f", halved {halvings}x after lost workers" if halvings else "")
    if population is not None and limit == 1:
        return f"1 config per pass, as asked ({asked})"
    if members == 1:
        return "1 config per pass: the only cell of its optimizer and seed in this batch"
    if population is None:
        return ("1 config per pass: memory allows one" if limit == 1
                else f"1 config per pass: the cell left over after populations of {limit}")
    return f"1 config per pass: the cell left over ({asked})"


def _noted(record: EpochRecord | CellResult, size: int, why: str) -> EpochRecord | CellResult:
    """A cell's summary with the note of how its pass was chosen; its epochs as they are."""
    match record:
        case CellResult():
            return dataclasses.replace(record, population=PopulationNote(size, why))
        case EpochRecord():
            return record
    raise TypeError(f"not a training record: {record!r}")


def _cost_key(task: str, optimizer: str, device: str, plan: TrainingProtocol) -> tuple:
    """What a step's cost depends on, besides the population's size (the seed and hyperparameter values do not)."""
    return (task, optimizer, torch.device(device).type, plan.batch_size, plan.amp, plan.deterministic,
            repr(sorted(plan.task_options.items())))


class _StepTimer:
    """How long a loop's steps take, from the steps after its first WARMUP_STEPS that see a full batch (an
    epoch's short last batch is faster); ``lap(batch size)`` after each step says when enough were timed.

    On a CPU with one torch thread (a worker's setting) a step is timed by the CPU time of the thread that
    runs it: other processes on the machine then cannot lengthen it; with more threads by the clock. On
    CUDA by events on the device's stream (no wait per step, one when the result is read). The lower
    quartile of the durations: what interference remains (caches, a clock) only adds to a step's time."""

    def __init__(self, device: str, min_seconds: float):
        self.device, self.min_seconds = torch.device(device), min_seconds
        self.cuda = self.device.type == "cuda"
        self.tick = time.thread_time if not self.cuda and torch.get_num_threads() == 1 else time.perf_counter
        self.clock, self.sizes = [self.tick()], []
        self.events = [self._event()] if self.cuda else []

    def _event(self):
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def lap(self, size: int) -> bool:
        self.clock.append(self.tick())
        self.sizes.append(size)
        if self.cuda:
            self.events.append(self._event())
        timed = len(self.sizes) - WARMUP_STEPS
        spent = self.clock[-1] - self.clock[min(WARMUP_STEPS, len(self.sizes))]
        return (timed >= MIN_STEPS and spent >= self.min_seconds) or (timed >= 3 and spent >= ENOUGH_SECONDS)

    def seconds_per_step(self) -> float:
        if self.cuda:
            self.events[-1].synchronize()
            steps = [a.elapsed_time(b) / 1e3 for a, b in zip(self.events, self.events[1:])]
        else:
            steps = [b - a for a, b in zip(self.clock, self.clock[1:])]
        if not steps:
            return math.inf
        timed = list(zip(steps, self.sizes))[WARMUP_STEPS:] or list(zip(steps, self.sizes))
        full = max(size for _, size in timed)
        durations = sorted(seconds for seconds, size in timed if size == full)
        return durations[(len(durations) - 1) // 4]


def _lone_seconds_per_step(task: str, optimizer: str, hparams: dict[str, float], seed: int, plan: TrainingProtocol,
                           device: str) -> float:
    """Seconds per step of one config trained alone, timed on a copy that is thrown away: the steps of
    ``workers.training.train``'s loop, as many as :class:`_StepTimer` needs (a few milliseconds' worth on a
    small task, 3 steps on a slow one)."""
    with reproducible(plan.deterministic):
        run = SingleRun(task, optimizer, hparams, seed, plan, device)
        total = torch.zeros((), device=device)
        timer, steps = _StepTimer(device, MIN_SECONDS["lone"]), 0
        while steps < MAX_PROBE_STEPS:
            before = steps
            for batch in run.problem.batches(run.generator):
                loss, size = run.step(batch)
                total += loss.detach().float() * size
                steps += 1
                if timer.lap(size) or steps >= MAX_PROBE_STEPS:
                    return timer.seconds_per_step()
            if steps == before:
                break  # an epoch without a batch
        return timer.seconds_per_step()


def train_payload(payload: BatchPayload, device: str = "cpu") -> Iterator[WorkerRecord]:
    """Train a worker's batch (``study.driver.runner.payload``): its cells sharing optimizer and seed as
    populations, each record tagged with its cell's ``key``. A crash in a cell's training fails that cell
    (:func:`train_cells`); one outside it (building the task, say) fails the group's unfinished cells, and the
    worker goes on with the next group; a resource fault (:func:`resource_fault`) ends the batch with a
    ``ResourceFault``."""
    plugins.install(payload.plugins)
    groups: dict[tuple[str, int], list] = {}
    for cell in payload.cells:
        groups.setdefault((cell.optimizer, cell.seed), []).append(cell)
    for (optimizer, seed), cells in groups.items():
        finished: set[int] = set()
        try:
            for index, record in train_cells(payload.task, optimizer, seed, [c.hparams for c in cells],
                                             payload.protocol, device, payload.population, payload.halvings,
                                             task_blocker(payload)):
                if isinstance(record, (CellResult, CellFailure)):
                    finished.add(index)
                yield dataclasses.replace(record, key=cells[index].key)
        except Exception as exc:  # a crashed trial is a result to record, not a reason to lose the worker
            if resource_fault(exc):  # not the cell's doing: it runs again on a fresh worker, this one goes
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                yield ResourceFault(next(c.key for i, c in enumerate(cells) if i not in finished),
                                    f"{type(exc).__name__}: {first}")
                return
            failure = _crashed(exc, device)
            for index, cell in enumerate(cells):
                if index not in finished:
                    yield dataclasses.replace(failure, key=cell.key)


def task_blocker(payload: BatchPayload) -> str | None:
    """Why the batch's task cannot train as a population, as its plugin record says (``adamscape check``
    found it out); None for a built-in task or one that can."""
    record = payload.plugins.get(payload.task)
    return record.populations if isinstance(record, TaskPlugin) else None


def _crashed(exc: Exception, device: str) -> CellFailure:
    """A crashed trial as its cell's failure (the traceback, the device), to record; a resource fault (out of
    device memory, a CUDA error) is not the cell's doing and goes on up, to end the worker's batch."""
    if resource_fault(exc):
        raise exc
    return CellFailure(None, traceback.format_exc(limit=8), device_label(device))


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

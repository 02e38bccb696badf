"""The thin ``torch.optim.Optimizer`` shell every adamscape optimizer shares.

Contract for subclasses:

* ``buffers`` names the per-parameter state tensors; ``buffer_names(group)`` may
  add group-dependent ones (AMSGrad's running max). Each starts as zeros shaped
  like its parameter unless ``initial_buffer`` says otherwise (Adagrad).
* ``kernel(params, grads, buffers, step, group)`` is a pure function of its
  arguments that updates ``params`` and the buffer lists in place with the
  multi-tensor pieces of :mod:`optimizers.pieces`. ``step`` is the 1-based step
  count shared by every tensor in the call; ``group`` holds the
  hyperparameters, each a number or a tensor with a leading config dimension
  (see :mod:`optimizers.pieces`).

Optimizers with a mode (the one hook adamscape calls around evaluation). An optimizer that
evaluates at another point than it takes gradients at (Schedule-Free AdamW,
:mod:`optimizers.schedulefree`) says so by having two methods, ``train()`` and ``eval()``, as
``schedulefree.AdamWScheduleFree`` has: ``eval()`` sets the parameters to the point to evaluate,
``train()`` back to the point to train at; each is a no-op in the mode it names. Any optimizer,
registered or a study's own, built on this shell or not, is found by :func:`has_mode`; adamscape's
training loop, its populations, ``adamscape check`` and the conformance suite call
:func:`train_mode` once after building it and wrap every evaluation in :func:`evaluating` (``eval()``
before, ``train()`` after, also when the evaluation raises). An optimizer without the two methods is
left as it is.

The shell gathers each group's parameters that have a gradient, buckets them by
(step, device, dtype) so foreach ops see homogeneous lists (a parameter whose
gradient was ``None`` on some steps has fallen behind), and calls the kernel.
:meth:`KernelOptimizer.compile` swaps in a ``torch.compile``-fused kernel.

Cache-sized slices (CPU, eager). Each foreach op is one pass over every tensor of its list; on a CPU
a kernel of eight ops over ResNet-18's 11.7 M parameters streams 8 × 47 MB through memory, and its
temporaries (``sqrt(v)`` …) are fresh 47 MB allocations each step, page-faulted anew. A kernel that
says it is ``elementwise`` (every buffer shaped like its parameter, no reduction over a tensor, nothing
per tensor but elementwise arithmetic) is instead called once per *slice*: ``pieces.SLICE_BYTES`` of each
list (whole small tensors packed together, large ones cut into flat views of their storage), so all of
the kernel's passes over a slice run in the core's L2 cache and its temporaries are small and reused.
An elementwise op gives each element the same value whichever slice it is in, so this changes no
result (a test checks sliced against whole lists); parameters, gradients and buffers stay the tensors
they are (views write into them). Populations (a (K,) hyperparameter broadcasts along a leading
dimension that slicing would cut), CUDA (one launch per list is what foreach is for there) and the
compiled kernel take the whole lists.

torch wraps ``Optimizer.add_param_group``, ``zero_grad``, ``state_dict`` and
``load_state_dict`` in ``torch._disable_dynamo``, which imports ``torch._dynamo``
(1–2 s) on its first call: every fresh worker paid it in its first cell. The
shell calls the undecorated methods while ``torch._dynamo`` has not been imported
(then nothing can be tracing, and the guard is a no-op) and torch's guarded ones
once it has (a ``torch.compile`` anywhere in the process).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Self

import torch
from torch import Tensor

from optimizers.pieces import cache_sized_slices, slices_pay

Kernel = Callable[[list[Tensor], list[Tensor], dict[str, list[Tensor]], int, dict[str, Any]], None]

def has_mode(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` has a mode: callable ``train()`` and ``eval()`` methods (torch's own have neither)."""
    return callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None))


def train_mode(optimizer: torch.optim.Optimizer) -> None:
    """Put an optimizer with a mode in train mode (``optimizer.train()``), as before its first step; any
    other optimizer is left alone."""
    if has_mode(optimizer):
        optimizer.train()


@contextlib.contextmanager
def evaluating(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Around an evaluation: an optimizer with a mode in eval mode (its parameters at the point to
    evaluate), and back in train mode afterwards, also when the evaluation raises; nothing for any other."""
    if not has_mode(optimizer):
        yield
        return
    optimizer.eval()
    try:
        yield
    finally:
        optimizer.train()


def _unless_dynamo(guarded: Callable) -> Callable:
    """``guarded`` (a ``torch._disable_dynamo``-wrapped ``Optimizer`` method) without its first-call import of
    ``torch._dynamo`` while that module is not loaded: no frame can be under ``torch.compile`` then, so the
    undecorated method does exactly the same. Once it is loaded, ``guarded`` itself."""
    plain = getattr(guarded, "__wrapped__", guarded)

    @functools.wraps(plain)
    def method(self, *args: Any, **kwargs: Any) -> Any:
        return (plain if sys.modules.get("torch._dynamo") is None else guarded)(self, *args, **kwargs)

    return method


class KernelOptimizer(torch.optim.Optimizer):
    buffers: ClassVar[tuple[str, ...]] = ()
    elementwise: ClassVar[bool] = False  # the kernel may run on cache-sized slices (module docstring)
    _compiled: Kernel | None = None

    add_param_group = _unless_dynamo(torch.optim.Optimizer.add_param_group)
    zero_grad = _unless_dynamo(torch.optim.Optimizer.zero_grad)
    state_dict = _unless_dynamo(torch.optim.Optimizer.state_dict)
    load_state_dict = _unless_dynamo(torch.optim.Optimizer.load_state_dict)

    @staticmethod
    def kernel(params, grads, buffers, step, group) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def buffer_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return self.buffers

    def initial_buffer(self, name: str, param: Tensor, group: dict[str, Any]) -> Tensor:
        return torch.zeros_like(param, memory_format=torch.preserve_format)

    def compile(self, **options: Any) -> Self:
        """Fuse the kernel with ``torch.compile`` (``options`` go to it); returns the optimizer.

        Hyperparameters reach the compiled kernel as 0-d tensors, so an lr
        schedule does not recompile it; their arithmetic then runs in the
        parameters' dtype, at least float32. The first steps pay the compilation
        (tens of seconds for a ResNet's parameter list on CPU).
        """
        self._compiled = torch.compile(self.kernel, **options)
        self._device_hyper: dict[tuple, dict[str, list]] = {}
        return self

    def _as_tensors(self, group: dict[str, Any], hyper: dict[str, Any], like: Tensor) -> dict[str, Any]:
        """``hyper`` with its numbers as 0-d tensors on ``like``'s device, in its dtype but at least float32
        (as torch's capturable optimizers); flags and tensors stay as they are. The 0-d tensors persist
        across steps and are refilled in place only when a number changes (a scheduler's new lr): no new
        device tensor and no host-to-device copy per step, the same inputs for a captured graph."""
        dtype = torch.promote_types(like.dtype, torch.float32)
        kept = self._device_hyper.setdefault((id(group), like.device, dtype), {})
        shown = {}
        for key, value in hyper.items():
            if key == "params":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                shown[key] = value
                continue
            entry = kept.get(key)
            if entry is None:
                entry = kept[key] = [torch.tensor(value, dtype=dtype, device=like.device), value]
            elif entry[1] != value:
                entry[0].fill_(value)
                entry[1] = value
            shown[key] = entry[0]
        return shown

    def _sliced(self, device: torch.device, hyper: dict[str, Any], params: list[Tensor]) -> bool:
        """Whether this bucket's eager kernel runs slice by slice: an elementwise kernel, on a CPU, no
        population, and more than one slice's worth of parameters."""
        return self.elementwise and slices_pay(params, hyper)

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state: dict[str, Any] = {"step": 0}
        for name in self.buffer_names(group):
            state[name] = self.initial_buffer(name, param, group)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            buckets: dict[tuple, list[Tensor]] = defaultdict(list)
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[param]
                if not state:
                    state.update(self._init_state(param, group))
                state["step"] += 1
                buckets[(state["step"], param.device, param.dtype)].append(param)
            devices = {device for _, device, _ in buckets}
            for (step, device, _), params in buckets.items():
                buffers = {name: [self.state[p][name] for p in params] for name in self.buffer_names(group)}
                grads = [p.grad for p in params]
                hyper = _on_device(group, device, in_place=len(devices) == 1)
                if self._compiled is None and self._sliced(device, hyper, params):
                    names = list(buffers)
                    for cut in cache_sized_slices([params, grads, *buffers.values()]):
                        self.kernel(cut[0], cut[1], dict(zip(names, cut[2:])), step, hyper)
                elif self._compiled is None:
                    self.kernel(params, grads, buffers, step, hyper)
                else:
                    self._compiled(params, grads, buffers, step, self._as_tensors(group, hyper, params[0]))
        return loss


def _on_device(group: dict[str, Any], device: torch.device, in_place: bool) -> dict[str, Any]:
    """The group with its tensor hyperparameters (a population's (K,) values) on ``device``. A group whose
    parameters share one device keeps them there (moved once, then updated in place by whoever changes
    them); a group spread over devices gets a copy per device and step."""
    moved = {key: value.to(device) for key, value in group.items()
             if key != "params" and isinstance(value, Tensor) and value.device != device}
    if in_place:
        group.update(moved)
        return group
    return {**group, **moved} if moved else group

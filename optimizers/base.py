"""The thin ``torch.optim.Optimizer`` shell every adamscape optimizer shares.

Contract for subclasses:

* ``buffers`` names the per-parameter state tensors; each starts as zeros shaped
  like its parameter. ``buffer_names(group)`` may add group-dependent ones
  (AMSGrad's running max).
* ``kernel(params, grads, buffers, step, group)`` is a pure function of its
  arguments that updates ``params`` and the buffer lists in place with
  ``torch._foreach_*`` ops. ``step`` is the 1-based step count shared by every
  tensor in the call; ``group`` is the parameter group (hyperparameters).

The shell gathers each group's parameters that have a gradient, buckets them by
(step, device, dtype) so foreach ops see homogeneous lists (a parameter whose
gradient was ``None`` on some steps has fallen behind), and calls the kernel.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

Kernel = Callable[[list[Tensor], list[Tensor], dict[str, list[Tensor]], int, dict[str, Any]], None]


class KernelOptimizer(torch.optim.Optimizer):
    buffers: ClassVar[tuple[str, ...]] = ()

    @staticmethod
    def kernel(params, grads, buffers, step, group) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def buffer_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return self.buffers

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state: dict[str, Any] = {"step": 0}
        for name in self.buffer_names(group):
            state[name] = torch.zeros_like(param, memory_format=torch.preserve_format)
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
            for (step, _, _), params in buckets.items():
                buffers = {name: [self.state[p][name] for p in params] for name in self.buffer_names(group)}
                self.kernel(params, [p.grad for p in params], buffers, step, group)
        return loss

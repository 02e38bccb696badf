"""The worker actor: a long-lived Ray actor that trains one batch of cells at a time and streams each
epoch back (it never opens the database)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import ray

from study.protocol import BatchPayload, DeviceInfo, WarmUp, WorkerRecord


@ray.remote
class CellWorker:
    """One training process; its imports and datasets stay warm across cells."""

    def __init__(self, threads: int, warm: WarmUp | BatchPayload | None = None, gpu_share: float = 0.0):
        """``warm``: the study's task under its protocol (:class:`~study.protocol.WarmUp`), built once here
        (imports, dataset), while the driver is still setting up, so the first cells do not pay for it; or a
        whole batch, trained once and discarded (a service, which has no study yet). ``gpu_share``: the
        fraction of a GPU Ray gave this worker (``--gpus-per-trial``); below 1 it also caps the worker's GPU
        memory, so the workers sharing a GPU cannot starve each other."""
        import torch

        from study import plugins
        from workers import population, tasks, training

        # before CUDA starts (cuBLAS reads it then): the workspace a `deterministic = true` study needs;
        # no smaller than torch's default cuBLAS workspace, so the other studies lose nothing
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", training.CUBLAS_DETERMINISTIC)
        torch.set_num_threads(threads)
        self.device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        if self.device == "cuda":
            torch.backends.cudnn.benchmark = True  # every batch of a task has one shape: pick the fastest kernels
            if 0 < gpu_share < 1:
                torch.cuda.set_per_process_memory_fraction(gpu_share)
        try:
            match warm:
                case BatchPayload():  # a service's workers: one tiny pass warms the training code itself
                    for _ in population.train_payload(warm, self.device):
                        pass
                case WarmUp():
                    plugins.install(warm.plugins)
                    tasks.build(warm.task, population.plan_of(warm.protocol), self.device)
                    self._first_calls()
        except Exception:  # a missing dataset, say: the cells report it, one by one, as their error
            pass

    def _first_calls(self) -> None:
        """What a process's first population step pays whatever the task, paid while the worker starts:
        the first vmapped cross-entropy (its decomposition imports torch.fx's symbolic shapes and sympy,
        ~0.3 s, 3/4 of what a first digits cell cost more than the second), the first matmul and backward
        on the device, the batched optimizer kernel. Zeros only: no random number is drawn."""
        import torch
        from torch.func import vmap

        import optimizers

        weight = torch.zeros(2, 3, 4, device=self.device, requires_grad=True)  # 2 configs of a 3→4 linear
        inputs = torch.zeros(1, 3, device=self.device)
        targets = torch.zeros(1, dtype=torch.long, device=self.device)
        losses = vmap(lambda w: torch.nn.functional.cross_entropy(inputs @ w, targets))(weight)
        opt = optimizers.create("adam", [weight], lr=torch.tensor([1e-3, 1e-2], device=self.device))
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()

    def node(self) -> str:
        """The Ray node this actor runs on (answered once it is up)."""
        return ray.get_runtime_context().get_node_id()

    def describe(self) -> DeviceInfo:
        """What this worker trains on: its device, and for a GPU share the GPU's name, compute capability,
        memory, torch and CUDA versions; ``problem``: why a GPU share cannot be used here (None if it can)."""
        import torch

        found = DeviceInfo(self.device, torch.__version__, torch.version.cuda,
                           tuple(str(g) for g in ray.get_gpu_ids()))
        if not found.gpu_ids:
            return found
        if self.device != "cuda":
            return dataclasses.replace(found, problem=(
                f"Ray gave this worker a GPU share but torch {torch.__version__} (CUDA {torch.version.cuda}) finds "
                "no usable CUDA device (an NVIDIA driver too old for this CUDA, or none)"))
        major, minor = torch.cuda.get_device_capability()
        name, capability = torch.cuda.get_device_name(), f"sm_{major}{minor}"
        problem = None
        if capability not in torch.cuda.get_arch_list():
            problem = (f"{name} ({capability}) is not among the architectures this torch build has kernels for "
                       f"({', '.join(torch.cuda.get_arch_list())})")
        return dataclasses.replace(found, gpu=name, capability=capability, problem=problem,
                                   memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
                                   memory_fraction=torch.cuda.get_per_process_memory_fraction())

    def train(self, payload: BatchPayload) -> Iterator[WorkerRecord]:
        from workers.population import train_payload

        yield from train_payload(payload, self.device)

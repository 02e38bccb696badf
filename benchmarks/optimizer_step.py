"""Milliseconds per optimizer step on ResNet-18's parameters (11.7 M in 62 tensors), side by side.

Every registered optimizer (eager foreach kernel, and fused with ``torch.compile``) against
torch's Adam (fused, foreach, single-tensor) and the authors' reference packages.
Contenders run round-robin so machine noise hits them alike; the median round counts.

    uv run --extra test python benchmarks/optimizer_step.py [--device cuda] [--rounds 7] [--no-compile]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

import optimizers

warnings.filterwarnings("ignore")  # the reference packages use deprecated torch signatures


def _resnet18_params(device: str) -> list[torch.Tensor]:
    model = torchvision.models.resnet18().to(device)
    params = [p for p in model.parameters()]
    gen = torch.Generator(device).manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, device=device) * 1e-2
    return params


def _references() -> dict[str, Callable]:
    import adabelief_pytorch
    import adabound
    import adamod

    return {
        "torch Adam fused": lambda p: torch.optim.Adam(p, fused=True),
        "torch Adam foreach": lambda p: torch.optim.Adam(p, foreach=True),
        "torch Adam single-tensor": lambda p: torch.optim.Adam(p, foreach=False),
        "adabound 0.0.5 AdaBound": lambda p: adabound.AdaBound(p),
        "adabound 0.0.5 AMSBound": lambda p: adabound.AdaBound(p, amsbound=True),
        "adamod 0.0.3 AdaMod": lambda p: adamod.AdaMod(p),
        "adabelief-pytorch 0.2.1": lambda p: adabelief_pytorch.AdaBelief(p, print_change_log=False),
    }


def _contenders(compile_: bool) -> dict[str, Callable]:
    ours = {f"adamscape {name}": (lambda p, n=name: optimizers.create(n, p)) for name in optimizers.names()}
    if compile_:
        ours |= {f"adamscape {name} compiled": (lambda p, n=name: optimizers.create(n, p).compile())
                 for name in optimizers.names()}
    return _references() | ours


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(device: str, rounds: int, steps: int, compile_: bool) -> list[dict]:
    contenders = _contenders(compile_)
    setups, timings = {}, {name: [] for name in contenders}
    for name, make in contenders.items():  # warm up: allocate state, compile
        params = _resnet18_params(device)
        optimizer = make(params)
        start = time.perf_counter()
        for _ in range(3):
            optimizer.step()
        _sync(device)
        setups[name] = (optimizer, time.perf_counter() - start)
        print(f"  warmed up {name} ({setups[name][1]:.1f} s)", flush=True)
    for _ in range(rounds):
        for name, (optimizer, _) in setups.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                optimizer.step()
            _sync(device)
            timings[name].append((time.perf_counter() - start) / steps * 1e3)
    medians = {name: statistics.median(ms) for name, ms in timings.items()}
    return [{"optimizer": name, "ms_per_step": ms, "vs_torch_fused_adam": ms / medians["torch Adam fused"],
             "warmup_seconds": setups[name][1]} for name, ms in medians.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants (slow to build)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    rows = measure(args.device, args.rounds, args.steps, not args.no_compile)
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or 'cpu'}, " \
                                                                        f"{torch.get_num_threads()} threads"
    print(f"\nms per step, ResNet-18 parameters, {device}, torch {torch.__version__}")
    print(f"{'optimizer':<36}{'ms/step':>10}{'× fused Adam':>14}{'warm-up s':>11}")
    for row in rows:
        print(f"{row['optimizer']:<36}{row['ms_per_step']:>10.2f}{row['vs_torch_fused_adam']:>14.2f}"
              f"{row['warmup_seconds']:>11.1f}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"optimizer_step-{args.device}.json"
    path.write_text(json.dumps({"device": device, "torch": torch.__version__, "rounds": args.rounds,
                                "steps_per_round": args.steps, "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

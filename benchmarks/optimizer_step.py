"""Milliseconds per optimizer step on ResNet-18's parameters (11.7 M in 62 tensors), side by side.

Every registered optimizer (its eager kernel, and fused with ``torch.compile``) against torch's Adam
(fused, foreach, single-tensor) and each member's reference implementation where one is installed:
torch.optim for torch's own algorithms (its default, foreach, implementation), the authors' packages
(adabound, adamod, adabelief-pytorch, schedulefree, lion-pytorch, adam-mini) and pytorch-optimizer's
ADOPT, AdEMAMix and LaProp (the authors of those publish no package). Contenders run round-robin so
machine noise hits them alike; the median round counts. Gradients are one set of random tensors shared
by every contender (it only reads them); each contender has its own parameters and state.

    uv run --extra test python benchmarks/optimizer_step.py [--device cuda] [--rounds 7] [--no-compile]
        [--only adam,adabound] [--threads 2]
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

FUSED_ADAM = "torch Adam fused"


def _resnet18_named(device: str, grads: list[torch.Tensor] | None) -> list[tuple[str, torch.Tensor]]:
    """ResNet-18's parameters (fresh, own storage) with the shared gradients attached."""
    named = list(torchvision.models.resnet18().to(device).named_parameters())
    for (_, p), g in zip(named, grads or _gradients(named, device)):
        p.grad = g
    return named


def _gradients(named, device: str) -> list[torch.Tensor]:
    gen = torch.Generator(device).manual_seed(0)
    return [torch.randn(p.shape, generator=gen, device=device) * 1e-2 for _, p in named]


def _torch(name: str, **options) -> Callable:
    return lambda named: getattr(torch.optim, name)([p for _, p in named], **options)


def _plain(make: Callable) -> Callable:
    return lambda named: make([p for _, p in named])


def _references() -> dict[str, tuple[str | None, Callable]]:
    """name → (the member it is the reference of, or None for torch's Adam variants; constructor)."""
    refs: dict[str, tuple[str | None, Callable]] = {
        FUSED_ADAM: (None, _torch("Adam", fused=True)),
        "torch Adam foreach": ("adam", _torch("Adam", foreach=True)),
        "torch Adam single-tensor": (None, _torch("Adam", foreach=False)),
        "torch AdamW foreach": ("adamw", _torch("AdamW", foreach=True)),
        "torch Adam(amsgrad) foreach": ("amsgrad", _torch("Adam", amsgrad=True, foreach=True)),
        "torch Adamax foreach": ("adamax", _torch("Adamax", foreach=True)),
        "torch NAdam foreach": ("nadam", _torch("NAdam", foreach=True)),
        "torch RAdam foreach": ("radam", _torch("RAdam", foreach=True)),
        "torch SGD(momentum) foreach": ("sgdm", _torch("SGD", lr=0.1, momentum=0.9, foreach=True)),
        "torch Adagrad foreach": ("adagrad", _torch("Adagrad", foreach=True)),
        "torch RMSprop foreach": ("rmsprop", _torch("RMSprop", foreach=True)),
    }
    optional: dict[str, tuple[str, str, Callable]] = {
        "adabound 0.0.5 AdaBound": ("adabound", "adabound", lambda m: _plain(m.AdaBound)),
        "adabound 0.0.5 AMSBound": ("amsbound", "adabound", lambda m: _plain(lambda p: m.AdaBound(p, amsbound=True))),
        "adamod 0.0.3 AdaMod": ("adamod", "adamod", lambda m: _plain(m.AdaMod)),
        "adabelief-pytorch 0.2.1": ("adabelief", "adabelief_pytorch",
                                    lambda m: _plain(lambda p: m.AdaBelief(p, print_change_log=False))),
        "schedulefree 1.4.1 AdamWScheduleFree": ("adamw-schedulefree", "schedulefree", lambda m: _plain(_schedulefree(m))),
        "lion-pytorch 0.2.5 Lion": ("lion", "lion_pytorch", lambda m: _plain(m.Lion)),
        "adam-mini 1.1.1 Adam_mini": ("adam-mini", "adam_mini",
                                      lambda m: lambda named: m.Adam_mini(named, verbose=False)),
        "pytorch-optimizer 4.1.0 ADOPT": ("adopt", "pytorch_optimizer", lambda m: _plain(m.ADOPT)),
        "pytorch-optimizer 4.1.0 AdEMAMix": ("ademamix", "pytorch_optimizer", lambda m: _plain(m.AdEMAMix)),
        "pytorch-optimizer 4.1.0 LaProp": ("laprop", "pytorch_optimizer", lambda m: _plain(m.LaProp)),
    }
    for name, (member, module, make) in optional.items():
        try:
            refs[name] = (member, make(__import__(module)))
        except ImportError:
            print(f"  ({module} not installed: no {name})")
    return refs


def _schedulefree(module) -> Callable:
    def make(params):
        optimizer = module.AdamWScheduleFree(params)
        optimizer.train()
        return optimizer
    return make


def _ours(name: str, compiled: bool) -> Callable:
    def make(named):
        optimizer = optimizers.create(name, [p for _, p in named])
        optimizers.base.train_mode(optimizer)
        return optimizer.compile() if compiled else optimizer
    return make


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(device: str, rounds: int, steps: int, compile_: bool, only: list[str], references: bool) -> list[dict]:
    import optimizers.base  # noqa: F401  (train_mode)

    refs = _references() if references else {FUSED_ADAM: (None, _torch("Adam", fused=True))}
    contenders: dict[str, tuple[str | None, str, Callable]] = {
        name: (member, "reference", make) for name, (member, make) in refs.items()
        if member is None or member in only}
    for member in only:
        contenders[f"adamscape {member}"] = (member, "eager", _ours(member, False))
    if compile_:
        for member in only:
            contenders[f"adamscape {member} compiled"] = (member, "compiled", _ours(member, True))
    grads = _gradients(torchvision.models.resnet18().to(device).named_parameters(), device)
    setups, timings = {}, {name: [] for name in contenders}
    for name, (member, kind, make) in contenders.items():  # warm up: allocate state, compile
        optimizer = make(_resnet18_named(device, grads))
        start = time.perf_counter()
        for _ in range(3):
            optimizer.step()
        _sync(device)
        setups[name] = (optimizer, time.perf_counter() - start)
        print(f"  warmed up {name} ({setups[name][1]:.1f} s)", flush=True)
    for index in range(rounds):
        for name, (optimizer, _) in setups.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                optimizer.step()
            _sync(device)
            timings[name].append((time.perf_counter() - start) / steps * 1e3)
        print(f"  round {index + 1}/{rounds} done", flush=True)
    medians = {name: statistics.median(ms) for name, ms in timings.items()}
    return [{"optimizer": name, "member": contenders[name][0], "kind": contenders[name][1],
             "ms_per_step": ms, "min_ms_per_step": min(timings[name]), "rounds_ms": timings[name],
             "vs_torch_fused_adam": ms / medians[FUSED_ADAM], "warmup_seconds": setups[name][1]}
            for name, ms in medians.items()]


def summary(rows: list[dict], only: list[str]) -> list[dict]:
    """One line per member: eager and compiled ms, each ÷ torch's fused Adam, and reference ÷ ours."""
    fused = next(r["ms_per_step"] for r in rows if r["optimizer"] == FUSED_ADAM)
    table = []
    for member in only:
        mine = {r["kind"]: r for r in rows if r["member"] == member}
        line: dict = {"member": member}
        for kind in ("eager", "compiled"):
            if kind in mine:
                line[f"{kind}_ms"] = mine[kind]["ms_per_step"]
                line[f"{kind}_vs_fused_adam"] = mine[kind]["ms_per_step"] / fused
        if "reference" in mine:
            ref = mine["reference"]
            line["reference"] = ref["optimizer"]
            line["reference_ms"] = ref["ms_per_step"]
            for kind in ("eager", "compiled"):
                if kind in mine:
                    line[f"reference_over_{kind}"] = ref["ms_per_step"] / mine[kind]["ms_per_step"]
        table.append(line)
    return table


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants (slow to build)")
    parser.add_argument("--no-references", action="store_true", help="only torch's fused Adam beside ours")
    parser.add_argument("--only", default="", help="comma-separated registered names (default: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    only = [n for n in args.only.split(",") if n] or optimizers.names()
    started = time.perf_counter()
    rows = measure(args.device, args.rounds, args.steps, not args.no_compile, only, not args.no_references)
    table = summary(rows, only)
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or 'cpu'}, " \
                                                                        f"{torch.get_num_threads()} threads"
    print(f"\nms per step (median of {args.rounds} rounds of {args.steps}), ResNet-18 parameters, {device}, "
          f"torch {torch.__version__}")
    print(f"{'contender':<42}{'ms/step':>10}{'min':>9}{'× fused Adam':>14}{'warm-up s':>11}")
    for row in rows:
        print(f"{row['optimizer']:<42}{row['ms_per_step']:>10.2f}{row['min_ms_per_step']:>9.2f}"
              f"{row['vs_torch_fused_adam']:>14.2f}{row['warmup_seconds']:>11.1f}")
    print(f"\n{'member':<20}{'eager ms':>10}{'÷ fused':>9}{'compiled ms':>13}{'÷ fused':>9}"
          f"{'ref ÷ eager':>12}{'ref ÷ compiled':>15}  reference")
    for line in table:
        print(f"{line['member']:<20}{_fmt(line.get('eager_ms'), '.2f'):>10}"
              f"{_fmt(line.get('eager_vs_fused_adam'), '.2f'):>9}{_fmt(line.get('compiled_ms'), '.2f'):>13}"
              f"{_fmt(line.get('compiled_vs_fused_adam'), '.2f'):>9}"
              f"{_fmt(line.get('reference_over_eager'), '.2f'):>12}{_fmt(line.get('reference_over_compiled'), '.2f'):>15}"
              f"  {line.get('reference', '')}")
    elapsed = time.perf_counter() - started
    print(f"\n{elapsed:.0f} s in all")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"optimizer_step-{args.device}.json"
    path.write_text(json.dumps({"device": device, "torch": torch.__version__, "rounds": args.rounds,
                                "steps_per_round": args.steps, "compiled": not args.no_compile,
                                "seconds": elapsed, "summary": table, "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

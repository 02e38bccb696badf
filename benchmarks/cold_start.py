"""Each piece of a cold ``adamscape run`` (before its first cell, and after its last), measured separately.

Every piece runs in a fresh interpreter (what a cold start gets), interleaved round by round (R rounds,
default 3) so that machine noise hits all of them alike; the table gives each one's median, fastest and
slowest. The pieces:

  python -c pass                the interpreter alone
  import study.cli              the CLI's own start (python + its imports; no torch, no Ray)
  import torch                  what each worker process pays first
  import torch._dynamo          torch's compiler, on top of torch: what a worker's first
                                ``torch.optim.Optimizer`` paid before issue 22 (``optimizers/base.py``)
  first optimizer step          digits-mlp's parameters (64-128-10), adam: create + zero_grad + step, in a
                                fresh process after ``import torch, optimizers``; as is (torch._dynamo stays
                                unloaded), and with torch's dynamo-guarded ``Optimizer`` methods put back (the
                                code before issue 22: its first ``add_param_group`` imports torch._dynamo)
  cell 1st / 2nd                ``workers.population.train_payload`` of a digits-mlp payload of two adam
                                cells (lr 1e-3, 1e-2; 3 epochs, batch 64; ``population = 2``: one population, not
                                the timed auto choice), once and again, in
                                a fresh process with torch at one thread, after the imports a worker has:
                                  before issue 22   torch's guarded Optimizer methods, no start-up warm-up
                                  no warm-up        as is, without CellWorker's start-up warm-up
                                  warm-up           as a worker of ``adamscape run``: the task built and
                                                    ``CellWorker._first_calls`` run first (timed apart)
  Ray session                   one process: ``import ray`` (with ``workers.pool``), ``connect(None)``
                                (``ray.init(address="local", include_dashboard=False, …)``, as ``run``), an
                                actor's start to its first answer (a bare one; one whose ``__init__`` imports
                                torch), two ``CellWorker`` actors started together as ``run --workers 2``
                                does (``warm`` = the task and protocol) to both first answers, each one's
                                first and second cell through Ray (the payload above), ``ray.shutdown()``.
                                Its Ray runs in its own RAY_TMPDIR (removed afterwards): it never touches
                                another Ray on the machine (no ``ray stop``).

    .venv/bin/python benchmarks/cold_start.py [--rounds 3]

Prints a table and writes ``benchmarks/results/cold_start.json`` (every run's figures). The three cell
variants must train the very same numbers; a round where they do not (the checkout edited under it, say)
is named on stderr and in the JSON (``mismatched_rounds``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The code before issue 22: KernelOptimizer inherited torch's dynamo-guarded methods (each one's first call
# imports torch._dynamo); removing the overrides of optimizers/base.py puts them back.
BEFORE_22 = textwrap.dedent("""
    from optimizers.base import KernelOptimizer
    for _name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict"):
        delattr(KernelOptimizer, _name)
""")

PAYLOAD = textwrap.dedent("""
    from study.protocol import BatchPayload, CellFailure, CellPayload, CellResult, WarmUp
    from study.spec import StudySpec

    def digits_payload():
        spec = StudySpec.model_validate({"name": "cold", "task": "digits-mlp", "epochs": 3, "batch_size": 64,
                                         "seeds": [0], "optimizers": {"adam": {"lr": [1e-3, 1e-2]}}})
        return BatchPayload(spec.task, spec.protocol(), tuple(CellPayload(k, "adam", 0, {"lr": lr})
                                                              for k, lr in enumerate((1e-3, 1e-2))), population=2)
""")

STEP = textwrap.dedent("""
    import json, sys, time
    import torch
    import optimizers
    BEFORE
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    model(torch.randn(64, 64)).square().mean().backward()
    start = time.perf_counter()
    opt = optimizers.create("adam", model.parameters(), lr=1e-3)
    opt.zero_grad(set_to_none=False)
    opt.step()
    print(json.dumps({"seconds": time.perf_counter() - start, "dynamo": "torch._dynamo" in sys.modules}))
""")

CELLS = textwrap.dedent("""
    import json, sys, time
    import torch
    torch.set_num_threads(1)
    from workers import pool as executor
    from workers import population, tasks
    BEFORE
    PAYLOAD
    payload = digits_payload()
    warm = None
    if WARM:  # what CellWorker.__init__ does for `adamscape run` (warm = the study's task and protocol)
        start = time.perf_counter()
        tasks.build(payload.task, population.plan_of(payload.protocol), "cpu")
        cls = executor.CellWorker.__ray_metadata__.modified_class
        worker = cls.__new__(cls)
        worker.device = "cpu"
        worker._first_calls()
        warm = time.perf_counter() - start
    times, finals = [], []
    for _ in range(2):
        start = time.perf_counter()
        records = list(population.train_payload(payload))
        times.append(time.perf_counter() - start)
        finals.append([r.final for r in records if isinstance(r, CellResult)])
    assert finals[0] == finals[1], finals
    print(json.dumps({"first": times[0], "second": times[1], "warm_up": warm, "finals": finals[0],
                      "dynamo": "torch._dynamo" in sys.modules}))
""")

RAY_SESSION = textwrap.dedent("""
    import json, os, sys, time
    PAYLOAD
    out = {}
    start = time.perf_counter()
    import ray
    from workers import pool as executor
    out["import ray"] = time.perf_counter() - start

    @ray.remote(num_cpus=1)
    class Bare:
        def ping(self):
            return os.getpid()

    @ray.remote(num_cpus=1)
    class WithTorch:
        def __init__(self):
            import torch  # noqa: F401

        def ping(self):
            return os.getpid()

    def streamed(actor, payload):
        start = time.perf_counter()
        records = [ray.get(ref) for ref in actor.train.options(num_returns="streaming").remote(payload)]
        assert not [r for r in records if isinstance(r, CellFailure)], records
        return time.perf_counter() - start

    start = time.perf_counter()
    executor.connect(None)
    out["ray.init (local)"] = time.perf_counter() - start
    try:
        for name, cls in (("actor start, bare", Bare), ("actor start, import torch", WithTorch)):
            start = time.perf_counter()
            actor = cls.remote()
            ray.get(actor.ping.remote())
            out[name] = time.perf_counter() - start
            ray.kill(actor)
        payload = digits_payload()
        warm = WarmUp(payload.task, payload.protocol)
        start = time.perf_counter()
        workers = [executor.CellWorker.options(num_cpus=1, max_restarts=0).remote(1, warm, 0.0) for _ in range(2)]
        ray.get([w.node.remote() for w in workers])
        out["2 CellWorkers start"] = time.perf_counter() - start
        firsts = [streamed(w, payload) for w in workers]
        seconds = [streamed(w, payload) for w in workers]
        out["CellWorker cell 1st (Ray)"] = sum(firsts) / 2
        out["CellWorker cell 2nd (Ray)"] = sum(seconds) / 2
        for w in workers:
            ray.kill(w)
    finally:
        start = time.perf_counter()
        ray.shutdown()
        out["ray.shutdown"] = time.perf_counter() - start
    print(json.dumps(out))
""")


def script(template: str, before: bool = False, warm: bool = False) -> str:
    return (template.replace("BEFORE\n", BEFORE_22 if before else "").replace("PAYLOAD\n", PAYLOAD)
            .replace("WARM", repr(warm)))


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, dict]:
    """Wall time of a fresh interpreter running ``argv``, and the JSON its last line printed (if any)."""
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)[:200]} exited {done.returncode}: {done.stderr[-2000:]}")
    lines = done.stdout.strip().splitlines()
    return elapsed, (json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {})


def one_round(env: dict[str, str], py: str) -> tuple[dict[str, float], bool]:
    """Every piece once, each in a fresh interpreter; ({row: seconds}, whether the cell variants agreed)."""
    row: dict[str, float] = {}
    row["python -c pass"] = timed([py, "-c", "pass"], env)[0]
    row["import study.cli (CLI start)"] = timed([py, "-c", "import study.cli"], env)[0]
    row["import torch (process)"] = timed([py, "-c", "import torch"], env)[0]
    row["import torch._dynamo (process)"] = timed([py, "-c", "import torch._dynamo"], env)[0]
    for label, before in (("as is", False), ("before issue 22", True)):
        _, got = timed([py, "-c", script(STEP, before=before)], env)
        row[f"first optimizer step, {label}{' (+dynamo)' if got['dynamo'] else ''}"] = got["seconds"]
    finals = set()
    for label, before, warm in (("before issue 22", True, False), ("no warm-up", False, False),
                                ("warm-up", False, True)):
        _, got = timed([py, "-c", script(CELLS, before=before, warm=warm)], env)
        row[f"cell 1st, {label}"] = got["first"]
        row[f"cell 2nd, {label}"] = got["second"]
        if got["warm_up"] is not None:
            row[f"CellWorker warm-up ({label})"] = got["warm_up"]
        finals.add(json.dumps(got["finals"]))
    if len(finals) != 1:
        print(f"the cell variants trained different numbers: {sorted(finals)}", file=sys.stderr)
    ray_tmp = tempfile.mkdtemp(prefix="rayc-")  # short: Ray's socket paths under it must stay < 108 bytes
    try:
        _, got = timed([py, "-c", script(RAY_SESSION)], {**env, "RAY_TMPDIR": ray_tmp})
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    row.update(got)
    return row, len(finals) == 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)  # a local Ray of the session's own, as `adamscape run` without --address
    py = sys.executable
    timed([py, "-c", "import torch, study.cli"], env)  # untimed: the page cache warm for every piece
    times: dict[str, list[float]] = {}
    mismatched = []
    for number in range(args.rounds):
        row, agreed = one_round(env, py)
        for name, seconds in row.items():
            times.setdefault(name, []).append(seconds)
        if not agreed:
            mismatched.append(number + 1)
        print(f"round {number + 1}/{args.rounds} done", file=sys.stderr)
    rows = {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "runs_s": t}
            for name, t in times.items()}
    width = max(map(len, rows))
    print(f"{'piece':<{width}} {'median':>8} {'fastest':>8} {'slowest':>8}")
    for name, row in rows.items():
        print(f"{name:<{width}} {row['median_s']:>7.3f}s {row['min_s']:>7.3f}s {row['max_s']:>7.3f}s")
    output = ROOT / "benchmarks" / "results" / "cold_start.json"
    output.write_text(json.dumps({"rounds": args.rounds, "cpus": os.cpu_count(), "python": platform.python_version(),
                                  "machine": platform.machine(), "mismatched_rounds": mismatched, "pieces": rows},
                                 indent=1) + "\n")
    print(f"wrote {output.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""A fresh worker's first cell pays no more than it must: no ``torch._dynamo`` (~1–2 s of imports) unless
something compiles, and the first-call costs a worker can pay while it starts are paid there."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter. A meta-path finder notes the stack at the first attempt to import
# torch._dynamo, so a failure names the call chain that led there.
PROBE = textwrap.dedent("""
    import json, sys, traceback

    chains = {}
    step = ["import"]

    class DynamoSpy:
        def find_spec(self, name, path=None, target=None):
            if name == "torch._dynamo" and step[0] not in chains:
                chains[step[0]] = [f"{f.filename}:{f.lineno}: {f.line}" for f in traceback.extract_stack()[:-1]
                                   if not f.filename.startswith("<frozen")][-8:]
            return None

    sys.meta_path.insert(0, DynamoSpy())
    import torch
    import optimizers
    from study.protocol import BatchPayload, CellFailure, CellPayload
    from study.spec import StudySpec
    from workers import pool as executor
    from workers import population, training

    protocol = StudySpec.model_validate({"name": "t", "task": "digits-mlp", "epochs": 1, "seeds": [0],
                                         "batch_size": 1024,  # an epoch of two steps: a first step is what counts
                                         "optimizers": {"adam": {"lr": [1e-3]}}}).protocol()
    # a worker's start-up warm-up (CellWorker.__init__): pays the first vmapped loss's imports
    step[0] = "CellWorker._first_calls"
    cls = executor.CellWorker.__ray_metadata__.modified_class
    worker = cls.__new__(cls)
    worker.device = "cpu"
    cold = "torch.fx.experimental.symbolic_shapes" not in sys.modules
    worker._first_calls()
    warmed = cold and "torch.fx.experimental.symbolic_shapes" in sys.modules

    errors = {}
    for name in optimizers.names():
        for mode in ("alone", 2, None):
            step[0] = f"{name} {mode}"
            if mode == "alone":  # workers.training.train: one config, the torch.optim shell as is
                records = list(training.train("digits-mlp", name, {}, 0, protocol))
            else:  # a worker's batch of two cells of different lr: a stacked population under vmap (2), or auto (None)
                lr = optimizers.spec(name).defaults()["lr"]
                payload = BatchPayload("digits-mlp", protocol, tuple(CellPayload(k, name, 0, {"lr": lr * f})
                                                                     for k, f in enumerate((1.0, 0.5))),
                                       population=mode)
                records = list(population.train_payload(payload))
            errors.update({f"{name} {mode}": r.error for r in records if isinstance(r, CellFailure)})
        step[0] = f"{name} state_dict"
        params = [torch.nn.Parameter(torch.ones(3))]
        opt = optimizers.create(name, params)
        params[0].grad = torch.ones(3)
        opt.step()
        opt.load_state_dict(opt.state_dict())

    report = {"chains": dict(chains), "errors": errors, "dynamo": "torch._dynamo" in sys.modules, "warmed": warmed}

    # once torch._dynamo is loaded (a torch.compile somewhere), torch's dynamo-disabled methods are used
    step[0] = "deliberate"
    import torch._dynamo
    plain = torch.optim.Optimizer.add_param_group.__wrapped__
    optimizers.create("adam", [torch.nn.Parameter(torch.ones(3))])
    report["guarded_after_import"] = getattr(plain, "__dynamo_disable", None) is not None
    print(json.dumps(report))
""")


def test_a_first_training_step_of_every_optimizer_does_not_import_torch_dynamo():
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert report["chains"] == {}, "torch._dynamo imported by:\n" + json.dumps(report["chains"], indent=1)
    assert report["dynamo"] is False
    assert report["warmed"], "CellWorker._first_calls no longer pays the first vmapped loss's imports"
    assert report["guarded_after_import"], "with torch._dynamo loaded, add_param_group must be torch's guarded one"

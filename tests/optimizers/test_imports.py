"""The CLI and the driver never import torch: ``import optimizers`` is metadata only, the rest is lazy."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Every module on the CLI / driver path; none of them may pull in torch (about 4 s).
CLI_MODULES = ["study.cli", "study.driver.runner", "study.store", "study.spec", "study.store.optuna_log", "study.protocol",
               "workers.pool"]

# Runs in a fresh interpreter. A meta-path finder notes the stack at the first attempt to import
# torch, so a failure names the import chain (file:line of each import statement) that led there.
PROBE = textwrap.dedent("""
    import json, sys, traceback

    chain = []

    class TorchSpy:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" and not chain:
                chain.extend(f"{f.filename}:{f.lineno}: {f.line}" for f in traceback.extract_stack()[:-1]
                             if not f.filename.startswith("<frozen"))
            return None

    spy = TorchSpy()
    sys.meta_path.insert(0, spy)
    for module in MODULES:
        __import__(module)
    import optimizers
    sys.meta_path.remove(spy)
    report = {"torch": "torch" in sys.modules, "chain": chain,
              "lazy": sorted(m for m in sys.modules if m.startswith("optimizers.") and m != "optimizers.hparams"),
              "defaults": optimizers.spec("adam").defaults()}

    import torch  # now the lazy attributes resolve
    report["cls_is_adam"] = optimizers.spec("adam").cls is optimizers.Adam
    from optimizers import AdaBound, KernelOptimizer, create
    report["adabound"] = optimizers.spec("adabound").cls is AdaBound
    report["all_resolve"] = all(issubclass(optimizers.spec(n).cls, KernelOptimizer) for n in optimizers.names())
    report["create"] = create is optimizers.registry.create
    print(json.dumps(report))
""")


def test_cli_path_does_not_import_torch_and_optimizer_classes_resolve_lazily():
    code = f"MODULES = {CLI_MODULES!r}\n{PROBE}"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not report["torch"], "torch was imported on the CLI path via:\n" + "\n".join(report["chain"])
    assert report["lazy"] == [], f"optimizer modules imported without being asked for: {report['lazy']}"
    assert report["defaults"]["lr"] == 1e-3
    assert report["cls_is_adam"] and report["adabound"] and report["all_resolve"] and report["create"]

"""The user's own optimizers and tasks, named in a study file (README "Your own optimizer", "Your own task").

A study file names one as ``"./path/file.py:Name"`` (a file, relative to the study file),
``"package.module:Name"`` (an importable module) or a bare name an installed package
registers under the entry-point group ``adamscape.optimizers`` / ``adamscape.tasks``.
:func:`resolve` imports each once, when the study is checked or submitted, and describes
it in a *record* (:class:`study.protocol.OptimizerPlugin` / :class:`study.protocol.TaskPlugin`, kept
as JSON in the study's stored spec): where it comes from, its identity (the file's SHA-256, or the
package's version and the hash of its sources) and what the study side needs to know (an
optimizer's hyperparameters, a task's metrics), so the driver never imports it. Workers
:func:`install` the records: on a Ray cluster the code reaches them through Ray's ``runtime_env``
(:func:`runtime_env`: a file plugin's folder, or a package's directory, as ``py_modules``), so a
worker node needs nothing installed by hand.

Plugins are code the user chose to run; adamscape runs it on every worker.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import shutil
import sys
import tempfile
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from study.errors import UserError
from study.protocol import OptimizerPlugin, PluginCode, PluginRecord, TaskPlugin

OPTIMIZER_GROUP, TASK_GROUP = "adamscape.optimizers", "adamscape.tasks"
STAGED_PREFIX = "adamscape_plugin_"
# adamscape's own packages and the environment every worker already has: never shipped
_PROVIDED = {"optimizers", "workers", "study", "dashboard", "torch", "torchvision", "numpy"}
SHIP_LIMIT = 100 << 20  # Ray uploads a shipped folder to every node: refuse to ship more
_SKIPPED = shutil.ignore_patterns(".*", "__pycache__", "*.pyc", "*.db", "*.db-*", "*.sqlite*", "*.lock")


def is_reference(name: str) -> bool:
    """Whether a study file's optimizer or task name refers to code (``source:Name``)."""
    return ":" in name


def entry_point(group: str, name: str) -> importlib.metadata.EntryPoint | None:
    import importlib.metadata  # here: ~70 ms that `status` and `--help` do without

    found = importlib.metadata.entry_points(group=group, name=name)
    return next(iter(found), None)


def entry_point_names(group: str) -> list[str]:
    import importlib.metadata

    return sorted(ep.name for ep in importlib.metadata.entry_points(group=group))


def locate(reference: str, kind: str, base_dir: Path) -> PluginCode:
    """Where ``reference`` (as the study file writes it) lives, and its identity; imports nothing
    but the parent packages of a module. Raises UserError naming the reference and the fix."""
    group = OPTIMIZER_GROUP if kind == "optimizer" else TASK_GROUP
    record: dict[str, Any] = {"kind": kind, "reference": reference}
    if not is_reference(reference):
        found = entry_point(group, reference)
        if found is None:
            raise UserError(f"unknown {kind} {reference!r}: no built-in one and no installed package registers it "
                            f"(entry-point group {group}); name your own as \"./file.py:Name\" or "
                            "\"package.module:Name\"")
        source, attribute = found.value.split(":", 1) if ":" in found.value else (found.value, "")
        record["entry_point"] = f"{group}:{reference}"
    else:
        source, _, attribute = reference.rpartition(":")
    if not attribute.replace(".", "").replace("_", "a").isalnum():
        raise UserError(f"{kind} {reference!r}: expected \"./file.py:Name\" or \"package.module:Name\" "
                        "(Name: the class or function to use)")
    record["attribute"] = attribute
    if source.endswith(".py") or "/" in source or source.startswith("."):
        path = (base_dir / source).resolve()
        if not path.is_file():
            raise UserError(f"{kind} {reference!r}: file {path} not found (a path is relative to the study file)")
        record |= {"source": "file", "path": str(path), "sha256": _sha256([path], path.parent)}
        return PluginCode(**record)
    record |= {"source": "module", "module": source}
    top = source.split(".")[0]
    try:
        spec = importlib.util.find_spec(source)  # runs the parent packages' __init__
    except Exception as exc:
        raise UserError(f"{kind} {reference!r}: cannot import {source} ({type(exc).__name__}: {exc}); install it "
                        "or give a file path") from None
    if spec is None or spec.origin is None:
        raise UserError(f"{kind} {reference!r}: no module named {source!r} here; install its package "
                        "(pip install -e …) or name the file as \"./path/file.py:Name\"")
    record["version"] = _version(top)
    if top not in _PROVIDED:
        root = Path(importlib.util.find_spec(top).origin)
        package = root.parent if root.name == "__init__.py" else root
        record["package"] = str(package)
        record["sha256"] = (_sha256(sorted(package.rglob("*.py")), package) if package.is_dir()
                            else _sha256([package], package.parent))
    return PluginCode(**record)


def _version(top: str) -> str | None:
    import importlib.metadata

    distributions = importlib.metadata.packages_distributions().get(top) or []
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _sha256(paths: Iterable[Path], root: Path) -> str:
    """One hash over the files' paths (relative to ``root``) and contents."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def identity(record: PluginCode) -> dict[str, Any]:
    """What a study's fingerprint keeps of a record: which code, not where it sits on this machine."""
    return {key: getattr(record, key) for key in ("kind", "reference", "entry_point", "attribute", "module", "sha256",
                                                  "version") if getattr(record, key) is not None}


def changed(record: PluginCode) -> str | None:
    """Why the code ``record`` names is no longer the code the study was submitted with, or None."""
    what = f"{record.kind} {record.reference!r}"
    if record.source == "file":
        path = Path(record.path)
        if not path.is_file():
            return f"{what}: its file {path} is gone"
        sha256, version = _sha256([path], path.parent), record.version
    else:
        try:
            now = locate(record.reference, record.kind, Path.cwd())
        except UserError as exc:
            return str(exc)
        sha256, version = now.sha256, now.version
    if sha256 != record.sha256 or version != record.version:
        where = record.path or record.package or record.module
        return f"{what} changed since the study was submitted ({where})"
    return None


# --- importing ------------------------------------------------------------------------------------

class PluginError(UserError):
    """A plugin that cannot be imported or used; the message names its file and line."""


def _staged_name(record: PluginCode) -> str:
    return STAGED_PREFIX + record.sha256[:16]


def _file_here(record: PluginCode) -> Path:
    """The plugin file on this machine: the copy Ray shipped (a worker node), else the original."""
    spec = importlib.util.find_spec(_staged_name(record)) if record.source == "file" else None
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]) / Path(record.path).name
    return Path(record.path)


def _import_file(path: Path, name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses and pickling look a module up by name
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # so it can import the modules beside it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load(record: PluginCode) -> Any:
    """The class or function ``record`` names, imported (cached per process)."""
    reference = record.reference
    try:
        if record.source == "file":
            path = _file_here(record)
            if not path.is_file():
                raise PluginError(f"{reference}: {path} is not on this machine (it reaches Ray workers through "
                                  "runtime_env; run through `adamscape run`)")
            module = _import_file(path, f"{_staged_name(record)}_{path.stem}")
        else:
            module = importlib.import_module(record.module)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"{reference}: cannot import it: {_where(exc, record)}") from None
    value: Any = module
    for part in record.attribute.split("."):
        if not hasattr(value, part):
            raise PluginError(f"{reference}: {getattr(module, '__file__', record.module)} defines no "
                              f"{record.attribute!r}; check the name after the ':'")
        value = getattr(value, part)
    return value


def _where(exc: BaseException, record: PluginCode | None) -> str:
    """``exc`` as one line, with the line of the plugin's own code that raised it."""
    text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".rstrip(": ")
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f"{type(exc).__name__} at line {exc.lineno}: {exc.msg}"
    path, package = (record.path, record.package) if record is not None else (None, None)
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if path and Path(f.filename).name == Path(path).name or package and f.filename.startswith(package)]
    return f"{text} (line {frames[-1].lineno})" if frames else text


def failure(exc: BaseException, reference: str, record: PluginCode | None = None) -> str:
    """One line for an exception raised while using ``reference``'s code (its plugin record, if it has one,
    finds the line of its own code that raised it)."""
    return f"{reference}: {_where(exc, record)}"


# --- describing -----------------------------------------------------------------------------------

def describe_optimizer(record: PluginCode) -> OptimizerPlugin:
    """``record`` with what the study side needs: the class's hyperparameters (imports it)."""
    import optimizers

    cls = load(record)
    import torch

    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise PluginError(f"{record.reference}: {record.attribute} is not a torch.optim.Optimizer subclass")
    try:
        described = optimizers.describe(cls, record.reference, record.reference)
    except optimizers.OptimizerDeclarationError as exc:
        raise PluginError(f"{record.reference}: {exc}") from None
    return OptimizerPlugin(**record.location(), summary=described.summary, batched=described.batched,
                           packed={k: list(v) for k, v in described.packed.items()},
                           hparams={name: {"default": hp.default, **hp.declaration(),  # JSON has no infinity
                                           "low": _finite(hp.low), "high": _finite(hp.high)}
                                    for name, hp in described.hparams.items()})


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def optimizer_spec(record: OptimizerPlugin):
    """The :class:`optimizers.OptimizerSpec` of a described record (torch-free; the class loads on use)."""
    import optimizers

    def hparam(d: dict[str, Any]) -> optimizers.HParam:
        return optimizers.HParam(d["default"], -math.inf if d["low"] is None else d["low"],
                                 math.inf if d["high"] is None else d["high"], tuple(d["search"]), d["log"],
                                 d["open_low"], d["closed_high"])

    return optimizers.OptimizerSpec(record.reference, record.reference, record.summary,
                                    {name: hparam(d) for name, d in record.hparams.items()},
                                    {k: tuple(v) for k, v in record.packed.items()}, record.batched,
                                    load=lambda: load(record))


def describe_task(record: PluginCode) -> TaskPlugin:
    """``record`` with the task's metrics, defaults and options (imports it)."""
    definition = load(record)
    needed = ("build", "metrics", "primary", "epochs", "batch_size", "options")
    if not all(hasattr(definition, name) for name in needed):
        raise PluginError(f"{record.reference}: {record.attribute} is not a task; decorate its build function "
                          "with @workers.tasks.task(metrics=..., primary=...) (README 'Your own task')")
    return TaskPlugin(**record.location(), metrics={"train_loss": "minimize", **definition.metrics},
                      primary=definition.primary, epochs=definition.epochs, batch_size=definition.batch_size,
                      options=dict(definition.options), description=definition.description)


# --- on the workers -------------------------------------------------------------------------------

def install(records: dict[str, PluginRecord] | None) -> None:
    """Make a study's plugins known to ``optimizers.spec`` / ``workers.tasks.build`` in this process."""
    import optimizers
    from workers import tasks

    for reference, record in (records or {}).items():
        match record:
            case OptimizerPlugin():
                optimizers.register(optimizer_spec(record))
            case TaskPlugin():
                tasks.register(reference, lambda plan, device, record=record: load(record).build(plan, device))
            case _:
                raise TypeError(f"{reference}: not a described plugin record ({type(record).__name__})")


def runtime_env(records: dict[str, PluginRecord]) -> dict[str, Any] | None:
    """Ray's ``runtime_env`` that ships the plugins' code to every worker: each file plugin's folder (a
    copy, as package ``adamscape_plugin_<sha>``) and each package that adamscape does not provide."""
    modules = []
    staging = None
    for record in records.values():
        if record.source == "file":
            staging = staging or Path(tempfile.mkdtemp(prefix="adamscape-plugins-"))
            target = staging / _staged_name(record)
            if not target.exists():
                shutil.copytree(Path(record.path).parent, target, ignore=_SKIPPED)
                # Ray keeps one copy of identical folders: the name inside keeps each copy its own
                (target / "__init__.py").write_text(f"# {target.name}: {record.reference}, shipped by adamscape\n")
                _check_size(target, record)
            modules.append(str(target))
        elif record.package:
            modules.append(record.package)
    return {"py_modules": sorted(set(modules))} if modules else None


def _check_size(folder: Path, record: PluginCode) -> None:
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    if size > SHIP_LIMIT:
        raise UserError(f"{record.reference}: its folder {Path(record.path).parent} holds {size >> 20} MiB, "
                        f"which Ray would copy to every worker (limit {SHIP_LIMIT >> 20} MiB); put the plugin in a "
                        "folder of its own and large data under data_dir")

"""Resolution: the file's own optimizers and task, imported and described (:mod:`study.plugins`).

The only step of reading a study file that runs user code; :mod:`study.spec.parse` reads TOML and
validates, and calls it between the two."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optimizers
from study import plugins as plugin_code
from study.catalog import TASKS
from study.protocol import PluginRecord


def describe_plugins(raw: dict[str, Any], base_dir: Path) -> dict[str, PluginRecord]:
    """The file's own optimizers and task, imported and described (study.plugins); names that are neither
    built in nor found are left for validation to report."""
    found = {}
    task = raw.get("task")
    if isinstance(task, str) and task not in TASKS:
        if plugin_code.is_reference(task) or plugin_code.entry_point(plugin_code.TASK_GROUP, task):
            found[task] = plugin_code.describe_task(plugin_code.locate(task, "task", base_dir))
    for key in raw.get("optimizers") or {} if isinstance(raw.get("optimizers"), dict) else {}:
        if key not in optimizers.REGISTRY and (plugin_code.is_reference(key)
                                               or plugin_code.entry_point(plugin_code.OPTIMIZER_GROUP, key)):
            found[key] = plugin_code.describe_optimizer(plugin_code.locate(key, "optimizer", base_dir))
    return found

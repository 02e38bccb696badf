"""The dashboard package's layout: its pages are modules the entry script calls, not Streamlit pages."""

from __future__ import annotations

import importlib
import pkgutil

import dashboard
import dashboard.views
from tests.support.paths import ROOT

APP = ROOT / "dashboard" / "app.py"


def test_no_pages_folder_beside_the_entry_script():
    # Streamlit runs a folder named pages/ beside the entry script as a multipage app of its own: each of
    # its scripts would become a sidebar page (dashboard/views/__init__.py says why the pages live there)
    assert APP.exists() and not (APP.parent / "pages").exists()


def test_every_module_but_the_entry_script_imports_on_its_own():
    # absolute imports only, no cycle: each page module and shared module imports without the app running
    names = [f"dashboard.{m.name}" for m in pkgutil.iter_modules(dashboard.__path__) if m.name != "app"]
    names += [f"dashboard.views.{m.name}" for m in pkgutil.iter_modules(dashboard.views.__path__)]
    assert {"dashboard.data", "dashboard.figures", "dashboard.widgets", "dashboard.views.maps"} <= set(names)
    for name in names:
        importlib.import_module(name)

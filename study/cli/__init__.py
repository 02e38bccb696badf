"""The ``adamscape`` command line (Typer).

* ``options``: the app, the options commands share (declared once), the consoles and table printing;
* ``running``: submit, check, run, serve, shutdown; ``queue``: status, watch, cancel, pause, resume;
* ``reading``: results, report, tasks, optimizers, dashboard;
* ``main``: the entry points (:func:`main` for in-process callers, :func:`console` for the installed script).
"""

from study.cli.main import app, console, main

__all__ = ["app", "console", "main"]

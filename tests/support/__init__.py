"""Helpers the test modules share (real services, the CLI, polling, the exactly-once invariant).

Fixtures stay in the conftest files; what they and the tests call lives here, once:

* :mod:`tests.support.paths` — the repository root and the virtual environment's scripts
* :mod:`tests.support.ray` — a real Ray node (head or worker) that a test starts and stops itself
* :mod:`tests.support.db` — PostgreSQL databases and roles made and dropped for one test, one-off queries
* :mod:`tests.support.cli` — study files, the ``adamscape`` console script (to completion or in the background)
* :mod:`tests.support.wait` — polling instead of fixed sleeps
* :mod:`tests.support.invariants` — each cell finished exactly once
* :mod:`tests.support.browser` — Debian's chromium for the real-browser tests
"""

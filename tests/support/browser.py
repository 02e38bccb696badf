"""Debian's chromium for the real-browser tests, and the dashboard opened in it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support.paths import BIN, IN_CI
from tests.support.ray import free_port
from tests.support.wait import wait_healthy


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_or_skip() -> str:
    """Debian's chromium for a real-browser test: skipped where it is missing, failed under CI=true."""
    chromium = chromium_path()
    if chromium is None:
        if IN_CI:
            pytest.fail("chromium is not installed (make test installs Debian's chromium)")
        pytest.skip("chromium is not installed")
    return chromium


@contextmanager
def headless_page(chromium: str, height: int = 1200) -> Iterator:
    """A blank page (1400 px wide) of ``chromium`` run headless through playwright; the browser is
    closed on leaving."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            yield browser.new_page(viewport={"width": 1400, "height": height})
        finally:
            browser.close()


@contextmanager
def served_dashboard(db: str) -> Iterator:
    """``adamscape dashboard --db DB`` on a free port, in a session of its own, opened in headless
    Chromium (``chromium_or_skip``): the page, already at the served address once the server answers
    its health check. On leaving, the browser is closed and the server's session gets SIGTERM."""
    chromium = chromium_or_skip()
    port = free_port()
    server = subprocess.Popen([str(BIN / "adamscape"), "dashboard", "--db", db, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_healthy(port, server)
        with headless_page(chromium) as page:
            page.goto(f"http://127.0.0.1:{port}/")
            yield page
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

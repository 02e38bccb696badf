"""Debian's chromium for the real-browser tests."""

from __future__ import annotations

import shutil

import pytest

from tests.support.paths import IN_CI


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

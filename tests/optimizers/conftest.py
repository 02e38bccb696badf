"""Fixtures of the optimizer suites."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def float64_by_default():
    """torch's default dtype float64 for the test, restored after it (the parity suites' references and ours
    then create their state in float64)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)

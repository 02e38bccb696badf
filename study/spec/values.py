"""A study file's values: the grid forms of an axis, and the limits every value is checked against."""

from __future__ import annotations

import math
from typing import Any

from study.catalog import MAX_WHOLE, fits_a_float

MAX_CELLS = 100_000  # beyond this a grid is almost certainly a typo (num = 1e5 …)


MAX_AXIS_POINTS = 1_000


MAX_SEED = MAX_WHOLE  # seeds: 0 … 2**31 - 1, what PostgreSQL's integer column and torch/numpy seeding accept


FINITE = "must be a finite number (inf and nan are not allowed)"


AXIS_FORMS = "a number, a list of numbers, { log = [lo, hi], num = n } or { linear = [lo, hi], num = n }"


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shown(value: Any, limit: int = 40) -> str:
    """``value`` as a study file writes it, cut short (a 400-digit integer fits no message)."""
    text = {True: "true", False: "false"}[value] if isinstance(value, bool) else \
        f"{value:g}" if isinstance(value, float) else repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def as_float(value: int | float) -> float:
    """``float(value)``, with a ValueError naming the value where an integer is beyond the float range."""
    if not fits_a_float(value):
        raise ValueError(f"{shown(value)} is too large for a floating-point number")
    return float(value)


def axis_values(axis: Any) -> list[float]:
    """The values one hyperparameter entry of a study file stands for (ValueError if malformed).

    Explicit values may come back non-finite (the hyperparameter's check refuses them);
    range bounds must be finite numbers.
    """
    if isinstance(axis, bool) or isinstance(axis, str):
        raise ValueError(f"expected {AXIS_FORMS}")
    if isinstance(axis, (int, float)):
        return [as_float(axis)]
    if isinstance(axis, list):
        if not all(is_number(v) for v in axis):
            raise ValueError(f"expected {AXIS_FORMS}")
        return [as_float(v) for v in axis]
    if isinstance(axis, dict) and set(axis) in ({"log", "num"}, {"linear", "num"}):
        kind = "log" if "log" in axis else "linear"
        bounds, num = axis[kind], axis["num"]
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds)):
            raise ValueError(f"{kind} must be [lo, hi]")
        if not all(is_number(b) and fits_a_float(b) and math.isfinite(b) for b in bounds):
            raise ValueError(f"range bounds must be finite numbers (got [{', '.join(map(shown, bounds))}])")
        if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= MAX_AXIS_POINTS:
            raise ValueError(f"num must be a whole number from 1 to {MAX_AXIS_POINTS}")
        return _spaced(float(bounds[0]), float(bounds[1]), num, log=kind == "log")
    raise ValueError(f"expected {AXIS_FORMS}")


def _spaced(low: float, high: float, num: int, log: bool) -> list[float]:
    """num points from low to high, both ends included, evenly spaced (in log10 when log).

    ``low`` and ``high`` are finite; a range numpy cannot space without overflowing is a ValueError.
    """
    if not low <= high:
        raise ValueError(f"range start must not exceed its end (got [{low:g}, {high:g}])")
    if num > 1 and low == high:
        raise ValueError(f"range [{low:g}, {high:g}] is a single point; use a scalar or num = 1")
    if log and low <= 0:
        raise ValueError(f"log range [{low:g}, {high:g}] must be positive")
    too_wide = ValueError(f"range [{low:g}, {high:g}] is too wide to space {num} points in; narrow it")
    if not math.isfinite(high - low):
        raise too_wide
    try:
        import numpy as np  # here: `status` and `--help` load study files' models without it

        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            points = np.logspace(np.log10(low), np.log10(high), num) if log else np.linspace(low, high, num)
    except FloatingPointError:
        raise too_wide from None
    values = [float(f"{x:.12g}") for x in points]  # 1e-3, not 0.0010000000000000002
    if not all(math.isfinite(v) for v in values):
        raise too_wide
    return values

"""How a figure is written, the same in reports, model cards and on the web pages.

The pages' scripts write numbers with static/numbers.js, its copy in the browser; a test checks
that both write the same text.
"""

from __future__ import annotations

import math
from typing import Any


def number(value: Any, digits: int = 3) -> str:
    """0.123 for a number, 'n/a' for a missing or undefined one (None, NaN); never '-0.000'."""
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    text = f"{float(value):.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def percent(value: Any, digits: int = 1) -> str:
    """12.3% for 0.123, 'n/a' for a missing one."""
    return "n/a" if value is None else f"{100 * float(value):.{digits}f}%"


def interval(pair: Any, digits: int = 3) -> str:
    """'0.520–0.760' for a (low, high) pair, 'n/a' for a missing one."""
    if not pair:
        return "n/a"
    low, high = pair
    return f"{number(low, digits)}–{number(high, digits)}"


def percent_interval(pair: Any, digits: int = 1) -> str:
    """'14.1–22.7%' for a (low, high) pair of shares, 'n/a' for a missing one: an interval
    written in the unit of the percent beside it."""
    if not pair or None in pair:
        return "n/a"
    low, high = (f"{100 * float(value):.{digits}f}" for value in pair)
    return f"{low}–{high}%"

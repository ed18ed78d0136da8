"""How a figure is written, the same in reports, model cards and on the web pages."""

from __future__ import annotations

from typing import Any


def number(value: Any, digits: int = 3) -> str:
    """0.123 for a number, 'n/a' for a missing one; never '-0.000'."""
    if value is None:
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

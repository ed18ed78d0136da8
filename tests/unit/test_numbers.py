"""ml.evaluate.numbers: one way to write a figure (static/numbers.js is its browser copy, checked
against it in tests/e2e/test_studio.py)."""

from __future__ import annotations

import pytest

from ml.evaluate.numbers import interval, number, percent_interval


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.1234, "0.123"), (-0.0004, "0.000"), (0.9995, "1.000"), (0.0625, "0.062"),
     (None, "n/a"), (float("nan"), "n/a"), (float("inf"), "n/a"), (1, "1.000")],
)  # fmt: skip
def test_number(value, text) -> None:
    assert number(value) == text


def test_interval() -> None:
    assert interval((0.52, 0.76)) == "0.520–0.760"
    assert interval(None) == "n/a"
    assert interval((None, 0.5)) == "n/a–0.500"


def test_percent_interval_is_written_in_percent() -> None:
    assert percent_interval((0.141, 0.2274)) == "14.1–22.7%"
    assert percent_interval((0.141, 0.2274), 0) == "14–23%"
    assert percent_interval(None) == "n/a" and percent_interval((None, 0.2)) == "n/a"

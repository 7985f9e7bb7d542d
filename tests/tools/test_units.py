"""Unit conversion: known values, round trips, and refusals."""

from __future__ import annotations

import json
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from . import load_tool_module

units = load_tool_module("units")
ALL_UNITS: tuple[str, ...] = get_args(units.Unit)


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        (1, "km", "m", 1000),
        (1, "mi", "km", 1.609344),
        (12, "in", "ft", 1),
        (3, "ft", "yd", 1),
        (1, "kg", "lb", 2.20462262185),
        (16, "oz", "lb", 1),
        (1, "t", "kg", 1000),
        (1, "gal", "l", 3.785411784),
        (3, "tsp", "tbsp", 1),
        (8, "fl_oz", "cup", 1),
        (1, "m3", "l", 1000),
        (100, "C", "F", 212),
        (-40, "C", "F", -40),
        (32, "F", "C", 0),
        (0, "C", "K", 273.15),
        (0, "K", "F", -459.67),
        (-273.15, "C", "K", 0),
        (100, "km/h", "m/s", 27.7777777778),
        (1, "kn", "km/h", 1.852),
        (60, "mph", "km/h", 96.56064),
        (1, "kWh", "J", 3.6e6),
        (1, "kWh", "Wh", 1000),
        (1, "kcal", "cal", 1000),
        (1, "cal", "J", 4.184),
        (1, "kJ", "kcal", 0.239005736138),
        (1, "hp", "W", 745.699871582),
        (1, "kW", "W", 1000),
        (1, "atm", "kPa", 101.325),
        (1, "bar", "psi", 14.5037737730),
        (1013.25, "hPa", "atm", 1),
        (1, "day", "h", 24),
        (1, "week", "min", 10080),
        (1, "year", "day", 365.25),
        (1500, "ms", "s", 1.5),
    ],
)
def test_known_values(value: float, source: str, target: str, expected: float) -> None:
    assert units.convert(value, source, target) == pytest.approx(expected, rel=1e-10, abs=1e-9)


def test_tool_result_is_json() -> None:
    out = units.convert_units(5, "km", "mi")
    assert out == {
        "value": 5,
        "from_unit": "km",
        "to_unit": "mi",
        "result": 3.10685596119,
        "dimension": "length",
    }
    json.dumps(out)


def test_every_unit_has_exactly_one_dimension() -> None:
    assert len(set(ALL_UNITS)) == len(ALL_UNITS)
    table_units = [u for group in units.FACTORS.values() for u in group] + list(units.TEMPERATURE)
    assert sorted(table_units) == sorted(ALL_UNITS)
    assert {units.dimension_of(u) for u in ALL_UNITS} == {*units.FACTORS, "temperature"}


def test_same_unit_is_identity() -> None:
    for unit in ALL_UNITS:
        assert units.convert(12.5, unit, unit) == 12.5


def _same_dimension(unit: str) -> list[str]:
    return [u for u in ALL_UNITS if units.dimension_of(u) == units.dimension_of(unit)]


_pairs = st.sampled_from(ALL_UNITS).flatmap(
    lambda u: st.tuples(st.just(u), st.sampled_from(_same_dimension(u)))
)


@given(_pairs, st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_round_trip(pair: tuple[str, str], value: float) -> None:
    source, target = pair
    there = units.convert(value, source, target)
    back = units.convert(there, target, source)
    assert back == pytest.approx(value, rel=1e-9, abs=1e-6)


@given(
    st.sampled_from(["C", "F", "K"]),
    st.sampled_from(["C", "F", "K"]),
    st.floats(min_value=0, max_value=1e6),
)
def test_temperature_round_trip_via_kelvin(source: str, target: str, kelvin: float) -> None:
    value = units.convert(kelvin, "K", source)
    direct = units.convert(value, source, target)
    assert direct == pytest.approx(units.convert(kelvin, "K", target), rel=1e-9, abs=1e-6)


@given(st.floats(min_value=-1e6, max_value=1e6), st.floats(min_value=-1e6, max_value=1e6))
def test_linear_conversions_are_linear(a: float, b: float) -> None:
    total = units.convert(a + b, "km", "mi")
    assert total == pytest.approx(
        units.convert(a, "km", "mi") + units.convert(b, "km", "mi"), rel=1e-9, abs=1e-6
    )


@pytest.mark.parametrize(
    ("source", "target", "words"),
    [
        ("kg", "m", ("kg (mass)", "m (length)")),
        ("C", "J", ("temperature", "energy")),
        ("kWh", "kW", ("energy", "power")),
        ("l", "kg", ("volume", "mass")),
        ("mph", "h", ("speed", "time")),
        ("psi", "hp", ("pressure", "power")),
    ],
)
def test_incompatible_dimensions(source: str, target: str, words: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="different kinds of quantity") as info:
        units.convert_units(1, source, target)
    for word in words:
        assert word in str(info.value)


def test_unknown_unit() -> None:
    with pytest.raises(ValueError, match="unknown unit 'furlong'"):
        units.convert(1, "furlong", "m")


@pytest.mark.parametrize(("value", "unit"), [(-1, "K"), (-274, "C"), (-460, "F")])
def test_below_absolute_zero(value: float, unit: str) -> None:
    with pytest.raises(ValueError, match="below absolute zero"):
        units.convert(value, unit, "K")


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_values(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        units.convert(value, "m", "km")


def test_results_are_rounded_to_significant_digits() -> None:
    assert units.convert(0.1 + 0.2, "m", "m") == 0.3
    assert units.convert(1, "in", "cm") == 2.54

"""Unit conversion between common units of one physical dimension.

Units are an enum in the schema, so the grammar only lets a model name units
that exist here. US customary volumes (cup, gal, fl_oz); a year is 365.25 days.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

from edge_agent import tool

Unit = Literal[
    "mm", "cm", "m", "km", "in", "ft", "yd", "mi",
    "mg", "g", "kg", "t", "oz", "lb",
    "ml", "l", "m3", "tsp", "tbsp", "fl_oz", "cup", "gal",
    "C", "F", "K",
    "m/s", "km/h", "mph", "kn",
    "J", "kJ", "Wh", "kWh", "cal", "kcal",
    "W", "kW", "hp",
    "Pa", "hPa", "kPa", "bar", "psi", "atm",
    "ms", "s", "min", "h", "day", "week", "year",
]  # fmt: skip

# dimension -> unit -> size in the dimension's SI unit (temperature is affine: see below)
FACTORS: dict[str, dict[str, float]] = {
    "length": {
        "mm": 1e-3, "cm": 1e-2, "m": 1.0, "km": 1e3,
        "in": 0.0254, "ft": 0.3048, "yd": 0.9144, "mi": 1609.344,
    },
    "mass": {
        "mg": 1e-6, "g": 1e-3, "kg": 1.0, "t": 1e3,
        "oz": 0.028349523125, "lb": 0.45359237,
    },
    "volume": {
        "ml": 1e-6, "l": 1e-3, "m3": 1.0,
        "tsp": 4.92892159375e-6, "tbsp": 14.78676478125e-6, "fl_oz": 29.5735295625e-6,
        "cup": 236.5882365e-6, "gal": 3.785411784e-3,
    },
    "speed": {"m/s": 1.0, "km/h": 1 / 3.6, "mph": 0.44704, "kn": 1852 / 3600},
    "energy": {
        "J": 1.0, "kJ": 1e3, "Wh": 3600.0, "kWh": 3.6e6, "cal": 4.184, "kcal": 4184.0,
    },
    "power": {"W": 1.0, "kW": 1e3, "hp": 745.6998715822702},
    "pressure": {
        "Pa": 1.0, "hPa": 100.0, "kPa": 1e3, "bar": 1e5,
        "psi": 6894.757293168361, "atm": 101325.0,
    },
    "time": {
        "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0,
        "day": 86400.0, "week": 604800.0, "year": 31557600.0,
    },
}  # fmt: skip

# temperature unit -> (scale, offset): kelvin = value * scale + offset
TEMPERATURE: dict[str, tuple[float, float]] = {
    "K": (1.0, 0.0),
    "C": (1.0, 273.15),
    "F": (5 / 9, 273.15 - 32 * 5 / 9),
}

SIGNIFICANT_DIGITS = 12


@tool(
    "Convert a value from one unit to another of the same kind.",
    tags=("math",),
    say="{value} {from_unit} is {result:.4g} {to_unit}.",
)
def convert_units(value: float, from_unit: Unit, to_unit: Unit) -> dict[str, Any]:
    result = convert(value, from_unit, to_unit)
    return {
        "value": value,
        "from_unit": from_unit,
        "to_unit": to_unit,
        "result": result,
        "dimension": dimension_of(from_unit),
    }


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """``value`` in ``to_unit``, to :data:`SIGNIFICANT_DIGITS` digits."""
    if not math.isfinite(value):
        raise ValueError("the value must be a finite number")
    source, target = dimension_of(from_unit), dimension_of(to_unit)
    if source != target:
        raise ValueError(
            f"cannot convert {from_unit} ({source}) to {to_unit} ({target}): "
            "different kinds of quantity"
        )
    if source == "temperature":
        raw = _convert_temperature(value, from_unit, to_unit)
    else:
        raw = value * FACTORS[source][from_unit] / FACTORS[source][to_unit]
    return float(f"{raw:.{SIGNIFICANT_DIGITS}g}")


def dimension_of(unit: str) -> str:
    if unit in TEMPERATURE:
        return "temperature"
    for dimension, units in FACTORS.items():
        if unit in units:
            return dimension
    raise ValueError(f"unknown unit {unit!r}; known units: {', '.join(get_args(Unit))}")


def _convert_temperature(value: float, from_unit: str, to_unit: str) -> float:
    scale, offset = TEMPERATURE[from_unit]
    kelvin = value * scale + offset
    if kelvin < -1e-9:
        raise ValueError(f"{value:g} {from_unit} is below absolute zero")
    scale, offset = TEMPERATURE[to_unit]
    return (max(kelvin, 0.0) - offset) / scale

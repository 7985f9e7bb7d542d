"""A safe calculator: arithmetic over a parsed expression tree, never ``eval``.

Allowed: numbers, ``+ - * / // % **``, unary ``+``/``-``, parentheses, the
constants ``pi`` and ``e`` and the functions in :data:`FUNCTIONS`. Anything
else (names, attributes, strings, comparisons, comprehensions...) is refused
with a ``ValueError`` that says why. Expression length, exponents and every
intermediate magnitude are capped, so ``9**9**9`` fails fast instead of
eating the device's memory.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from edge_agent import tool

Number = int | float


class CalculationError(ValueError):
    """An expression the calculator refuses or cannot evaluate."""


MAX_LENGTH = 256
MAX_EXPONENT = 1024
MAX_MAGNITUDE = 1e300
MAX_ROUND_DIGITS = 100

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}

BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}

# Friendlier words for the refusals a model is most likely to trigger.
_REFUSED = {
    ast.Attribute: "attribute access",
    ast.Subscript: "indexing",
    ast.Compare: "comparisons",
    ast.BoolOp: "and/or",
    ast.IfExp: "if/else",
    ast.Lambda: "lambda",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.JoinedStr: "strings",
    ast.NamedExpr: "assignment",
    ast.Tuple: "tuples",
    ast.List: "lists",
    ast.Set: "sets",
    ast.Dict: "dicts",
    ast.Starred: "star arguments",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}
_OPERATOR_NAMES = {
    ast.BitXor: "^ (use ** for powers)",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.MatMult: "@",
    ast.Invert: "~",
    ast.Not: "not",
}


def _round(value: Number, ndigits: Number | None = None) -> Number:
    if ndigits is None:
        return round(value)
    if not isinstance(ndigits, int):
        raise CalculationError("round(): the number of digits must be a whole number")
    if abs(ndigits) > MAX_ROUND_DIGITS:
        raise CalculationError(f"round(): at most {MAX_ROUND_DIGITS} digits")
    return round(value, ndigits)


# name -> (function, least and most arguments)
FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int]] = {
    "sqrt": (math.sqrt, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "log": (math.log, 1, 2),
    "log10": (math.log10, 1, 1),
    "exp": (math.exp, 1, 1),
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "min": (min, 2, 16),
    "max": (max, 2, 16),
}


@tool(
    "Evaluate an arithmetic expression, e.g. 'sqrt(2) * (3 + 4)**2'.",
    tags=("math",),
    say="{expression} = {result}.",
)
def calculate(expression: str) -> dict[str, Any]:
    return {"expression": expression, "result": evaluate(expression)}


def evaluate(expression: str) -> Number:
    """The value of ``expression``; ``ValueError`` for anything not allowed."""
    text = " ".join(expression.split())  # a line break must not end the expression
    if not text:
        raise CalculationError("the expression is empty")
    if len(text) > MAX_LENGTH:
        raise CalculationError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as exc:
        raise CalculationError(f"not a valid expression: {text!r}") from exc
    return _eval(tree.body)


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Constant):
        return _constant(node.value)
    if isinstance(node, ast.UnaryOp):
        return _checked(_unary_op(node.op)(_eval(node.operand)))
    if isinstance(node, ast.BinOp):
        return _binary(node)
    if isinstance(node, ast.Name):
        return _name(node.id)
    if isinstance(node, ast.Call):
        return _call(node)
    raise CalculationError(f"not allowed in a calculation: {_refused(node)}")


def _constant(value: object) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "strings are" if isinstance(value, str | bytes) else f"{value!r} is"
        raise CalculationError(f"{kind} not allowed in a calculation; use numbers")
    return _checked(value)


def _unary_op(op: ast.unaryop) -> Callable[[Any], Any]:
    func = UNARY.get(type(op))
    if func is None:
        raise CalculationError(f"operator {_OPERATOR_NAMES.get(type(op), '?')} is not allowed")
    return func


def _binary(node: ast.BinOp) -> Number:
    left, right = _eval(node.left), _eval(node.right)
    if isinstance(node.op, ast.Pow):
        return _power(left, right)
    func = BINARY.get(type(node.op))
    if func is None:
        raise CalculationError(f"operator {_OPERATOR_NAMES.get(type(node.op), '?')} is not allowed")
    try:
        return _checked(func(left, right))
    except ZeroDivisionError:
        raise CalculationError("division by zero") from None
    except OverflowError:
        raise CalculationError("result too large") from None


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise CalculationError(f"exponent too large (at most {MAX_EXPONENT})")
    if abs(base) > 1 and exponent > 0 and exponent * math.log10(abs(base)) > 301:
        raise CalculationError(f"result too large (limit {MAX_MAGNITUDE:g})")
    try:
        return _checked(base**exponent)
    except ZeroDivisionError:
        raise CalculationError("zero cannot be raised to a negative power") from None
    except OverflowError:
        raise CalculationError("result too large") from None


def _name(name: str) -> Number:
    if name in CONSTANTS:
        return CONSTANTS[name]
    if name in FUNCTIONS:
        raise CalculationError(f"{name} is a function: call it, e.g. {name}(2)")
    allowed = ", ".join([*CONSTANTS, *FUNCTIONS])
    raise CalculationError(f"unknown name {name!r}; allowed names: {allowed}")


def _call(node: ast.Call) -> Number:
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
        what = f"{node.func.id}()" if isinstance(node.func, ast.Name) else "that call"
        raise CalculationError(f"{what} is not allowed; functions: {', '.join(FUNCTIONS)}")
    name = node.func.id
    func, least, most = FUNCTIONS[name]
    if node.keywords:
        raise CalculationError(f"{name}() takes no keyword arguments")
    if any(isinstance(arg, ast.Starred) for arg in node.args):
        raise CalculationError(f"not allowed in a calculation: {_REFUSED[ast.Starred]}")
    if not least <= len(node.args) <= most:
        count = str(least) if least == most else f"{least} to {most}"
        raise CalculationError(f"{name}() takes {count} argument(s), got {len(node.args)}")
    args = [_eval(arg) for arg in node.args]
    try:
        result = func(*args)
    except CalculationError:
        raise
    except (ValueError, TypeError, ZeroDivisionError):
        raise CalculationError(f"{name}() is undefined for {', '.join(map(repr, args))}") from None
    except OverflowError:
        raise CalculationError(f"{name}() result too large") from None
    return _checked(result)


def _checked(value: object) -> Number:
    """Refuse what is not a finite real number within the magnitude cap."""
    if isinstance(value, complex):
        raise CalculationError("the result is not a real number")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CalculationError("the result is not a number")
    if isinstance(value, float) and not math.isfinite(value):  # only overflow makes inf
        raise CalculationError(f"result too large (limit {MAX_MAGNITUDE:g})")
    if abs(value) > MAX_MAGNITUDE:
        raise CalculationError(f"result too large (limit {MAX_MAGNITUDE:g})")
    return value


def _refused(node: ast.AST) -> str:
    return _REFUSED.get(type(node), type(node).__name__)

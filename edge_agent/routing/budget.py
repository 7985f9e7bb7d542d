"""The cloud budget: price tables, estimates, limits, and CPS arithmetic (pure).

A cloud call is priced twice. Before it, :meth:`Budget.reserve` estimates the
worst case (the prompt's tokens, counted by the local tokenizer or as
characters / 4, plus ``max_tokens`` of output) and admits the call only if
that estimate fits the per-request cap and what is left of the daily and the
monthly limit; the estimate is written to the ledger as a *reservation*.
After it, :meth:`Budget.settle` replaces the reservation with the actual cost
from the reply's token usage (or keeps the estimate when the endpoint reports
no usage). A failed call is settled at 0. A reservation left by a crash is
never settled and keeps counting: the budget errs on the side of spending
less.

Periods are calendar days and months in UTC. When the budget is exhausted the
device does not call out: :meth:`Budget.reserve` raises
:class:`~edge_agent.errors.BudgetExceededError` and the router turns that
into a queued or declined request with the reason.

The ledger is an interface (:class:`Ledger`): :class:`MemoryLedger` here,
``edge_agent.routing.ledger.SqliteLedger`` in the journal's file for a device.

CPS (cost per successful task, as ``bench`` reports it): total cost of all
attempts, failures, repairs and escalations included, divided by the number
of successful tasks; reported as a ratio to the LLM-only baseline.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_agent.errors import BudgetExceededError, ConfigError

PER_MILLION = 1_000_000
CHARS_PER_TOKEN = 4.0
ANY_MODEL = "*"
EPSILON = 1e-9  # money is float: 0.015 - 0.01 must still admit 0.005


class ModelPrice(BaseModel):
    """A cloud model's price per million tokens, in the budget's currency."""

    model_config = ConfigDict(extra="forbid")

    input_per_mtok: float = Field(ge=0, le=10_000, description="price per 1M prompt tokens")
    output_per_mtok: float = Field(ge=0, le=10_000, description="price per 1M completion tokens")


class BudgetSettings(BaseModel):
    """Spending limits for cloud offload, and what each model costs."""

    model_config = ConfigDict(extra="forbid")

    currency: str = Field(
        "USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 code; all amounts are in it"
    )
    daily_limit: float = Field(
        1.0, ge=0, le=1e6, description="most spent per UTC calendar day; 0 = never call out"
    )
    monthly_limit: float = Field(
        20.0, ge=0, le=1e7, description="most spent per UTC calendar month; 0 = never call out"
    )
    per_request_cap: float = Field(
        0.05, ge=0, le=1e4, description="most one request may cost (estimated worst case)"
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=lambda: {
            ANY_MODEL: ModelPrice(input_per_mtok=1.0, output_per_mtok=3.0),
        },
        description=(
            "price per cloud model name; '*' prices any model not listed. The default "
            "'*' entry is a placeholder: set your provider's prices"
        ),
    )
    chars_per_token: float = Field(
        CHARS_PER_TOKEN,
        gt=0,
        le=16,
        description="prompt characters per token, when no local tokenizer counts them",
    )

    @model_validator(mode="after")
    def _limits_ordered(self) -> BudgetSettings:
        if self.daily_limit > self.monthly_limit:
            raise ValueError("daily_limit must not exceed monthly_limit")
        return self

    def price(self, model: str) -> ModelPrice:
        found = self.prices.get(model) or self.prices.get(ANY_MODEL)
        if found is None:
            raise ConfigError(
                f"no price for cloud model {model!r} in budget.prices",
                hint=f"add budget.prices.{model} or a '*' entry",
            )
        return found


# ---------------------------------------------------------------- pure arithmetic


def token_cost(price: ModelPrice, prompt_tokens: int, completion_tokens: int) -> float:
    """What the tokens cost at ``price``."""
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError("token counts must be >= 0")
    return (
        prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok
    ) / PER_MILLION


def estimate_tokens(text: str, chars_per_token: float = CHARS_PER_TOKEN) -> int:
    """A tokenizer-free token count: characters / ``chars_per_token``, rounded up."""
    return math.ceil(len(text) / chars_per_token)


def day_start(t: float) -> float:
    """Epoch seconds of the UTC midnight at or before ``t``."""
    d = datetime.fromtimestamp(t, tz=timezone.utc)
    return d.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def month_start(t: float) -> float:
    """Epoch seconds of the first instant of ``t``'s UTC calendar month."""
    d = datetime.fromtimestamp(t, tz=timezone.utc)
    return d.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


@dataclass(frozen=True)
class Windows:
    """Where the current day and month began (epoch seconds)."""

    day: float
    month: float

    @classmethod
    def at(cls, t: float) -> Windows:
        return cls(day_start(t), month_start(t))


@dataclass(frozen=True)
class Spent:
    """Amounts charged (reservations included) in the current day and month."""

    day: float
    month: float


@dataclass(frozen=True)
class Left:
    """What may still be spent today and this month."""

    day: float
    month: float

    @property
    def now(self) -> float:
        """The smaller of the two: what the next call may cost at most."""
        return min(self.day, self.month)


def left(settings: BudgetSettings, spent: Spent) -> Left:
    return Left(
        max(0.0, settings.daily_limit - spent.day), max(0.0, settings.monthly_limit - spent.month)
    )


def refusal(settings: BudgetSettings, spent: Spent, estimate: float) -> str | None:
    """Why a call estimated at ``estimate`` may not be made, or None if it may.
    The first limit it breaks is named: per-request cap, then day, then month."""
    cur = settings.currency
    if estimate > settings.per_request_cap + EPSILON:
        return (
            f"estimate {estimate:.4f} {cur} exceeds the per-request cap "
            f"{settings.per_request_cap:.4f} {cur}"
        )
    room = left(settings, spent)
    if estimate > room.day + EPSILON:
        return f"budget {room.day:.2f} {cur} left today, estimate {estimate:.4f} {cur}"
    if estimate > room.month + EPSILON:
        return f"budget {room.month:.2f} {cur} left this month, estimate {estimate:.4f} {cur}"
    return None


def cost_per_success(attempt_costs: Iterable[float], n_success: int) -> float | None:
    """CPS: the cost of every attempt, failed ones included, per successful
    task; None when nothing succeeded (the cost per success is unbounded)."""
    if n_success < 0:
        raise ValueError("n_success must be >= 0")
    total = math.fsum(attempt_costs)
    return total / n_success if n_success else None


def cps_ratio(cps: float | None, baseline_cps: float | None) -> float | None:
    """CPS relative to the LLM-only baseline on the same tasks (< 1 is cheaper);
    None when either is undefined or the baseline costs nothing."""
    if cps is None or baseline_cps is None or baseline_cps <= 0:
        return None
    return cps / baseline_cps


# ---------------------------------------------------------------- the ledger


@dataclass(frozen=True)
class Charge:
    """One ledger entry: a reservation before the call, settled after it."""

    at: float
    model: str
    idempotency_key: str
    estimate: float


Admit = Callable[[Spent], None]
"""Called by a ledger inside its transaction with what was spent; raises
:class:`BudgetExceededError` to refuse (the ledger then writes nothing)."""


class Ledger(Protocol):
    """Where charges are kept. ``reserve`` must check and write atomically."""

    def reserve(self, charge: Charge, since: Windows, admit: Admit) -> int:
        """Sum the charges at or after ``since.day`` and ``since.month`` (epoch
        seconds), call ``admit`` with them, and, unless it raised, record
        ``charge`` at its estimate; returns the entry's id."""
        ...

    def settle(self, entry: int, amount: float, prompt_tokens: int, completion_tokens: int) -> None:
        """Replace a reservation's amount with the actual cost."""
        ...

    def spent(self, since: Windows) -> Spent:
        """Charges at or after the two instants, reservations included."""
        ...


class MemoryLedger:
    """A ledger in memory: for tests and one-shot runs; forgotten on exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[float, float]] = []  # (at, amount)

    def reserve(self, charge: Charge, since: Windows, admit: Admit) -> int:
        with self._lock:
            admit(self._sum(since))
            self._entries.append((charge.at, charge.estimate))
            return len(self._entries) - 1

    def settle(self, entry: int, amount: float, prompt_tokens: int, completion_tokens: int) -> None:
        del prompt_tokens, completion_tokens
        with self._lock:
            at, _ = self._entries[entry]
            self._entries[entry] = (at, amount)

    def spent(self, since: Windows) -> Spent:
        with self._lock:
            return self._sum(since)

    def _sum(self, since: Windows) -> Spent:
        day = math.fsum(a for t, a in self._entries if t >= since.day)
        month = math.fsum(a for t, a in self._entries if t >= since.month)
        return Spent(day, month)


# ---------------------------------------------------------------- the budget


@dataclass(frozen=True)
class Reservation:
    """An admitted call: its ledger entry, its price and its worst-case cost."""

    entry: int
    model: str
    estimate: float
    price: ModelPrice


class Budget:
    """Settings + a ledger + a clock: the one place that admits a cloud call."""

    def __init__(
        self,
        settings: BudgetSettings,
        ledger: Ledger | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.ledger: Ledger = ledger if ledger is not None else MemoryLedger()
        self._clock = clock

    @property
    def currency(self) -> str:
        return self.settings.currency

    def estimate(self, model: str, prompt_tokens: int, max_tokens: int) -> float:
        """The worst-case cost of a call: the prompt plus ``max_tokens`` out."""
        return token_cost(self.settings.price(model), prompt_tokens, max_tokens)

    def windows(self) -> Windows:
        return Windows.at(self._clock())

    def left(self) -> Left:
        return left(self.settings, self.ledger.spent(self.windows()))

    def check(self, estimate: float) -> str | None:
        """Why a call of this estimate would be refused now (no reservation)."""
        return refusal(self.settings, self.ledger.spent(self.windows()), estimate)

    def reserve(self, model: str, prompt_tokens: int, max_tokens: int, key: str) -> Reservation:
        """Admit a call or raise :class:`BudgetExceededError` naming the limit."""
        price = self.settings.price(model)
        estimate = token_cost(price, prompt_tokens, max_tokens)

        def admit(spent: Spent) -> None:
            problem = refusal(self.settings, spent, estimate)
            if problem is not None:
                raise BudgetExceededError(problem)

        charge = Charge(self._clock(), model, key, estimate)
        entry = self.ledger.reserve(charge, self.windows(), admit)
        return Reservation(entry, model, estimate, price)

    def settle(self, reservation: Reservation, prompt_tokens: int, completion_tokens: int) -> float:
        """Charge the actual usage; with no usage reported, keep the estimate."""
        if prompt_tokens == 0 and completion_tokens == 0:
            amount = reservation.estimate
        else:
            amount = token_cost(reservation.price, prompt_tokens, completion_tokens)
        self.ledger.settle(reservation.entry, amount, prompt_tokens, completion_tokens)
        return amount

    def release(self, reservation: Reservation) -> None:
        """The call failed: nothing was generated for us, charge nothing."""
        self.ledger.settle(reservation.entry, 0.0, 0, 0)


__all__ = [
    "Budget",
    "BudgetSettings",
    "Charge",
    "Ledger",
    "Left",
    "MemoryLedger",
    "ModelPrice",
    "Reservation",
    "Spent",
    "Windows",
    "cost_per_success",
    "cps_ratio",
    "day_start",
    "estimate_tokens",
    "left",
    "month_start",
    "refusal",
    "token_cost",
]

"""Per-tool rate limits as a verifier rule, on an injected clock (no sleeping)."""

from __future__ import annotations

from edge_agent.toolbox.ratelimit import RateLimiter
from edge_agent.toolbox.registry import Registry


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_window_fills_and_slides() -> None:
    lock = Registry.from_dirs().get("lock_door")  # "6/min"
    clock = Clock()
    limiter = RateLimiter(clock)
    for _ in range(6):
        assert limiter.rule(lock, {}) is None
        limiter.record(lock)
        clock.now += 1
    complaint = limiter.rule(lock, {})
    assert complaint == "rate limit 6/min reached; try again in 54 s"
    clock.now += 54  # the first call leaves the window
    assert limiter.rule(lock, {}) is None


def test_checking_alone_records_nothing() -> None:
    lock = Registry.from_dirs().get("lock_door")
    limiter = RateLimiter(Clock())
    for _ in range(20):
        assert limiter.rule(lock, {}) is None


def test_a_tool_without_a_limit_is_never_limited() -> None:
    sensor = Registry.from_dirs().get("read_sensor")
    limiter = RateLimiter(Clock())
    for _ in range(100):
        limiter.record(sensor)
    assert sensor.policy.rate_limit is None and limiter.rule(sensor, {}) is None

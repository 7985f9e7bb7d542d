"""Per-tool rate limits ("6/min"), enforced as a verifier rule.

A sliding window of execution times per tool name. Checking happens at
verification (so the model hears "rate limit reached" and can answer
instead), recording happens only when a call actually runs. The clock is
injectable so the window arithmetic is tested without sleeping.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

from edge_agent.toolbox.registry import Tool


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._calls: defaultdict[str, deque[float]] = defaultdict(deque)

    def rule(self, tool: Tool, arguments: dict[str, Any]) -> str | None:
        """A verifier rule: a complaint when the tool's window is full."""
        del arguments
        limit = tool.policy.rate_per_second()
        if limit is None:
            return None
        count, window = limit
        recent = self._window(tool.name, window)
        if len(recent) < count:
            return None
        wait = window - (self._clock() - recent[0])
        return f"rate limit {tool.policy.rate_limit} reached; try again in {wait:.0f} s"

    def record(self, tool: Tool) -> None:
        self._calls[tool.name].append(self._clock())

    def _window(self, name: str, window: float) -> deque[float]:
        recent = self._calls[name]
        now = self._clock()
        while recent and now - recent[0] >= window:
            recent.popleft()
        return recent

"""What /healthz checks: each check's state, kept for a few seconds where a probe is costly,
and the two views of them (a word per check for anyone, details for operators)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ticketexport.services import Services


@dataclasses.dataclass(frozen=True)
class CheckState:
    """One check's answer: a one-word `state` ("ok", "unavailable", "pending", …) anyone
    may see, `details` (lags, pending migrations) for operators only, and whether it makes
    /healthz answer 503."""

    state: str
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    failing: bool = False


# A probe answers for one or more checks at once (those that share a database connection),
# by name; a check it leaves out is not configured and not reported.
Probe = Callable[["Services"], Awaitable[Mapping[str, CheckState]]]


class CachedCheck:
    """A probe whose answer is kept for `seconds` (0: probed for every request). While one
    request probes, others wait for its answer instead of probing too."""

    def __init__(self, probe: Probe, seconds: float) -> None:
        self._probe = probe
        self._seconds = seconds
        self._lock = asyncio.Lock()
        self._answer: Mapping[str, CheckState] | None = None
        self._taken_at = 0.0

    def _fresh(self) -> Mapping[str, CheckState] | None:
        if self._answer is not None and time.monotonic() - self._taken_at < self._seconds:
            return self._answer
        return None

    async def states(self, services: Services) -> Mapping[str, CheckState]:
        if self._seconds <= 0:
            return await self._probe(services)
        answer = self._fresh()
        if answer is not None:
            return answer
        async with self._lock:
            answer = self._fresh()
            if answer is None:
                answer = await self._probe(services)
                self._answer, self._taken_at = answer, time.monotonic()
        return answer


@dataclasses.dataclass(frozen=True)
class HealthReport:
    """Every check's state at one request, in the order of the checks."""

    checks: Mapping[str, CheckState]

    @property
    def healthy(self) -> bool:
        return not any(check.failing for check in self.checks.values())

    def public(self) -> dict[str, Any]:
        """For anyone: the status and one word per check."""
        body: dict[str, Any] = {"status": "ok" if self.healthy else "unhealthy"}
        body.update((name, check.state) for name, check in self.checks.items())
        return body

    def detailed(self) -> dict[str, Any]:
        """For operators: the same, plus each check's details."""
        body = self.public()
        body["details"] = {
            name: dict(check.details) for name, check in self.checks.items() if check.details
        }
        return body


class HealthChecks:
    """The checks /healthz runs, in order, probed together for each request."""

    def __init__(self, checks: Sequence[CachedCheck]) -> None:
        self._checks = tuple(checks)

    async def report(self, services: Services) -> HealthReport:
        answers = await asyncio.gather(*(check.states(services) for check in self._checks))
        return HealthReport({name: s for answer in answers for name, s in answer.items()})

"""The sign-in gate of one web process: a few sign-ins at a time, a bounded wait for the
rest, shared fairly between client networks, so a flood neither grows without end in
memory nor keeps everyone else out."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
from collections.abc import Hashable
from types import TracebackType


class Refused(Exception):
    """No place for this sign-in: the waiting places are taken (or it gave its own up to a
    network holding fewer). The client should come back later."""


@dataclasses.dataclass(eq=False)
class Place:
    """One sign-in's place at the gate, from its arrival until it is done."""

    gate: SignInGate
    key: Hashable
    order: int
    running: bool = False
    displaced: bool = False
    left: bool = False
    waiter: asyncio.Future[None] | None = None

    async def turn(self) -> None:
        """Wait until this sign-in may run; raises Refused if it was displaced meanwhile."""
        await self.gate._wait_for_turn(self)

    def __enter__(self) -> Place:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.gate._leave(self)


class SignInGate:
    """`running` sign-ins at a time; up to `waiting` more wait their turn, the rest are
    refused at once.

    Places and turns are shared between client networks. When every waiting place is
    taken, a newcomer from a network that holds fewer waiting places than the network
    holding the most takes the youngest of those (that sign-in is refused): a flood from
    a few networks cannot keep anyone else out. A turn that comes free goes to the waiting
    network with the fewest sign-ins running, among equals the one served longest ago (or
    never), and within a network to its oldest sign-in: a sign-in from elsewhere does not
    queue behind a flood.
    """

    def __init__(self, *, running: int, waiting: int) -> None:
        self.max_running = running
        self.max_waiting = waiting
        self._running: collections.Counter[Hashable] = collections.Counter()
        # Places not yet running, per network, oldest first.
        self._waiting: dict[Hashable, list[Place]] = {}
        self._order = itertools.count()
        # When each network present at the gate last got a turn (a count of turns given).
        self._served: dict[Hashable, int] = {}
        self._turns = itertools.count()
        # Sign-ins refused since the process started (for /metrics).
        self.refused = 0

    @property
    def running(self) -> int:
        return sum(self._running.values())

    @property
    def waiting(self) -> int:
        return sum(len(places) for places in self._waiting.values())

    @property
    def queued(self) -> int:
        """Of the waiting sign-ins, those through the throttle's check and waiting for a turn."""
        return sum(p.waiter is not None for places in self._waiting.values() for p in places)

    def enter(self, key: Hashable) -> Place:
        """A place for a sign-in from network `key`; raises Refused when there is none."""
        if self.waiting >= self.max_waiting + max(0, self.max_running - self.running):
            self._displace_for(key)
        place = Place(self, key, next(self._order))
        self._waiting.setdefault(key, []).append(place)
        return place

    def _displace_for(self, key: Hashable) -> None:
        mine = len(self._waiting.get(key, ()))
        fullest = max(self._waiting, key=lambda k: len(self._waiting[k]), default=None)
        if fullest is None or len(self._waiting[fullest]) <= mine + 1:
            self.refused += 1
            raise Refused
        youngest = self._waiting[fullest][-1]
        youngest.displaced = True
        self._remove_waiting(youngest)
        self.refused += 1
        if youngest.waiter is not None and not youngest.waiter.done():
            youngest.waiter.set_result(None)

    async def _wait_for_turn(self, place: Place) -> None:
        if not place.displaced and self.running < self.max_running and self._is_next(place):
            self._start(place)
            return
        if place.displaced:
            raise Refused
        place.waiter = asyncio.get_running_loop().create_future()
        try:
            await place.waiter
        finally:
            place.waiter = None
        if place.displaced:
            raise Refused
        assert place.running

    def _is_next(self, place: Place) -> bool:
        """Whether `place` is the one the next free turn goes to, among those waiting for
        a turn (a place still being checked by the throttle waits for none yet)."""
        chosen = self._next()
        return chosen is None or chosen is place

    def _next(self) -> Place | None:
        candidates = [
            next((p for p in places if p.waiter is not None), None)
            for places in self._waiting.values()
        ]
        waiting = [p for p in candidates if p is not None]
        if not waiting:
            return None
        return min(
            waiting, key=lambda p: (self._running[p.key], self._served.get(p.key, -1), p.order)
        )

    def _start(self, place: Place) -> None:
        self._remove_waiting(place)
        place.running = True
        self._running[place.key] += 1
        self._served[place.key] = next(self._turns)

    def _remove_waiting(self, place: Place) -> None:
        places = self._waiting[place.key]
        places.remove(place)
        if not places:
            del self._waiting[place.key]

    def _leave(self, place: Place) -> None:
        if place.left:
            return
        place.left = True
        if place.running:
            self._running[place.key] -= 1
            if not self._running[place.key]:
                del self._running[place.key]
        elif not place.displaced:
            # Gone before its turn (a throttled attempt, a cancelled request).
            self._remove_waiting(place)
        if place.key not in self._running and place.key not in self._waiting:
            # Kept only while the network is at the gate: memory follows the places.
            self._served.pop(place.key, None)
        self._hand_over()

    def _hand_over(self) -> None:
        """Give free turns to the places next in line."""
        while self.running < self.max_running:
            chosen = self._next()
            if chosen is None:
                return
            self._start(chosen)
            assert chosen.waiter is not None
            chosen.waiter.set_result(None)

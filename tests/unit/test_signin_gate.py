"""The sign-in gate on its own: places, refusals, displacement and whose turn is next."""

from __future__ import annotations

import asyncio

import pytest

from ticketexport.web.signin_gate import Refused, SignInGate


async def settle() -> None:
    """Let every task that can run do so (the gate itself never waits on time)."""
    for _ in range(5):
        await asyncio.sleep(0)


class Signing:
    """One sign-in through the gate, held in its turn until released."""

    def __init__(self, gate: SignInGate, key: str) -> None:
        self.key = key
        self.place = gate.enter(key)
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.refused = False
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        with self.place:
            try:
                await self.place.turn()
            except Refused:
                self.refused = True
                return
            self.started.set()
            await self.release.wait()


async def test_places_turns_and_refusals() -> None:
    gate = SignInGate(running=2, waiting=3)
    # Two run and three wait; from one network, a sixth is refused.
    signing = [Signing(gate, "a") for _ in range(5)]
    await settle()
    assert [s.started.is_set() for s in signing] == [True, True, False, False, False]
    assert (gate.running, gate.waiting, gate.queued) == (2, 3, 3)
    with pytest.raises(Refused):
        gate.enter("a")
    assert gate.refused == 1
    # A turn that comes free goes to the oldest waiting one.
    signing[0].release.set()
    await settle()
    assert [s.started.is_set() for s in signing] == [True, True, True, False, False]
    for s in signing:
        s.release.set()
    await asyncio.gather(*(s.task for s in signing))
    assert (gate.running, gate.waiting, gate.queued) == (0, 0, 0)


async def test_a_newcomer_from_elsewhere_takes_the_youngest_place_of_the_fullest() -> None:
    gate = SignInGate(running=1, waiting=4)
    flood = [Signing(gate, "flood") for _ in range(5)]
    await settle()
    real = Signing(gate, "real")
    await settle()
    # The flood's youngest gave its place up; the newcomer waits.
    assert [s.refused for s in flood] == [False, False, False, False, True]
    assert gate.waiting == 4
    assert gate.refused == 1
    # The next free turn is the newcomer's: its network has nothing running.
    flood[0].release.set()
    await settle()
    assert real.started.is_set()
    assert not any(s.started.is_set() for s in flood[1:])
    # The flood, holding the most waiting places, gets no more.
    other = Signing(gate, "other")
    await settle()
    assert not other.refused
    assert gate.waiting == 4
    with pytest.raises(Refused):
        gate.enter("flood")
    # Turns then go round: the network served longest ago first.
    real.release.set()
    await settle()
    assert other.started.is_set()
    other.release.set()
    await settle()
    assert flood[1].started.is_set()
    for s in [*flood, real, other]:
        s.release.set()
    await asyncio.gather(*(s.task for s in [*flood, real, other]))
    assert (gate.running, gate.waiting) == (0, 0)


async def test_a_place_left_before_its_turn_is_freed() -> None:
    gate = SignInGate(running=1, waiting=1)
    first = Signing(gate, "a")
    await settle()
    # Taken, then left without waiting for a turn (a throttled attempt).
    with gate.enter("b"):
        assert gate.waiting == 1
        with pytest.raises(Refused):
            gate.enter("a")
    assert gate.waiting == 0
    # A waiting one cancelled (its request ended) frees its place too.
    waiting = Signing(gate, "c")
    await settle()
    waiting.task.cancel()
    await settle()
    assert (gate.running, gate.waiting) == (1, 0)
    later = Signing(gate, "d")
    first.release.set()
    await settle()
    assert later.started.is_set()
    later.release.set()
    await asyncio.gather(first.task, later.task)
    assert (gate.running, gate.waiting) == (0, 0)

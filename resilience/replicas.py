"""A downstream's replica set, which may change while calls run: who may be picked, and who is leaving.

Why a set of its own: a downstream found by DNS (resilience.discovery) gains and loses replicas while it
serves calls, and four parts keep state per replica: Balance (calls in flight, latency), the breakers,
outlier detection and the transport (a channel each). They are its members: `update(addresses)` tells each of
them `joined(replica)` before a new replica can be picked, and `left(replica)` once a removed one is gone.

A replica that stays keeps everything: its breaker, its latency estimate, its ejection, its channel. A
removed replica leaves `live` at once, so no new attempt picks it, but it is only *leaving* while attempts
sent to it are in flight (Balance counts them in `in_flight`, from the pick to the attempt's end, whatever
the layers between do); when the last one ends, the members forget it and the transport closes its channel
(gracefully: `channel.close(grace)`). So a removal never fails a call already under way. A replica that comes
back while still leaving is simply live again, with its state.

With a static list of addresses nothing ever changes: the set is built once and no member is told anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol


class Member(Protocol):
    """A part of the stack that keeps state per replica."""

    def joined(self, replica: str) -> None:
        """`replica` is new: make its state (it may be picked as soon as every member has been told)."""
        ...

    def left(self, replica: str) -> None:
        """`replica` was removed and its last attempt has ended: forget it."""
        ...


@dataclass(frozen=True, slots=True)
class Change:
    """What an update did: replicas added and removed (each sorted)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


class Replicas:
    """The replicas of one downstream: `live` ones may be picked; `leaving` ones drain their calls in flight."""

    def __init__(self, addresses: Iterable[str] = (), empty: str = "no replica") -> None:
        """`empty` says why there is no replica while `live` is empty (the error a call then fails with)."""
        self.live: tuple[str, ...] = tuple(dict.fromkeys(addresses))
        self.in_flight: dict[str, int] = dict.fromkeys(self.live, 0)
        """Attempts picked for each replica and not ended yet (Balance counts them); live and leaving ones."""
        self.leaving: set[str] = set()
        self.empty = empty
        self.on_unreachable: Callable[[str], None] | None = None
        """Told of a replica that could not be reached (resilience.discovery resolves the name again soon)."""
        self._members: list[Member] = []

    def subscribe(self, member: Member) -> None:
        """Tell `member` of every replica that joins or leaves from now on (it starts from `live`)."""
        self._members.append(member)

    def known(self) -> tuple[str, ...]:
        """Every replica whose state is kept: the live ones, then those leaving."""
        return (*self.live, *sorted(self.leaving))

    def update(self, addresses: Iterable[str]) -> Change:
        """Make the live set `addresses` (in that order): new replicas join, missing ones start leaving."""
        wanted = tuple(dict.fromkeys(addresses))
        if wanted == self.live:
            return Change()
        now, before = set(wanted), set(self.live)
        added = sorted(now - before)
        removed = sorted(before - now)
        for replica in added:
            if replica in self.leaving:
                self.leaving.discard(replica)  # back before it was gone: it keeps its state
                continue
            self.in_flight[replica] = 0
            for member in self._members:
                member.joined(replica)
        self.live = wanted  # only now may the new ones be picked, and no longer the removed ones
        for replica in removed:
            self.leaving.add(replica)
            self.drained(replica)
        return Change(tuple(added), tuple(removed))

    def drained(self, replica: str) -> None:
        """Balance calls this when an attempt to a leaving replica ended: forget it once none is in flight."""
        if replica in self.leaving and not self.in_flight.get(replica, 0):
            self.leaving.discard(replica)
            del self.in_flight[replica]
            for member in self._members:
                member.left(replica)

    def unreachable(self, replica: str) -> None:
        """Balance calls this when an attempt found `replica` unreachable (UNAVAILABLE): it may be gone."""
        if self.on_unreachable is not None:
            self.on_unreachable(replica)

"""The gateway's side of the edge: it keeps HAProxy's rooms equal to its own admission limit's.

The limit moves with latency (resilience.admission.GradientLimit), so the edge cannot be given a number once: the
gateway looks at its rooms every `every` seconds and, when one changed (or `refresh` seconds passed, in case
HAProxy restarted with the rooms it started with), rewrites HAProxy's rooms map through its runtime API, in one
line of `set map` commands over its unix socket. That is a few hundred microseconds of the gateway's loop at most
twenty times a second. Between two pushes the edge may let in a few more than a limit that just fell; the
gateway's own admission takes up to `edge_headroom` more than the rooms (resilience.AdmissionConfig) and refuses
only past that, so its slow refusals are rare.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from pullgate.edge.haproxy import ROOMS_MAP
from resilience import Admission, Criticality

log = logging.getLogger("pullgate.edge")


class RuntimeApi:
    """HAProxy's runtime API on a unix socket: one connection per request, as HAProxy's non-interactive mode has
    it (it answers and closes)."""

    def __init__(self, socket: Path, timeout: float = 1.0) -> None:
        self.socket = socket
        self.timeout = timeout

    async def command(self, line: str) -> str:
        """Send one line (commands separated by `;`) and return HAProxy's answer; OSError if it cannot be reached."""
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_unix_connection(str(self.socket))
            try:
                writer.write(line.encode() + b"\n")
                await writer.drain()
                return (await reader.read()).decode(errors="replace")
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def set_rooms(self, rooms: Sequence[int], map_file: Path) -> None:
        """Make `rooms[level]` the room of each criticality level in the map; OSError naming what HAProxy said."""
        line = "; ".join(f"set map {map_file} {level} {room}" for level, room in enumerate(rooms))
        answer = (await self.command(line)).strip()
        if answer:  # each `set map` that succeeds answers nothing
            raise OSError(f"HAProxy at {self.socket} refused `{line}`: {answer.splitlines()[0]}")

    async def rooms(self, map_file: Path) -> dict[int, int]:
        """The rooms in force, by criticality level (what `set_rooms` last set, or the file's)."""
        return parse_rooms(await self.command(f"show map {map_file}"))

    async def in_flight(self) -> int:
        """The requests the edge has in flight to the gateway now."""
        return parse_in_flight(await self.command("show stat"))


def parse_rooms(answer: str) -> dict[int, int]:
    """The rooms by criticality level from HAProxy's answer to `show map <rooms.map>` (lines of id, key, value)."""
    rows = [line.split() for line in answer.splitlines() if line.strip()]
    return {int(level): int(room) for _, level, room in rows}


def parse_in_flight(answer: str) -> int:
    """The requests the edge has in flight to the gateway (`scur` of its server `gateway/gateway`), from HAProxy's
    answer to `show stat`; ValueError if the answer has no such server."""
    lines = answer.splitlines()
    header = lines[0].lstrip("# ").split(",") if lines else []
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == "gateway" and row.get("svname") == "gateway":
            return int(row["scur"])
    raise ValueError("no server gateway/gateway in the edge's stats")


class RoomsFollower:
    """Pushes an Admission's rooms to the edge whenever they change."""

    def __init__(self, admission: Admission, api: RuntimeApi, map_file: Path, *, every: float = 0.05,
                 refresh: float = 1.0, clock: Callable[[], float] | None = None) -> None:
        self.admission = admission
        self.api = api
        self.map_file = map_file
        self.every = every
        self.refresh = refresh
        self._clock = clock
        self.pushed: tuple[int, ...] | None = None
        """The rooms the edge last accepted, by level."""
        self.pushes = 0
        self._failing = False

    def rooms(self) -> tuple[int, ...]:
        return tuple(self.admission.room(level) for level in Criticality)

    async def step(self, now: float, last: float) -> float:
        """Push if the rooms changed or `refresh` passed since `last`; the time of the last push."""
        rooms = self.rooms()
        if rooms == self.pushed and now - last < self.refresh:
            return last
        try:
            await self.api.set_rooms(rooms, self.map_file)
        except (OSError, TimeoutError) as error:
            if not self._failing and self.pushes:  # before the first: the edge starts after its gateway
                log.warning("cannot set the edge's rooms (will retry): %s", error)
            self._failing = self.pushes > 0
            self.pushed = None
            return last
        if self._failing:
            log.info("the edge's rooms are set again: %s", dict(zip((c.name for c in Criticality), rooms, strict=True)))
        self._failing = False
        self.pushed = rooms
        self.pushes += 1
        return now

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        clock = self._clock or loop.time
        last = float("-inf")
        while True:
            last = await self.step(clock(), last)
            await asyncio.sleep(self.every)


@contextlib.asynccontextmanager
async def following(admission: Admission | None, socket: Path | None) -> AsyncIterator[RoomsFollower | None]:
    """While inside, the edge at `socket` follows `admission`'s rooms; nothing when either is None."""
    if admission is None or socket is None:
        yield None
        return
    follower = RoomsFollower(admission, RuntimeApi(socket), socket.parent / ROOMS_MAP)
    task = asyncio.create_task(follower.run(), name="edge rooms")
    log.info("the edge at %s follows this server's admission limit", socket)
    try:
        yield follower
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


__all__ = ["RoomsFollower", "RuntimeApi", "following", "parse_in_flight", "parse_rooms"]

"""The machine's CPU split between the system under test and the rest, and the capacity that leaves the system."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from pullgate.tools import machine
from pullgate.tools.launcher import STATE_FILE
from tests.support import until

pytestmark = pytest.mark.skipif(machine.machine_busy() is None, reason="needs Linux's /proc")


def test_room_is_what_the_rest_left_the_system() -> None:
    """Cores the system left idle still count as its room; only what the others used is taken away."""
    share = machine.Share(seconds=1.0, busy=1.5, system=1.0)
    assert share.others == 0.5 and share.room(2) == 1.5
    assert "room 1.50" in share.line(2)


def test_fair_capacity_scales_by_room_and_never_rises() -> None:
    measured = machine.Share(1.0, busy=1.9, system=1.7)  # room 1.8
    spike = machine.Share(1.0, busy=1.95, system=1.4)  # room 1.45
    assert machine.fair_capacity(360.0, measured, spike, 2) == pytest.approx(360.0 * 1.45 / 1.8)
    lighter = machine.Share(1.0, busy=1.0, system=0.95)  # the rest took less than while measuring
    assert machine.fair_capacity(360.0, measured, lighter, 2) == 360.0
    assert machine.fair_capacity(360.0, None, spike, 2) == 360.0
    assert machine.fair_capacity(360.0, measured, None, 2) == 360.0


def test_system_pids_come_from_the_launchers_state_file(tmp_path: Path) -> None:
    """The launcher, every server and the edge; nothing for a directory without a state file."""
    assert machine.system_pids(tmp_path) == []
    (tmp_path / STATE_FILE).write_text(json.dumps({
        "launcher_pid": 10, "services": {"gateway": [{"pid": 11}], "catalog": [{"pid": 12}, {"pid": None}]},
        "edge": {"pid": 13}}))
    assert sorted(machine.system_pids(tmp_path)) == [10, 11, 12, 13]


async def test_a_trace_counts_a_busy_process_as_the_systems() -> None:
    """A real process spinning on a core: the trace's window gives it to the system, and the machine was busy at
    least that much; once it is gone, it has no context switches to count."""
    spin = await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass")
    try:
        trace = machine.Trace(lambda: [spin.pid])
        first = time.monotonic()
        trace.sample()
        start = machine.own_cpu(spin.pid) or 0.0
        await until(lambda: (machine.own_cpu(spin.pid) or 0.0) - start >= 0.3)
        trace.sample()
        last = time.monotonic()
        share = trace.between(first, last)
        assert share is not None and share.system * share.seconds >= 0.3 - 0.02
        assert share.busy >= share.system - 0.05
        assert trace.between(last, first) is None
        assert trace.processes(first, last) == pytest.approx({spin.pid: share.system})
        assert trace.processes(last, first) == {}
    finally:
        spin.kill()
        await spin.wait()
    assert machine.switches(spin.pid) is None


async def test_a_process_that_sleeps_switches_voluntarily() -> None:
    """Each sleep is a voluntary context switch: 20 sleeps, at least 20 more."""
    sleeper = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys, time\nfor line in sys.stdin:\n    [time.sleep(0.001) for _ in range(20)]"
        "\n    print('done', flush=True)", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert sleeper.stdin is not None and sleeper.stdout is not None
    try:
        sleeper.stdin.write(b"go\n")
        await sleeper.stdin.drain()
        await sleeper.stdout.readline()
        before = machine.switches(sleeper.pid)
        sleeper.stdin.write(b"go\n")
        await sleeper.stdin.drain()
        await sleeper.stdout.readline()
        after = machine.switches(sleeper.pid)
        assert before is not None and after is not None
        assert after[0] - before[0] >= 20
    finally:
        sleeper.kill()
        await sleeper.wait()

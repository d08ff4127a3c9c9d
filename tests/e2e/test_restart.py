"""`pullgate up` on fixed ports: it starts again at once after a crash under traffic, refuses a port another
process listens on (naming that process), and says how each of its processes stopped."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

from pullgate.tools.launcher import Child, Launcher, UpSettings
from pullgate.tools.launcher import stopped_line as line_for


async def test_stop_says_how_each_process_ended(tmp_path: Path) -> None:
    """One line per process, in reverse start order: stopped, killed after ignoring SIGTERM, or already gone."""
    ignores_sigterm = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); " \
                      "time.sleep(60)"
    processes = [await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE)
                 for code in ("print(flush=True); import time; time.sleep(60)", ignores_sigterm,
                              "raise SystemExit(3)")]
    for process in processes:
        assert process.stdout is not None
        await process.stdout.readline()  # running, with its signal handling in place
    await processes[2].wait()
    launcher = Launcher(UpSettings(data_dir=tmp_path, stop_grace=0.5))
    launcher.children = [Child("gateway", 0, 0, process=processes[0]), Child("catalog", 1, 0, process=processes[1]),
                         Child("customers", 0, 0, process=processes[2])]
    lines: list[str] = []
    ended = await launcher.stop(report=lambda s: lines.append(line_for(s)))
    assert [s.name for s in ended] == ["gateway", "customers", "catalog-1"]
    assert re.fullmatch(rf"  gateway stopped \(pid {processes[0].pid}, [\d.]+s\)", lines[0])
    assert lines[1] == f"  customers had already exited (pid {processes[2].pid}, code 3)"
    assert re.fullmatch(rf"  catalog-1 did not stop on SIGTERM; killed \(pid {processes[1].pid}, [\d.]+s\)", lines[2])
    assert processes[1].returncode == -signal.SIGKILL

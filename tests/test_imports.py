"""`pullgate serve`, which every server process runs, imports neither matplotlib nor psycopg (the tools' needs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("matplotlib", "numpy", "PIL", "psycopg", "psycopg_pool")

# A fresh interpreter, so nothing another test imported counts. The server is built as `pullgate serve NAME`
# builds it (config, flags, its app) but not run: loops.run gets the coroutine and closes it.
SCRIPT = """
import json, sys
HEAVY = %r
seen = {}
def heavy(step):
    seen[step] = sorted(m for m in HEAVY if m in sys.modules)

import pullgate.tools.cli as cli
heavy("import pullgate.tools.cli")

from pullgate import loops, topology
def not_serving(main, name=loops.DEFAULT):
    main.close()
loops.run = not_serving
for name in topology.names():
    assert cli.main(["serve", name, "--data-dir", %r]) == 0, name
    heavy(f"pullgate serve {name}")

# The tools still load what they need, when they are used (and the check above can see it).
cli.build_parser().parse_args(["db", "init", "--admin-url", "postgresql://admin@127.0.0.1:5432/postgres"])
heavy("pullgate db init")
cli.build_parser().parse_args(["chaos"])
heavy("pullgate chaos")
print(json.dumps(seen))
"""


def test_serve_imports_no_tool_dependencies(tmp_path: Path) -> None:
    script = SCRIPT % (HEAVY, str(tmp_path / "var"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    seen: dict[str, list[str]] = json.loads(done.stdout.splitlines()[-1])
    tools = ("pullgate db init", "pullgate chaos")
    serving = {step: modules for step, modules in seen.items() if step not in tools}
    assert len(serving) > 1
    assert serving == {step: [] for step in serving}
    assert {"psycopg"} <= set(seen["pullgate db init"])
    assert {"matplotlib", "numpy"} <= set(seen["pullgate chaos"])

"""Which event loop a pullgate process runs on: asyncio's own (the default) or uvloop, chosen with `--loop`.

uvloop is optional (`pip install 'pullgate[uvloop]'`): it is the default only if it earns it, and
docs/performance.md has the measurement that decides (issue 17). Every process of a `pullgate up` runs on the
loop the launcher was given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

LOOPS = ("asyncio", "uvloop")
DEFAULT = "asyncio"


class LoopUnavailable(RuntimeError):
    """The loop asked for cannot be had here; the message says how to get it."""


def check(name: str) -> None:
    """LoopUnavailable unless `name` can run in this environment."""
    if name not in LOOPS:
        raise LoopUnavailable(f"--loop: unknown loop {name!r}; expected one of {', '.join(LOOPS)}")
    if name == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise LoopUnavailable(
                "--loop uvloop: uvloop is not installed; install it with pip install 'pullgate[uvloop]' "
                "(Linux and macOS only)") from None


def run(main: Coroutine[Any, Any, T], name: str = DEFAULT) -> T:
    """Run `main` to completion on a new event loop of kind `name`, as asyncio.run does."""
    check(name)
    if name == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


__all__ = ["DEFAULT", "LOOPS", "LoopUnavailable", "check", "run"]

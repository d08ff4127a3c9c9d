"""What the stack costs per call, in instructions: repeatable figures for comparing two versions of the layer.

Latency on a shared 2-core machine moves by several percent from run to run, more than most changes to the
layer do. valgrind's callgrind counts the instructions a run executes instead, and gives the same count
whatever else the machine is doing. Each configuration runs the stack against a scripted endpoint (one turn
of the event loop, no grpc, no other process) for 1000 and for 3000 calls, so that start-up cancels out:
instructions per call = (I(3000) - I(1000)) / 2000. Every call is a cache miss (a new request each time),
except in the cache-hit row.

    python -m benchmarks instructions        # needs valgrind (Debian: apt-get install valgrind)
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pullgate.catalog.v1 import catalog_pb2
from pullgate.methods import GET_PRODUCT
from resilience import CacheConfig, Downstream, DownstreamConfig, HedgingConfig
from resilience.context import CallContext

CONFIGS: dict[str, DownstreamConfig | None] = {
    "endpoint alone (no stack)": None,
    "stack w/o cache and hedging": DownstreamConfig(cache=CacheConfig(enabled=False),
                                                    hedging=HedgingConfig(enabled=False)),
    "stack + hedging": DownstreamConfig(cache=CacheConfig(enabled=False)),
    "stack + cache": DownstreamConfig(hedging=HedgingConfig(enabled=False)),
    "full stack, cache miss": DownstreamConfig(),
    "full stack, cache hit": DownstreamConfig(),
}
SHORT, LONG = 1000, 3000


RESPONSE = catalog_pb2.GetProductResponse()


async def _endpoint(request: Any, ctx: CallContext | None) -> Any:
    await asyncio.sleep(0)  # one turn of the loop, as a network answer takes
    return RESPONSE


async def _calls(name: str, n: int) -> None:
    """`n` calls (after 500 to warm up) of configuration `name`: the worker that callgrind counts."""
    config = CONFIGS[name]
    hit = name.endswith("hit")
    requests = [catalog_pb2.GetProductRequest(sku="hot" if hit else f"m{i}") for i in range(500 + n)]
    if config is None:
        for request in requests:
            await _endpoint(request, None)
        return
    downstream = Downstream("catalog", ["replica:1"], config, endpoint=_endpoint)
    for request in requests:
        await downstream.call(GET_PRODUCT, request)


def _count(name: str, n: int) -> int:
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, "-m", "benchmarks.instructions", "--worker", name, str(n)],
        capture_output=True, text=True, check=True,
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no count for {name!r}:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def _per_call(name: str) -> int:
    return (_count(name, LONG) - _count(name, SHORT)) // (LONG - SHORT)


async def run(quick: bool = False) -> None:
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind); nothing measured")
        raise SystemExit(2)
    with ThreadPoolExecutor(max_workers=2) as pool:  # each count is single-threaded; load does not change it
        counts = dict(zip(CONFIGS, pool.map(_per_call, CONFIGS), strict=True))
    base = counts["endpoint alone (no stack)"]
    print("instructions per call (callgrind), scripted endpoint, Python "
          f"{sys.version.split()[0]}; repeatable, unlike latency on a shared machine")
    print(f"{'configuration':30} {'instructions':>13} {'stack alone':>12}")
    for name, count in counts.items():
        alone = count if name.endswith("hit") else count - base  # a hit never reaches the endpoint
        print(f"{name:30} {count:13,d} {alone:12,d}")
    miss, bare = counts["full stack, cache miss"], counts["stack w/o cache and hedging"]
    print(f"cache and single-flight on a miss: {miss - counts['stack + hedging']:,d}; "
          f"hedging: {miss - counts['stack + cache']:,d}; the rest of the stack: {bare - base:,d}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        asyncio.run(_calls(sys.argv[2], int(sys.argv[3])))
    else:
        asyncio.run(run())

"""Run the benchmarks: `python -m benchmarks [NAME] [--quick]`, NAME one of resilience (the default), tracing,
instructions, admission, overload, loop, dashboard, gateway.

`overload` also takes `--out DIR` (where its pictures go), `--only spike,gray,tail,cost` and `--generator` (native
or Python load workers); `dashboard` (the Grafana panels drawn from a real run's Prometheus data) takes `--out DIR`
too (default docs/), and so does `gateway` (pullgate's gateway against a hand-written one; its bar chart).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from benchmarks import (
    admission_bench,
    dashboard_bench,
    gateway_bench,
    instructions,
    loop_bench,
    overload_bench,
    resilience_bench,
    tracing_bench,
)
from benchmarks.overload_bench import GENERATORS


def scenarios(text: str) -> tuple[str, ...]:
    """`spike,tail` -> ("spike", "tail"); an unknown name is an argparse error naming the known ones."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in overload_bench.SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list of "
                                         f"{', '.join(overload_bench.SCENARIOS)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", default="resilience",
                        choices=["resilience", "tracing", "instructions", "admission", "overload", "loop", "dashboard",
                                 "gateway"])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run, noisier figures)")
    parser.add_argument("--out", type=Path, default=None,
                        help="overload, dashboard: where the PNGs go (default: . for overload, docs/ for dashboard)")
    parser.add_argument("--only", type=scenarios, default=overload_bench.SCENARIOS,
                        help="overload: the scenarios to run, e.g. spike,gray (default: all)")
    parser.add_argument("--generator", choices=GENERATORS, default="auto",
                        help="overload: the load workers: native (loadgen.c, built with cc; a few us of CPU a call), "
                             "python (grpc.aio, ~0.4 ms a call), or auto (native where it builds; the default)")
    parser.add_argument("--edge", choices=("auto", "haproxy", "off"), default="auto",
                        help="overload: every system's `pullgate up --edge` (default auto: HAProxy in front of the "
                             "gateway when it is installed)")
    args = parser.parse_args()
    if args.which == "loop":
        asyncio.run(loop_bench.run(quick=args.quick))
        return
    if args.which == "gateway":
        asyncio.run(gateway_bench.run(quick=args.quick, out=args.out or Path(".")))
        return
    if args.which == "dashboard":
        asyncio.run(dashboard_bench.run(quick=args.quick, out=args.out or Path("docs")))
        return
    if args.which == "overload":
        asyncio.run(overload_bench.run(quick=args.quick, out=args.out or Path("."), only=args.only, edge=args.edge,
                                        generator=args.generator))
        return
    bench = {
        "resilience": resilience_bench, "tracing": tracing_bench, "instructions": instructions,
        "admission": admission_bench,
    }[args.which]
    asyncio.run(bench.run(quick=args.quick))


if __name__ == "__main__":
    main()

"""Run the benchmarks: `python -m benchmarks [resilience|tracing|instructions|admission] [--quick]`."""

from __future__ import annotations

import argparse
import asyncio

from benchmarks import admission_bench, instructions, resilience_bench, tracing_bench


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "which", nargs="?", default="resilience", choices=["resilience", "tracing", "instructions", "admission"]
    )
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run, noisier figures)")
    args = parser.parse_args()
    bench = {
        "resilience": resilience_bench, "tracing": tracing_bench, "instructions": instructions,
        "admission": admission_bench,
    }[args.which]
    asyncio.run(bench.run(quick=args.quick))


if __name__ == "__main__":
    main()

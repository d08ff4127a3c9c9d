"""The resilience benchmark still runs end to end (a few calls of each part; its figures are not judged here)."""

from __future__ import annotations

from benchmarks import resilience_bench


async def test_the_resilience_benchmark_measures_every_row() -> None:
    """Each part runs against real owner processes and prints a row with latencies and its note."""
    rows = await resilience_bench.overhead(20)
    rows += await resilience_bench.tail(24)
    rows += await resilience_bench.open_loop(24)
    rows += await resilience_bench.fail_fast(20)
    names = [row.name for row in rows]
    assert names == [
        "raw grpc.aio stub",
        "full stack, cache miss",
        "full stack, cache hit",
        "stack w/o cache",
        "stack w/o cache+hedging",
        "2% x 500 ms, hedging off",
        "2% x 500 ms, hedging on",
        "3 x 2% x 500 ms, open, 1 hedge",
        "3 x 2% x 500 ms, open, 2 hedges",
        "owner killed, breaker open",
    ]
    assert all(len(row.latencies) > 0 and all(t > 0 for t in row.latencies) for row in rows)
    assert "target <= 1.10x" in rows[1].note
    assert "extra requests" in rows[6].note
    table = resilience_bench.table(rows)
    assert all(name in table for name in names)

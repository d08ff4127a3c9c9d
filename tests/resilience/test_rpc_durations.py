"""The hand-kept standard RPC duration histogram: buckets as Prometheus reads them, series per method and code."""

from __future__ import annotations

from resilience import RpcDurations

PATH = "/pullgate.catalog.v1.CatalogService/GetProduct"


def test_a_duration_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() -> None:
    """Prometheus buckets are `le`: 0.5 ms counts under 0.5, 0.6 ms under 1, 20 s only under +Inf."""
    histogram = RpcDurations("rpc.test.duration", "test")
    try:
        for seconds in (0.0005, 0.0006, 20.0):
            histogram.record(PATH, 0, seconds)
        (series,) = histogram.collect()
        bounds = dict(zip((*RpcDurations.bounds, float("inf")), series.cumulative, strict=True))
        assert (bounds[0.5], bounds[1], bounds[10000], bounds[float("inf")]) == (1, 2, 2, 3)
        assert series.count == 3
        assert series.total_ms == 0.5 + 0.6 + 20000.0
        assert (series.service, series.method, series.code) == ("pullgate.catalog.v1.CatalogService", "GetProduct", 0)
    finally:
        RpcDurations.instances.remove(histogram)


def test_each_method_and_status_code_is_its_own_series() -> None:
    histogram = RpcDurations("rpc.test.duration", "test")
    try:
        histogram.record(PATH, 0, 0.001)
        histogram.record(PATH, 5, 0.001)
        histogram.record(PATH.replace("GetProduct", "BatchGetProducts"), 0, 0.001)
        histogram.record(PATH, 0, 0.001)
        counts = {(s.method, s.code): s.count for s in histogram.collect()}
        assert counts == {("GetProduct", 0): 2, ("GetProduct", 5): 1, ("BatchGetProducts", 0): 1}
        histogram.clear()
        assert list(histogram.collect()) == []
    finally:
        RpcDurations.instances.remove(histogram)

"""The hand-kept hot-path metrics: buckets as Prometheus reads them, a series per key, labels made at collection."""

from __future__ import annotations

import pytest

from resilience import Counter, Histogram, RpcDurations

PATH = "/pullgate.catalog.v1.CatalogService/GetProduct"


def test_a_duration_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() -> None:
    """Prometheus buckets are `le`: 0.5 ms counts under 0.5, 0.6 ms under 1, 20 s only under +Inf."""
    histogram = RpcDurations("rpc.test.duration", "test")
    try:
        for seconds in (0.0005, 0.0006, 20.0):
            histogram.record((PATH, 0), seconds)
        (series,) = histogram.collect()
        bounds = dict(zip((*histogram.bounds, float("inf")), series.cumulative, strict=True))
        assert (bounds[0.5], bounds[1], bounds[10000], bounds[float("inf")]) == (1, 2, 2, 3)
        assert series.count == 3
        assert series.total == pytest.approx(0.5 + 0.6 + 20000.0)
        assert series.labels == ("grpc", "pullgate.catalog.v1.CatalogService", "GetProduct", "0")
        assert histogram.name == "rpc_test_duration_milliseconds"
    finally:
        histogram.forget()


def test_each_key_is_its_own_series_labelled_at_collection() -> None:
    histogram = Histogram("test_seconds", "test", ("downstream", "method", "outcome"), (0.001, 0.01))
    try:
        for key in (("catalog", "GetProduct", "success"), ("catalog", "GetProduct", "failure"),
                    ("catalog", "BatchGetProducts", "success"), ("catalog", "GetProduct", "success")):
            histogram.record(key, 0.005)
        counts = {s.labels: s.count for s in histogram.collect()}
        assert counts == {("catalog", "GetProduct", "success"): 2, ("catalog", "GetProduct", "failure"): 1,
                          ("catalog", "BatchGetProducts", "success"): 1}
        assert histogram in Histogram.instances
        histogram.clear()
        assert list(histogram.collect()) == []
    finally:
        histogram.forget()
    assert histogram not in Histogram.instances


def test_a_counter_counts_per_key() -> None:
    counter = Counter("test_lookups", "test", ("downstream", "result"))
    try:
        counter.add(("catalog", "hit"))
        counter.add(("catalog", "hit"))
        counter.add(("catalog", "miss"), 3)
        assert dict(counter.collect()) == {("catalog", "hit"): 2, ("catalog", "miss"): 3}
    finally:
        counter.forget()
    assert counter not in Counter.instances

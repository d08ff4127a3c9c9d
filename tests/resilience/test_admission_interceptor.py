"""The admission interceptor around a handler, on a fake clock and a fake servicer context: who gets in, who not."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

import grpc
import pytest
from opentelemetry.metrics import CallbackOptions, Observation

from resilience import criticality, instruments
from resilience.admission import AdmissionConfig
from resilience.criticality import Criticality
from resilience.errors import OVERLOADED_METADATA, REFUSED_METADATA
from resilience.server import AdmissionInterceptor
from resilience.testing import FakeClock, settle

SERVICE = "pullgate.catalog.v1.CatalogService"
GET = f"/{SERVICE}/GetProduct"
BATCH = f"/{SERVICE}/BatchGetProducts"
HEALTH = "/grpc.health.v1.Health/Check"
FIXED = AdmissionConfig(initial_limit=4, min_limit=4, max_limit=4, sheddable_share=0.5, sheddable_plus_share=0.5)


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class Context:
    """What the interceptor reads of a grpc.aio servicer context, and what it sets on a refusal."""

    def __init__(self, metadata: Sequence[tuple[str, Any]] = (), remaining: float | None = None) -> None:
        self._metadata = tuple(metadata)
        self._remaining = remaining
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.trailers: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return self._remaining

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, trailers: tuple[tuple[str, str], ...]) -> None:
        self.trailers = trailers


class Handler:
    """A handler that takes `latency` seconds on the clock and records the criticality in force."""

    def __init__(self, clock: FakeClock, latency: float = 0.0) -> None:
        self.clock = clock
        self.latency = latency
        self.ran: list[Criticality | None] = []

    async def __call__(self, request: Any, context: Any) -> str:
        self.ran.append(criticality.current())
        if self.latency:
            await self.clock.sleep(self.latency)
        return "answer"


def governed(
    interceptor: AdmissionInterceptor, handler: Handler, method: str = GET
) -> Callable[[Any, Context], Coroutine[Any, Any, Any]]:
    """The handler as the interceptor wraps it, called with a fake context."""
    wrapped = interceptor.wrap(handler, Details(method))
    assert wrapped is not None

    async def call(request: Any, context: Context) -> Any:
        return await wrapped(request, context)  # type: ignore[arg-type]

    return call


def asking(level: str) -> tuple[tuple[str, str], ...]:
    return ((criticality.METADATA_KEY, level),)


async def test_with_the_limit_nearly_used_sheddable_is_refused_and_critical_admitted() -> None:
    """Two of four places taken: SHEDDABLE (half the limit) is refused at once, CRITICAL gets in."""
    clock = FakeClock()
    interceptor = AdmissionInterceptor([SERVICE], FIXED, name="catalog", clock=clock)
    handler = Handler(clock, latency=1.0)
    call = governed(interceptor, handler)
    busy = [asyncio.create_task(call("r", Context())) for _ in range(2)]
    await settle()
    shed = Context(asking("SHEDDABLE"))
    assert await call("r", shed) is None
    assert shed.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (OVERLOADED_METADATA, "1") in shed.trailers
    assert (REFUSED_METADATA, "limit") in shed.trailers
    assert "catalog overloaded: 2 requests in flight, limit 4 (SHEDDABLE requests may fill 2 of them)" in shed.details
    critical = asyncio.create_task(call("r", Context(asking("CRITICAL"))))
    await settle()
    assert handler.ran == [Criticality.CRITICAL] * 3
    await clock.advance(1.0)
    assert await critical == "answer"
    await asyncio.gather(*busy)
    assert interceptor.admission is not None and interceptor.admission.in_flight == 0
    stats = interceptor.methods[GET]
    assert stats.refused_limit[Criticality.SHEDDABLE] == 1
    assert stats.admitted[Criticality.CRITICAL] == 3


async def test_at_the_limit_even_critical_is_refused_without_running_the_handler() -> None:
    """Four of four places taken: a CRITICAL request is refused, and the handler is not run for it."""
    clock = FakeClock()
    interceptor = AdmissionInterceptor([SERVICE], FIXED, clock=clock)
    handler = Handler(clock, latency=1.0)
    call = governed(interceptor, handler)
    busy = [asyncio.create_task(call("r", Context())) for _ in range(4)]
    await settle()
    refused = Context()
    assert await call("r", refused) is None
    assert refused.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.details.startswith("server overloaded: 4 requests in flight, limit 4;")
    assert len(handler.ran) == 4
    await clock.advance(1.0)
    await asyncio.gather(*busy)


async def test_a_request_with_too_little_deadline_left_is_refused_at_arrival() -> None:
    """Once the method has taken 50 ms a few times, a request with 10 ms left is refused before it starts."""
    clock = FakeClock()
    interceptor = AdmissionInterceptor([SERVICE], AdmissionConfig(), clock=clock)
    handler = Handler(clock, latency=0.050)
    call = governed(interceptor, handler)
    for _ in range(20):
        task = asyncio.create_task(call("r", Context(remaining=1.0)))
        await clock.advance(0.050)
        assert await task == "answer"
    late = Context(remaining=0.010)
    assert await call("r", late) is None
    assert late.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert late.trailers == ((REFUSED_METADATA, "deadline"),)
    assert late.details.startswith("not started: 10.0 ms left of the deadline, and GetProduct has recently taken")
    assert len(handler.ran) == 20
    assert interceptor.methods[GET].refused_deadline[Criticality.CRITICAL] == 1
    in_time = asyncio.create_task(call("r", Context(remaining=0.200)))
    await clock.advance(0.050)
    assert await in_time == "answer"


async def test_the_deadline_check_is_per_method_and_can_be_switched_off() -> None:
    """A slow method's service time does not refuse another method's requests; check_deadline=False refuses none."""
    clock = FakeClock()
    interceptor = AdmissionInterceptor([SERVICE], AdmissionConfig(), clock=clock)
    slow = governed(interceptor, Handler(clock, latency=0.5), BATCH)
    for _ in range(20):
        task = asyncio.create_task(slow("r", Context(remaining=1.0)))
        await clock.advance(0.5)
        await task
    assert await governed(interceptor, Handler(clock), GET)("r", Context(remaining=0.010)) == "answer"
    unchecked = AdmissionInterceptor([SERVICE], AdmissionConfig(check_deadline=False), clock=clock)
    call = governed(unchecked, Handler(clock, latency=0.5))
    for _ in range(20):
        task = asyncio.create_task(call("r", Context(remaining=1.0)))
        await clock.advance(0.5)
        await task
    last = asyncio.create_task(call("r", Context(remaining=0.010)))
    await clock.advance(0.5)
    assert await last == "answer"


@pytest.mark.parametrize(
    ("own", "sent", "effective"),
    [
        (Criticality.CRITICAL, None, Criticality.CRITICAL),
        (Criticality.SHEDDABLE, None, Criticality.SHEDDABLE),
        (Criticality.CRITICAL, "SHEDDABLE", Criticality.SHEDDABLE),
        (Criticality.CRITICAL, "SHEDDABLE_PLUS", Criticality.SHEDDABLE_PLUS),
        (Criticality.SHEDDABLE, "CRITICAL", Criticality.SHEDDABLE),
        (Criticality.CRITICAL, "CRITICAL_PLUS", Criticality.CRITICAL),
        (Criticality.CRITICAL, "sheddable", Criticality.SHEDDABLE),
        (Criticality.SHEDDABLE, "bogus", Criticality.SHEDDABLE),
        (Criticality.CRITICAL, "", Criticality.CRITICAL),
        (Criticality.CRITICAL, "2", Criticality.CRITICAL),
        (Criticality.CRITICAL, "CRITICAL_PLUS_PLUS", Criticality.CRITICAL),
        (Criticality.CRITICAL, b"SHEDDABLE", Criticality.CRITICAL),
    ],
    ids=lambda v: repr(v),
)
async def test_a_caller_may_lower_the_criticality_but_never_raise_it(
    own: Criticality, sent: Any, effective: Criticality
) -> None:
    """The handler runs at the lower of the sent level and the method's own; anything garbled counts as absent."""
    clock = FakeClock()
    interceptor = AdmissionInterceptor([SERVICE], FIXED, criticality={GET: own}, clock=clock)
    handler = Handler(clock)
    metadata = () if sent is None else (("user-agent", "test"), (criticality.METADATA_KEY, sent))
    assert await governed(interceptor, handler)("r", Context(metadata)) == "answer"
    assert handler.ran == [effective]
    assert criticality.current() is None


async def test_with_admission_off_nothing_is_refused_and_criticality_still_travels() -> None:
    """enabled=False: the limit and the deadline check are gone, the criticality is still in force."""
    clock = FakeClock()
    interceptor = AdmissionInterceptor([SERVICE], AdmissionConfig(enabled=False), clock=clock)
    assert interceptor.admission is None
    handler = Handler(clock, latency=1.0)
    call = governed(interceptor, handler)
    tasks = [asyncio.create_task(call("r", Context(asking("SHEDDABLE"), remaining=0.0))) for _ in range(300)]
    await clock.advance(1.0)
    assert await asyncio.gather(*tasks) == ["answer"] * 300
    assert handler.ran == [Criticality.SHEDDABLE] * 300


def test_only_the_named_services_are_governed() -> None:
    """Health, reflection and any service not named are left untouched."""
    interceptor = AdmissionInterceptor([SERVICE], FIXED)
    handler = Handler(FakeClock())
    assert interceptor.wrap(handler, Details(HEALTH)) is None
    assert interceptor.wrap(handler, Details("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")) is None
    assert interceptor.wrap(handler, Details(GET)) is not None


@pytest.mark.parametrize("path", [f"/{SERVICE}", "GetProduct", "/other.Service/GetProduct", f"/{SERVICE}/a/b"])
def test_a_method_criticality_must_name_a_governed_method(path: str) -> None:
    """A criticality for a path that is not a governed method is a mistake, said at construction."""
    with pytest.raises(ValueError, match="criticality"):
        AdmissionInterceptor([SERVICE], criticality={path: Criticality.SHEDDABLE})


def test_criticality_scope_only_lowers_and_sets_the_outgoing_metadata() -> None:
    """Inside scope(), outgoing calls carry the level; a nested scope may lower it, not raise it."""
    assert criticality.outgoing_metadata() is None
    with criticality.scope(Criticality.SHEDDABLE_PLUS) as level:
        assert level is Criticality.SHEDDABLE_PLUS
        assert criticality.outgoing_metadata() == ((criticality.METADATA_KEY, "SHEDDABLE_PLUS"),)
        with criticality.scope(Criticality.CRITICAL_PLUS):
            assert criticality.current() is Criticality.SHEDDABLE_PLUS
        with criticality.scope(Criticality.SHEDDABLE):
            assert criticality.current() is Criticality.SHEDDABLE
    assert criticality.current() is None


async def test_the_metrics_report_the_limit_in_flight_and_each_decision() -> None:
    """The observable instruments read the interceptor: limit, in flight, admitted and refused by reason."""
    clock = FakeClock()
    interceptor = AdmissionInterceptor([SERVICE], FIXED, name="metrics-test", clock=clock)
    call = governed(interceptor, Handler(clock, latency=1.0))
    busy = [asyncio.create_task(call("r", Context())) for _ in range(2)]
    await settle()
    await call("r", Context(asking("SHEDDABLE")))
    options = CallbackOptions()

    def mine(observations: Iterable[Observation]) -> list[tuple[float, dict[str, Any]]]:
        return [
            (o.value, dict(o.attributes or {}))
            for o in observations
            if (o.attributes or {}).get("server") == "metrics-test"
        ]

    assert mine(instruments._admission_gauge("limit")(options)) == [(4, {"server": "metrics-test"})]
    assert mine(instruments._admission_gauge("in_flight")(options)) == [(2, {"server": "metrics-test"})]
    labels = {"server": "metrics-test", "method": "GetProduct"}
    assert mine(instruments._admission_counts(options, refused=False)) == [(2, {**labels, "criticality": "CRITICAL"})]
    # Every level seen has both refusal series, at 0 until its first refusal.
    refused = mine(instruments._admission_counts(options, refused=True))
    assert sorted(refused, key=lambda r: sorted(r[1].items())) == [
        (0, {**labels, "criticality": "CRITICAL", "reason": "deadline"}),
        (0, {**labels, "criticality": "CRITICAL", "reason": "limit"}),
        (0, {**labels, "criticality": "SHEDDABLE", "reason": "deadline"}),
        (1, {**labels, "criticality": "SHEDDABLE", "reason": "limit"}),
    ]
    await clock.advance(1.0)
    await asyncio.gather(*busy)

"""The server side of the layer: deadline propagation, admission control, and the base for interceptors that
wrap unary handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar

import grpc

from resilience import criticality, deadline
from resilience.admission import Admission, AdmissionConfig, ServiceTime
from resilience.clock import SYSTEM_CLOCK, Clock
from resilience.criticality import Criticality
from resilience.errors import OVERLOADED_METADATA, REFUSED_METADATA
from resilience.instruments import watch_admission

Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
"""A unary-unary handler: (request, context) -> response."""


class HandlerMemo:
    """The wrapped handler made for each inner handler, so a method's handler is wrapped once, not per call.

    grpc.aio asks every interceptor for a handler on every call, and an interceptor that wraps builds a new
    closure and a new RpcMethodHandler each time. When the wrapping depends only on the inner handler (and so
    on the method), the result can be kept: grpc returns the same handler object for a method on every call,
    and so does an interceptor below that keeps its own. Bounded: an inner interceptor that wraps afresh per
    call (fault injection draws its faults per call) only makes this start over now and then.
    """

    __slots__ = ("_kept",)
    LIMIT: ClassVar[int] = 256

    def __init__(self) -> None:
        self._kept: dict[int, tuple[Any, Any]] = {}

    def get(self, handler: Any) -> Any | None:
        found = self._kept.get(id(handler))
        return found[1] if found is not None and found[0] is handler else None

    def put(self, handler: Any, wrapped: Any) -> Any:
        if len(self._kept) >= self.LIMIT:
            self._kept.clear()
        self._kept[id(handler)] = (handler, wrapped)  # the handler is kept alive, so its id stays its own
        return wrapped


class UnaryInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """A server interceptor for unary-unary calls; a subclass says in `wrap()` how to wrap a handler."""

    per_method: ClassVar[bool] = True
    """`wrap()` depends only on the handler and its method, so its result is kept per handler (HandlerMemo).
    False for an interceptor that decides per call (fault injection)."""

    def wrap(self, behavior: Behavior, details: grpc.HandlerCallDetails) -> Behavior | None:
        """The handler to run instead of `behavior`, or None to leave the call untouched."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        memo: HandlerMemo | None = None
        if self.per_method:
            memo = self.__dict__.get("_memo")
            if memo is None:
                memo = self.__dict__["_memo"] = HandlerMemo()
            kept: grpc.RpcMethodHandler[Any, Any] | None = memo.get(handler)
            if kept is not None:
                return kept
        wrapped = self.wrap(handler.unary_unary, handler_call_details)  # type: ignore[arg-type]
        result = handler if wrapped is None else grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        return result if memo is None else memo.put(handler, result)


class DeadlineInterceptor(UnaryInterceptor):
    """Runs each unary-unary handler inside `deadline.scope()` of the caller's deadline.

    Every call made through the layer while the handler runs is then bounded by what is left of the
    caller's deadline, without any servicer passing timeouts by hand.
    """

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock

    def wrap(self, behavior: Behavior, details: grpc.HandlerCallDetails) -> Behavior:
        clock = self._clock

        async def bounded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            remaining = context.time_remaining()
            incoming = None if remaining is None else deadline.Deadline.after(remaining, clock)
            with deadline.scope(incoming):
                return await behavior(request, context)

        return bounded


_LEVELS = len(Criticality)
_OVERLOADED_TRAILER = ((OVERLOADED_METADATA, "1"), (REFUSED_METADATA, "limit"))
_LATE_TRAILER = ((REFUSED_METADATA, "deadline"),)


class MethodAdmissions:
    """One governed method: its own criticality, its recent service time, and what admission did with its
    requests (counts by criticality, for the metrics)."""

    __slots__ = ("admitted", "name", "own", "path", "refused_deadline", "refused_limit", "service_time")

    def __init__(self, path: str, own: Criticality, percentile: float) -> None:
        self.path = path
        self.name = path.rpartition("/")[2]
        self.own = own
        self.service_time = ServiceTime(percentile)
        self.admitted = [0] * _LEVELS
        self.refused_limit = [0] * _LEVELS
        self.refused_deadline = [0] * _LEVELS


class AdmissionInterceptor(UnaryInterceptor):
    """Admits a request to an application service only while the server can still answer it in time.

    Each request's criticality is the lower of what the caller sent (`resilience-criticality` metadata) and
    the method's own (`criticality`, keyed by full method path; CRITICAL when not given); it is in force
    (`resilience.criticality.current()`) while the handler runs, so the calls the handler makes carry it on.
    Then, before the handler runs, a request is refused:

    - with DEADLINE_EXCEEDED, when it has less time left than its method has recently taken at the least
      (`check_deadline`; trailer `resilience-refused: deadline`);
    - with RESOURCE_EXHAUSTED, when its criticality's share of the adaptive limit is full (trailers
      `resilience-overloaded: 1` and `resilience-refused: limit`).

    A refusal runs no handler and makes no task: the status is set and the call returns. Only the unary
    methods of `services` are governed; health, reflection and anything else named elsewhere pass untouched.
    With `config.enabled` false nothing is refused, and criticality still travels. See docs/overload.md.
    """

    def __init__(
        self,
        services: Iterable[str],
        config: AdmissionConfig = AdmissionConfig(),  # noqa: B008 (frozen)
        *,
        criticality: Mapping[str, Criticality] | None = None,
        name: str = "",
        clock: Clock = SYSTEM_CLOCK,
        edge: bool = False,
    ) -> None:
        """`criticality` maps full method paths (`/pkg.Service/Method`) of `services` to their own level;
        `name` labels the metrics (the server's name); `edge`: an edge in front of the server refuses first, and
        every room grows by `config.edge_headroom` (AdmissionConfig)."""
        self.name = name
        self._services = frozenset(services)
        own = dict(criticality or {})
        for path in own:
            service, _, method = path.lstrip("/").partition("/")
            if not path.startswith("/") or not method or "/" in method:
                raise ValueError(f"criticality: {path!r} is not a method path like /package.Service/Method")
            if service not in self._services:
                governed = ", ".join(sorted(self._services))
                raise ValueError(f"criticality: {path!r} is not a method of the governed services ({governed})")
        self._own = own
        self._config = config
        self._clock = clock
        headroom = config.edge_headroom if edge else 0
        self.admission = Admission(config, headroom, headroom) if config.enabled else None
        self.methods: dict[str, MethodAdmissions] = {}
        watch_admission(self)

    def wrap(self, behavior: Behavior, details: grpc.HandlerCallDetails) -> Behavior | None:
        path: str = details.method
        if path.lstrip("/").partition("/")[0] not in self._services:
            return None
        method = self.methods.get(path)
        if method is None:
            method = MethodAdmissions(
                path, self._own.get(path, criticality.DEFAULT), self._config.service_time_percentile
            )
            self.methods[path] = method
        if self.admission is None:
            return _scoped(behavior, method.own)
        return self._governed(behavior, method, self.admission)

    def _governed(self, behavior: Behavior, method: MethodAdmissions, admission: Admission) -> Behavior:
        own = method.own
        now = self._clock.now
        service_time = method.service_time if self._config.check_deadline else None
        admitted, refused_limit, refused_deadline = method.admitted, method.refused_limit, method.refused_deadline
        incoming = criticality.incoming
        current = criticality._current

        async def governed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            asked = incoming(context.invocation_metadata())
            level = own if asked is None or asked >= own else asked
            start = now()
            if service_time is not None:
                remaining = context.time_remaining()
                if remaining is not None and service_time.too_late(remaining, start):
                    refused_deadline[level] += 1
                    context.set_code(grpc.StatusCode.DEADLINE_EXCEEDED)
                    context.set_details(_late(method, remaining, service_time.least(start)))
                    context.set_trailing_metadata(_LATE_TRAILER)
                    return None
            if not admission.try_acquire(level):
                refused_limit[level] += 1
                context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
                context.set_details(_overloaded(self.name, admission, level))
                context.set_trailing_metadata(_OVERLOADED_TRAILER)
                return None
            admitted[level] += 1
            found = admission.in_flight
            token = current.set(level)
            try:
                return await behavior(request, context)
            finally:
                current.reset(token)
                end = now()
                if service_time is not None:
                    service_time.record(end - start, end)
                admission.release(end - start, found)

        return governed


def _scoped(behavior: Behavior, own: Criticality) -> Behavior:
    """The handler with the request's criticality in force, and nothing refused."""
    incoming = criticality.incoming
    current = criticality._current

    async def scoped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        asked = incoming(context.invocation_metadata())
        token = current.set(own if asked is None or asked >= own else asked)
        try:
            return await behavior(request, context)
        finally:
            current.reset(token)

    return scoped


def _overloaded(server: str, admission: Admission, level: Criticality) -> str:
    room = admission.room(level)
    share = "" if room == admission.limit else f" ({level.name} requests may fill {room} of them)"
    return (
        f"{server or 'server'} overloaded: {admission.in_flight} requests in flight, limit {admission.limit}{share}; "
        "not started: retry after a backoff or at another replica, or send less"
    )


def _late(method: MethodAdmissions, remaining: float, least: float) -> str:
    return (
        f"not started: {remaining * 1000:.1f} ms left of the deadline, and {method.name} has recently taken at "
        f"least {least * 1000:.1f} ms here; give it a longer deadline"
    )

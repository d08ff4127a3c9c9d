"""A request body that is not its method's request message: INVALID_ARGUMENT naming the type, on every real server.

grpc.aio on its own answers such a body with UNKNOWN; pullgate.decoding takes the decoding over (see there).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sqlite3
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pullgate import topology
from pullgate.admin.v1 import admin_pb2
from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from pullgate.customers.v1 import customers_pb2
from pullgate.decoding import message_name
from pullgate.errors import InvalidArgument
from pullgate.faults import FaultInjector, parse_faults
from pullgate.gateway.v1 import gateway_pb2
from pullgate.inventory.v1 import inventory_pb2
from pullgate.orders.v1 import orders_pb2
from pullgate.serving import Binding, running
from pullgate.telemetry.grpc_server import server_interceptor
from pullgate.telemetry.rpc_metrics import SERVER_DURATION
from pullgate.telemetry.tracing import traced_method
from resilience.admission import AdmissionConfig
from resilience.errors import OVERLOADED_METADATA
from tests.support import count_rows, rpc_error, services_running, start_service

MALFORMED = b"\x0a\x05ab"
"""Field 1, length-delimited, announcing 5 bytes and followed by 2: truncated whatever field 1 is, or if the message
has no field 1 at all (then it is an unknown field, still read to its end). Every test checks it fails to parse."""

INVALID = grpc.StatusCode.INVALID_ARGUMENT
FAULT_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["FaultService"]
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"]
CATALOG = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name

SEEDED_READS: tuple[Message, ...] = (
    customers_pb2.GetCustomerRequest(customer_id="1"),
    catalog_pb2.GetProductRequest(sku="SKU-001"),
    inventory_pb2.GetStockRequest(sku="SKU-001"),
    orders_pb2.GetOrderRequest(order_id="1"),
    gateway_pb2.GetOrderViewRequest(order_id="1"),
)
"""For each contract, a read that the seeded data answers (found by its request type)."""


def contract(service: topology.Service) -> ServiceDescriptor:
    """The service descriptor of `service`'s contract, from its generated module."""
    module: ModuleType = importlib.import_module(f"{service.package}.{service.package.split('.')[1]}_pb2")
    found: ServiceDescriptor = module.DESCRIPTOR.services_by_name[service.contract.rpartition(".")[2]]
    return found


def seeded_read(service: ServiceDescriptor) -> tuple[str, Message, Descriptor]:
    """The path, request and response message of the seeded read among `service`'s methods."""
    for method in service.methods:
        for request in SEEDED_READS:
            if request.DESCRIPTOR.full_name == method.input_type.full_name:
                return f"/{service.full_name}/{method.name}", request, method.output_type
    raise AssertionError(f"SEEDED_READS has no request for {service.full_name}")


def unary_methods(service: ServiceDescriptor) -> list[tuple[str, Descriptor]]:
    """Each unary-unary method's path and request message."""
    return [
        (f"/{service.full_name}/{m.name}", m.input_type)
        for m in service.methods
        if not m.client_streaming and not m.server_streaming
    ]


def rows(data_dir: Path) -> dict[tuple[str, str], int]:
    """The row count of every table of every owner's database under `data_dir`."""
    counts: dict[tuple[str, str], int] = {}
    for owner in topology.owners():
        db = topology.database_path(owner.name, data_dir)
        if not db.exists():
            continue
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            counts[(owner.name, table)] = count_rows(db, table)
    return counts


def counted(path: str, code: grpc.StatusCode) -> int:
    """How many calls of `path` ServerMetrics has recorded with `code` (rpc.server.duration, this process)."""
    service, _, method = path.lstrip("/").partition("/")
    wanted = ("grpc", service, method, str(code.value[0]))
    return sum(series.count for series in SERVER_DURATION.collect() if series.labels == wanted)


async def raw(channel: grpc.aio.Channel, path: str, body: bytes) -> bytes:
    """Send `body` as it is to `path`; the reply's bytes as they came."""
    call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    reply: bytes = await call(body, timeout=10)
    return reply


async def assert_refused(channel: grpc.aio.Channel, path: str, message: Descriptor) -> None:
    """MALFORMED (which `message` truly cannot parse) sent to `path` is INVALID_ARGUMENT naming `message`, and
    counted so by ServerMetrics."""
    with pytest.raises(DecodeError):
        GetMessageClass(message).FromString(MALFORMED)
    before = counted(path, INVALID)
    code, details = await rpc_error(raw(channel, path, MALFORMED))
    assert (code, details) == (INVALID, f"request body is not a valid {message.full_name}: Wire format was corrupt")
    if not path.startswith("/grpc."):  # ServerMetrics records the unary methods of every service it is given
        assert counted(path, INVALID) == before + 1


@pytest.mark.parametrize("name", topology.names())
async def test_every_unary_method_refuses_a_malformed_body_and_writes_nothing(name: str, tmp_path: Path) -> None:
    """Every method of the server's contract answers a body that does not parse with INVALID_ARGUMENT naming its
    request message, no owner's table changes, and a valid request still gets its answer."""
    service = topology.service(name)
    methods = unary_methods(contract(service))
    assert len(methods) == len(contract(service).methods)
    async with (
        services_running(tmp_path, [name, *service.upstreams]) as addresses,
        grpc.aio.insecure_channel(addresses[name][0]) as channel,
    ):
        before = rows(tmp_path)
        assert sum(before.values()) > 0  # the seeded data is there to be (not) changed
        for path, message in methods:
            await assert_refused(channel, path, message)
        assert rows(tmp_path) == before

        path, request, output = seeded_read(contract(service))
        reply = GetMessageClass(output).FromString(await raw(channel, path, request.SerializeToString()))
        assert reply.ByteSize() > 0


async def test_the_fault_service_refuses_a_malformed_body_and_its_faults_stay(tmp_path: Path) -> None:
    """The admin FaultService gets the same; faults drawn on every call (the handler wrapped afresh per call
    below decoding) neither change that nor fire for a refused body, which is refused before them."""
    spec = parse_faults("customers=delay:0ms")
    injector = FaultInjector("customers", spec)
    async with start_service("customers", tmp_path, faults=injector) as address, \
            grpc.aio.insecure_channel(address) as channel:
        for path, message in unary_methods(FAULT_SERVICE):
            await assert_refused(channel, path, message)
        assert injector.spec == spec  # SetFaults and ClearFaults did not run
        faults = admin_pb2.GetFaultsResponse.FromString(
            await raw(channel, f"/{FAULT_SERVICE.full_name}/GetFaults", b"")).faults
        assert faults.spec == str(spec)

        customers = contract(topology.service("customers"))
        path, request, _ = seeded_read(customers)
        for _ in range(3):
            await assert_refused(channel, path, customers.methods_by_name[path.rpartition("/")[2]].input_type)
        assert injector.stats.delays == 0
        for _ in range(3):
            reply = customers_pb2.GetCustomerResponse.FromString(await raw(channel, path, request.SerializeToString()))
            assert reply.customer.customer_id == "1"
        assert injector.stats.delays == 3


async def test_health_check_is_refused_the_same_way(tmp_path: Path) -> None:
    """Health's unary Check and List get the same (its streaming Watch keeps grpc's own decoding)."""
    async with start_service("catalog", tmp_path) as address, grpc.aio.insecure_channel(address) as channel:
        methods = unary_methods(HEALTH_SERVICE)
        assert {path.rpartition("/")[2] for path, _ in methods} >= {"Check", "List"}
        for path, message in methods:
            await assert_refused(channel, path, message)
        check = f"/{HEALTH_SERVICE.full_name}/Check"
        reply = health_pb2.HealthCheckResponse.FromString(await raw(channel, check, b""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


class Catalog(catalog_pb2_grpc.CatalogServiceServicer):
    """GetProduct by sku: "hold" waits for `release`, "" is a caller's mistake, "abort" aborts; Batch is a bug."""

    def __init__(self) -> None:
        self.held = 0
        self.all_held = asyncio.Event()
        self.release = asyncio.Event()

    async def GetProduct(
        self, request: catalog_pb2.GetProductRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> catalog_pb2.GetProductResponse:
        if request.sku == "hold":
            self.held += 1
            if self.held == 2:
                self.all_held.set()
            await self.release.wait()
        elif not request.sku:
            raise InvalidArgument("sku", "must not be empty")
        elif request.sku == "abort":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "scripted")
        return catalog_pb2.GetProductResponse(product=catalog_pb2.Product(sku=request.sku))

    async def BatchGetProducts(
        self, request: catalog_pb2.BatchGetProductsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> catalog_pb2.BatchGetProductsResponse:
        raise RuntimeError("a bug")


async def test_what_runs_below_decoding_answers_as_before() -> None:
    """Through running() with admission and tracing on: admission's refusal (a code set, None returned), the
    span, the error translation and an abort all reach the caller as before; a malformed body is refused even
    while admission is full, and makes no span."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    catalog = Catalog()
    binding = Binding(CATALOG, catalog_pb2_grpc.add_CatalogServiceServicer_to_server, catalog)
    admission = AdmissionConfig(initial_limit=2, min_limit=2, max_limit=2)
    tracing = [server_interceptor(tracer_provider=provider, filter_=traced_method)]
    try:
        async with (
            running([binding], admission=admission, tracing=tracing, name="catalog") as (_, port, _h),
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            stub = catalog_pb2_grpc.CatalogServiceStub(channel)
            get = catalog_pb2.GetProductRequest
            held = [asyncio.ensure_future(stub.GetProduct(get(sku="hold"), timeout=10)) for _ in range(2)]
            await catalog.all_held.wait()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetProduct(get(sku="x"), timeout=10)
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "catalog overloaded: 2 requests in flight, limit 2" in (refused.value.details() or "")
            trailers: dict[str, Any] = dict(refused.value.trailing_metadata() or ())  # type: ignore[arg-type]
            assert trailers[OVERLOADED_METADATA] == "1"
            await assert_refused(channel, f"/{CATALOG}/GetProduct", get.DESCRIPTOR)
            catalog.release.set()
            assert [r.product.sku for r in await asyncio.gather(*held)] == ["hold", "hold"]

            assert await rpc_error(stub.GetProduct(get(sku=""), timeout=10)) == (INVALID, "sku: must not be empty")
            assert await rpc_error(stub.GetProduct(get(sku="abort"), timeout=10)) == (
                grpc.StatusCode.FAILED_PRECONDITION, "scripted")
            assert await rpc_error(stub.BatchGetProducts(catalog_pb2.BatchGetProductsRequest(), timeout=10)) == (
                grpc.StatusCode.INTERNAL, f"internal error in /{CATALOG}/BatchGetProducts; see the server log")
        codes = sorted(
            (span.name.rpartition("/")[2], (span.attributes or {}).get("rpc.grpc.status_code", 0))
            for span in spans.get_finished_spans()
        )
        assert codes == [("BatchGetProducts", 13), ("GetProduct", 0), ("GetProduct", 0), ("GetProduct", 3),
                         ("GetProduct", 9)]
    finally:
        provider.shutdown()


def test_the_message_is_named_by_its_descriptor_or_else_the_method() -> None:
    """The name in the details: the message's full name when the deserializer is a message's FromString."""
    path = "/pullgate.orders.v1.OrderService/GetOrder"
    assert message_name(orders_pb2.GetOrderRequest.FromString, path) == "pullgate.orders.v1.GetOrderRequest"
    assert message_name(bytes.decode, path) == f"request of {path}"
    assert message_name(lambda body: body, path) == f"request of {path}"

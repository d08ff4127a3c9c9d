"""The gateway's callers over TLS: a token or nothing, and a customer sees and places only what is its own."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.orders.v1 import orders_pb2
from tests.security.system import Certificates, secure_system, snapshot

STRONG = pb.ReadOptions(consistency=pb.CONSISTENCY_STRONG)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def gateway(tmp_path: Path, certificates: Certificates) -> AsyncIterator[tuple[str, Path]]:
    async with secure_system(tmp_path, certificates) as addresses:
        yield addresses["gateway"], tmp_path


async def _answer(certificates: Certificates, address: str, call: str, request: Any,
                  token: str | None) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """The code, details and trailers of one call to the gateway with `token` (OK and empty when it succeeds)."""
    metadata = () if token is None else (("authorization", f"Bearer {token}"),)
    async with certificates.channel("gateway", address) as channel:
        try:
            await getattr(gateway_pb2_grpc.GatewayServiceStub(channel), call)(request, timeout=10, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            pairs: Any = error.trailing_metadata() or ()  # (key, value) pairs; grpc-stubs types them otherwise
            trailers = {k: v for k, v in pairs if isinstance(v, str)}
            return error.code(), error.details() or "", trailers
    return grpc.StatusCode.OK, "", {}


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": "customer:1", "customer_id": "1", "iss": "pullgate-dev", "aud": "pullgate",
              "iat": now, "nbf": now, "exp": now + 600}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _bad_tokens(certificates: Certificates) -> dict[str, str]:
    secret = certificates.secret
    now = int(time.time())
    good = jwt.encode(_claims(), secret, algorithm="HS256")
    head, body, signature = good.split(".")
    unsigned = jwt.encode(_claims(), None, algorithm="none")  # type: ignore[arg-type]
    return {
        "expired": jwt.encode(_claims(iat=now - 7200, nbf=now - 7200, exp=now - 3600), secret, algorithm="HS256"),
        "not yet valid": jwt.encode(_claims(nbf=now + 3600, exp=now + 7200), secret, algorithm="HS256"),
        "wrong audience": jwt.encode(_claims(aud="someone-else"), secret, algorithm="HS256"),
        "wrong issuer": jwt.encode(_claims(iss="https://evil.example"), secret, algorithm="HS256"),
        "alg none": unsigned,
        "tampered signature": f"{head}.{body}.{signature[:-4]}AAAA",
        "another key": jwt.encode(_claims(), b"k" * 32, algorithm="HS256"),
    }


async def test_a_call_without_a_valid_token_is_unauthenticated_and_names_what_failed(
        gateway: tuple[str, Path], certificates: Certificates) -> None:
    address, _ = gateway
    request = pb.GetOrderViewRequest(order_id="1")
    code, details, _ = await _answer(certificates, address, "GetOrderView", request, None)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "authorization" in details
    for what, token in _bad_tokens(certificates).items():
        code, details, _ = await _answer(certificates, address, "GetOrderView", request, token)
        assert code == grpc.StatusCode.UNAUTHENTICATED, what
        assert details and not any(part and part in details for part in token.split(".")), what


async def test_health_needs_no_token(gateway: tuple[str, Path], certificates: Certificates) -> None:
    address, _ = gateway
    async with certificates.channel("gateway", address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("consistency", [pb.CONSISTENCY_STRONG, pb.CONSISTENCY_BOUNDED_STALENESS,
                                         pb.CONSISTENCY_AVAILABLE])
async def test_another_customers_order_is_answered_as_one_that_does_not_exist(
        gateway: tuple[str, Path], certificates: Certificates, consistency: int) -> None:
    """Customer 2 asking for order 1 (customer 1's) gets what a missing order gets, word for word: ids cannot be
    probed. Customer 1 and an admin get the order."""
    address, _ = gateway
    read = pb.ReadOptions(consistency=consistency)  # type: ignore[arg-type]
    mine, theirs, admin = (certificates.token("customer:1", "1"), certificates.token("customer:2", "2"),
                           certificates.token("ops", scopes=("admin",)))
    hidden = await _answer(certificates, address, "GetOrderView", pb.GetOrderViewRequest(order_id="1", read=read),
                           theirs)
    missing = await _answer(certificates, address, "GetOrderView",
                            pb.GetOrderViewRequest(order_id="424242", read=read), theirs)
    assert hidden[0] == grpc.StatusCode.NOT_FOUND
    assert (hidden[0], hidden[1].replace("'1'", "'424242'"), hidden[2]) == missing
    for token in (mine, admin):
        assert (await _answer(certificates, address, "GetOrderView",
                              pb.GetOrderViewRequest(order_id="1", read=read), token))[0] == grpc.StatusCode.OK


async def test_another_customers_overview_is_answered_as_one_that_does_not_exist(
        gateway: tuple[str, Path], certificates: Certificates) -> None:
    address, _ = gateway
    theirs = certificates.token("customer:2", "2")
    hidden = await _answer(certificates, address, "GetCustomerOverview",
                           pb.GetCustomerOverviewRequest(customer_id="1", page_size=5), theirs)
    missing = await _answer(certificates, address, "GetCustomerOverview",
                            pb.GetCustomerOverviewRequest(customer_id="424242", page_size=5), theirs)
    assert hidden[0] == grpc.StatusCode.NOT_FOUND
    assert (hidden[0], hidden[1].replace("'1'", "'424242'"), hidden[2]) == missing
    own = await _answer(certificates, address, "GetCustomerOverview",
                        pb.GetCustomerOverviewRequest(customer_id="2", page_size=5), theirs)
    assert own[0] == grpc.StatusCode.OK


async def test_an_order_for_another_customer_is_permission_denied_and_writes_nothing(
        gateway: tuple[str, Path], certificates: Certificates) -> None:
    """Customer 2, and an admin (who may read anyone's data, not act for them), may not place customer 1's order."""
    address, data_dir = gateway
    place = pb.PlaceOrderRequest(idempotency_key="k-1", customer_id="1",
                                 lines=[orders_pb2.OrderLine(sku="SKU-001", quantity=1)])
    before = snapshot(data_dir)
    for token in (certificates.token("customer:2", "2"), certificates.token("ops", scopes=("admin",))):
        code, details, _ = await _answer(certificates, address, "PlaceOrder", place, token)
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "customer '1'" in details
    assert snapshot(data_dir) == before
    code, _, _ = await _answer(certificates, address, "PlaceOrder", place, certificates.token("customer:1", "1"))
    assert code == grpc.StatusCode.OK
    assert snapshot(data_dir) != before

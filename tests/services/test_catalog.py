"""CatalogService against the demo seed, over a real channel."""

from __future__ import annotations

import grpc
import pytest

from pullgate.catalog.v1 import catalog_pb2 as pb
from pullgate.catalog.v1 import catalog_pb2_grpc
from services import demo
from tests.support import rpc_error


@pytest.fixture
def stub(catalog_channel: grpc.aio.Channel) -> catalog_pb2_grpc.CatalogServiceAsyncStub:
    return catalog_pb2_grpc.CatalogServiceStub(catalog_channel)


async def test_get_product_returns_the_seeded_product(stub: catalog_pb2_grpc.CatalogServiceAsyncStub) -> None:
    """GetProduct returns a seeded product with its price."""
    response = await stub.GetProduct(pb.GetProductRequest(sku="SKU-001"))
    first = demo.PRODUCTS[0]
    assert response.product == pb.Product(
        sku="SKU-001", title=first.title, price_cents=first.price_cents, currency="EUR"
    )


async def test_batch_get_keeps_request_order(stub: catalog_pb2_grpc.CatalogServiceAsyncStub) -> None:
    """BatchGetProducts answers in request order."""
    response = await stub.BatchGetProducts(pb.BatchGetProductsRequest(skus=["SKU-030", "SKU-002", "SKU-010"]))
    assert [p.sku for p in response.products] == ["SKU-030", "SKU-002", "SKU-010"]


async def test_unknown_sku_is_not_found(stub: catalog_pb2_grpc.CatalogServiceAsyncStub) -> None:
    """An unknown sku is NOT_FOUND naming it; in a batch, the first one."""
    code, details = await rpc_error(stub.GetProduct(pb.GetProductRequest(sku="SKU-999")))
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, "product 'SKU-999' not found")
    code, details = await rpc_error(stub.BatchGetProducts(pb.BatchGetProductsRequest(skus=["SKU-001", "X", "Y"])))
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, "product 'X' not found")


@pytest.mark.parametrize(
    ("skus", "message"),
    [
        ([], "skus: must have at least 1 item"),
        (["SKU-001"] * 101, "skus: at most 100 items"),
        (["", "SKU-001"], "skus[0]: must not be empty"),
    ],
)
async def test_batch_get_rejects_bad_skus(
    stub: catalog_pb2_grpc.CatalogServiceAsyncStub, skus: list[str], message: str
) -> None:
    """A bad batch is INVALID_ARGUMENT naming the field and rule."""
    code, details = await rpc_error(stub.BatchGetProducts(pb.BatchGetProductsRequest(skus=skus)))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, message)


async def test_get_product_requires_a_sku(stub: catalog_pb2_grpc.CatalogServiceAsyncStub) -> None:
    """An empty sku is INVALID_ARGUMENT."""
    code, details = await rpc_error(stub.GetProduct(pb.GetProductRequest()))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "sku: must not be empty")

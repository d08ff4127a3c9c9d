"""CatalogService: validates requests, asks the store, and maps rows to messages."""

from __future__ import annotations

from typing import Any

import grpc

from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services._validation import require, require_ids
from services.catalog.store import ProductRow, ProductStore

Context = grpc.aio.ServicerContext[Any, Any]


def to_message(row: ProductRow) -> catalog_pb2.Product:
    return catalog_pb2.Product(sku=row.sku, title=row.title, price_cents=row.price_cents, currency=row.currency)


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, store: ProductStore) -> None:
        self._store = store

    async def GetProduct(
        self, request: catalog_pb2.GetProductRequest, context: Context
    ) -> catalog_pb2.GetProductResponse:
        [row] = await self._store.get_many([require("sku", request.sku)])
        return catalog_pb2.GetProductResponse(product=to_message(row))

    async def BatchGetProducts(
        self, request: catalog_pb2.BatchGetProductsRequest, context: Context
    ) -> catalog_pb2.BatchGetProductsResponse:
        rows = await self._store.get_many(require_ids("skus", request.skus))
        return catalog_pb2.BatchGetProductsResponse(products=[to_message(row) for row in rows])

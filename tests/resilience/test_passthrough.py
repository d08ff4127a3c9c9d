"""A call through the whole stack against a real grpc.aio owner."""

from __future__ import annotations

import grpc
import pytest

from pullgate.catalog.v1 import catalog_pb2
from pullgate.methods import GET_PRODUCT
from resilience import Downstream, ResilienceError, Source, StatusError
from tests.resilience.owner import Owner, Script, serving


async def test_live_call_returns_the_answer_and_its_provenance() -> None:
    """A live call returns the owner's answer, labelled LIVE, from the replica that answered."""
    async with serving() as owner:
        downstream = Downstream("catalog", [owner.address])
        try:
            result = await downstream.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku="a"))
        finally:
            await downstream.close()
    assert result.value.product.sku == "a"
    assert result.provenance.source is Source.LIVE
    assert result.provenance.replica == owner.address
    assert result.provenance.attempts == 1


async def test_owner_status_becomes_a_status_error() -> None:
    """A NOT_FOUND from the owner is raised as StatusError with that code and the downstream's name."""
    async with serving(Owner(script=lambda n: Script(code=grpc.StatusCode.NOT_FOUND))) as owner:
        downstream = Downstream("catalog", [owner.address])
        try:
            with pytest.raises(StatusError) as raised:
                await downstream.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku="a"))
        finally:
            await downstream.close()
    assert raised.value.code is grpc.StatusCode.NOT_FOUND
    assert raised.value.downstream == "catalog"
    assert isinstance(raised.value, ResilienceError)

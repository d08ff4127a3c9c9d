"""Method: the path, the idempotency from the proto option, and the message-class check."""

from __future__ import annotations

import pytest

from pullgate.catalog.v1 import catalog_pb2
from pullgate.customers.v1 import customers_pb2
from resilience import Idempotency, Method
from tests.resilience.scripted import KEYED_WRITE, READ, UNSAFE_WRITE


def test_path_and_idempotency_come_from_the_descriptor() -> None:
    """GetProduct is a read at its full path; ReserveStock a keyed write; CreateCustomer neither."""
    assert READ.path == "/pullgate.catalog.v1.CatalogService/GetProduct"
    assert READ.idempotency is Idempotency.NO_SIDE_EFFECTS
    assert (READ.cacheable, READ.hedgeable, READ.retryable) == (True, True, True)
    assert KEYED_WRITE.idempotency is Idempotency.IDEMPOTENT
    assert (KEYED_WRITE.cacheable, KEYED_WRITE.hedgeable, KEYED_WRITE.retryable) == (False, False, True)
    assert UNSAFE_WRITE.idempotency is Idempotency.UNKNOWN
    assert not UNSAFE_WRITE.retryable


def test_wrong_message_classes_are_refused() -> None:
    """A request class that is not the method's input type raises TypeError naming both."""
    descriptor = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].methods_by_name["GetProduct"]
    with pytest.raises(TypeError, match="GetProductRequest"):
        Method(descriptor, customers_pb2.GetCustomerRequest, catalog_pb2.GetProductResponse)

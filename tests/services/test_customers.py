"""CustomerService against the demo seed, over a real channel."""

from __future__ import annotations

import grpc
import pytest

from pullgate.customers.v1 import customers_pb2 as pb
from pullgate.customers.v1 import customers_pb2_grpc
from services import demo
from tests.services.conftest import StoreTarget
from tests.support import count_rows, rpc_error


@pytest.fixture
def stub(customers_channel: grpc.aio.Channel) -> customers_pb2_grpc.CustomerServiceAsyncStub:
    return customers_pb2_grpc.CustomerServiceStub(customers_channel)


async def test_get_customer_returns_the_seeded_customer(stub: customers_pb2_grpc.CustomerServiceAsyncStub) -> None:
    """GetCustomer returns a seeded customer with its create_time."""
    response = await stub.GetCustomer(pb.GetCustomerRequest(customer_id="1"))
    assert response.customer.customer_id == "1"
    assert response.customer.name == demo.CUSTOMERS[0].name
    assert response.customer.email == demo.CUSTOMERS[0].email
    assert response.customer.create_time.ToDatetime(demo.EPOCH.tzinfo) == demo.CUSTOMERS[0].create_time


async def test_batch_get_keeps_request_order(stub: customers_pb2_grpc.CustomerServiceAsyncStub) -> None:
    """BatchGetCustomers answers in request order, repeats included."""
    response = await stub.BatchGetCustomers(pb.BatchGetCustomersRequest(customer_ids=["3", "1", "20", "3"]))
    assert [c.customer_id for c in response.customers] == ["3", "1", "20", "3"]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.GetCustomerRequest(customer_id="42"), "customer '42' not found"),
        (pb.BatchGetCustomersRequest(customer_ids=["1", "98", "99"]), "customer '98' not found"),
    ],
)
async def test_unknown_customer_is_not_found(
    stub: customers_pb2_grpc.CustomerServiceAsyncStub, request_: object, message: str
) -> None:
    """An unknown id is NOT_FOUND naming it (the first one, in a batch)."""
    method = stub.GetCustomer if isinstance(request_, pb.GetCustomerRequest) else stub.BatchGetCustomers
    code, details = await rpc_error(method(request_))  # type: ignore[arg-type]
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, message)


async def test_create_customer_assigns_the_next_id(stub: customers_pb2_grpc.CustomerServiceAsyncStub) -> None:
    """CreateCustomer stores a customer that GetCustomer then returns."""
    created = await stub.CreateCustomer(pb.CreateCustomerRequest(name="Joan Clarke", email="joan@example.org"))
    assert created.customer.customer_id == str(len(demo.CUSTOMERS) + 1)
    assert created.customer.create_time.seconds > 0
    fetched = await stub.GetCustomer(pb.GetCustomerRequest(customer_id=created.customer.customer_id))
    assert fetched.customer == created.customer


@pytest.mark.parametrize(
    ("name", "email", "message"),
    [
        ("", "a@example.com", "name: must not be empty"),
        ("   ", "a@example.com", "name: must not be blank"),
        ("x" * 201, "a@example.com", "name: must be at most 200 characters"),
        ("Ann", "", "email: must not be empty"),
        ("Ann", "not-an-email", "email: must look like name@example.com"),
        ("Ann", "ann@localhost", "email: must look like name@example.com"),
        ("Ann", "a n@example.com", "email: must look like name@example.com"),
        ("Ann", "a" * 250 + "@example.com", "email: must be at most 254 characters"),
    ],
)
async def test_create_customer_rejects_bad_fields(
    stub: customers_pb2_grpc.CustomerServiceAsyncStub, target: StoreTarget, name: str, email: str, message: str
) -> None:
    """A bad name or email is INVALID_ARGUMENT naming the field and rule, and nothing is written."""
    code, details = await rpc_error(stub.CreateCustomer(pb.CreateCustomerRequest(name=name, email=email)))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    assert count_rows(target("customers"), "customers") == len(demo.CUSTOMERS)


async def test_create_customer_with_a_used_email_already_exists(
    stub: customers_pb2_grpc.CustomerServiceAsyncStub, target: StoreTarget
) -> None:
    """A used email, in any case, is ALREADY_EXISTS naming it, and nothing is written."""
    taken = demo.CUSTOMERS[0].email.upper()
    code, details = await rpc_error(stub.CreateCustomer(pb.CreateCustomerRequest(name="Ada", email=taken)))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert taken in details
    assert count_rows(target("customers"), "customers") == len(demo.CUSTOMERS)
    created = await stub.CreateCustomer(pb.CreateCustomerRequest(name="New", email="new@example.com"))
    assert created.customer.customer_id == str(len(demo.CUSTOMERS) + 1), "a refused create uses up no id"


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([], "customer_ids: must have at least 1 item"),
        (["1"] * 101, "customer_ids: at most 100 items"),
        (["1", ""], "customer_ids[1]: must not be empty"),
    ],
)
async def test_batch_get_rejects_bad_ids(
    stub: customers_pb2_grpc.CustomerServiceAsyncStub, ids: list[str], message: str
) -> None:
    """A bad batch is INVALID_ARGUMENT naming the field and rule."""
    code, details = await rpc_error(stub.BatchGetCustomers(pb.BatchGetCustomersRequest(customer_ids=ids)))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, message)


async def test_get_customer_requires_an_id(stub: customers_pb2_grpc.CustomerServiceAsyncStub) -> None:
    """An empty customer_id is INVALID_ARGUMENT."""
    code, details = await rpc_error(stub.GetCustomer(pb.GetCustomerRequest()))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "customer_id: must not be empty")

"""CustomerService: validates requests, asks the store, and maps rows to messages."""

from __future__ import annotations

import re
from typing import Any

import grpc

from pullgate.customers.v1 import customers_pb2, customers_pb2_grpc
from pullgate.errors import InvalidArgument
from services import _time
from services._validation import require, require_ids
from services.customers.store import CustomerRow, CustomerStore

MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254  # RFC 5321's limit on a forward path
# Deliberately loose: one @, something on each side, a dot in the domain, no spaces. Delivery is the real test.
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")

Context = grpc.aio.ServicerContext[Any, Any]


def to_message(row: CustomerRow) -> customers_pb2.Customer:
    return customers_pb2.Customer(
        customer_id=row.customer_id,
        name=row.name,
        email=row.email,
        create_time=_time.to_timestamp(row.create_time),
    )


class CustomerServicer(customers_pb2_grpc.CustomerServiceServicer):
    def __init__(self, store: CustomerStore) -> None:
        self._store = store

    async def GetCustomer(
        self, request: customers_pb2.GetCustomerRequest, context: Context
    ) -> customers_pb2.GetCustomerResponse:
        customer_id = require("customer_id", request.customer_id)
        [row] = await self._store.get_many([customer_id])
        return customers_pb2.GetCustomerResponse(customer=to_message(row))

    async def BatchGetCustomers(
        self, request: customers_pb2.BatchGetCustomersRequest, context: Context
    ) -> customers_pb2.BatchGetCustomersResponse:
        customer_ids = require_ids("customer_ids", request.customer_ids)
        rows = await self._store.get_many(customer_ids)
        return customers_pb2.BatchGetCustomersResponse(customers=[to_message(row) for row in rows])

    async def CreateCustomer(
        self, request: customers_pb2.CreateCustomerRequest, context: Context
    ) -> customers_pb2.CreateCustomerResponse:
        name = require("name", request.name)
        if not name.strip():
            raise InvalidArgument("name", "must not be blank")
        if len(name) > MAX_NAME_LENGTH:
            raise InvalidArgument("name", f"must be at most {MAX_NAME_LENGTH} characters")
        email = require("email", request.email)
        if len(email) > MAX_EMAIL_LENGTH:
            raise InvalidArgument("email", f"must be at most {MAX_EMAIL_LENGTH} characters")
        if not _EMAIL.fullmatch(email):
            raise InvalidArgument("email", "must look like name@example.com")
        row = await self._store.create(name, email)
        return customers_pb2.CreateCustomerResponse(customer=to_message(row))

"""`pullgate up` as a user runs it: separate processes, real databases, real gRPC, a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from pullgate.customers.v1 import customers_pb2, customers_pb2_grpc
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from pullgate.orders.v1 import orders_pb2
from tests.support import Recorded

pytestmark = pytest.mark.e2e

READY_TIMEOUT = 60.0


@dataclass
class System(Recorded):
    """A running `pullgate up` and what it recorded about itself."""

    process: asyncio.subprocess.Process
    data_dir: Path
    output: list[str]



async def _read_until(process: asyncio.subprocess.Process, marker: str, output: list[str]) -> None:
    assert process.stdout is not None
    while True:
        line = (await process.stdout.readline()).decode()
        if not line:
            raise AssertionError(f"pullgate up exited ({await process.wait()}) before {marker!r}:\n" + "".join(output))
        output.append(line)
        if marker in line:
            return


@contextlib.asynccontextmanager
async def pullgate_up(data_dir: Path, *flags: str) -> AsyncIterator[System]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pullgate", "up", "--data-dir", str(data_dir), "--any-ports", *flags,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output: list[str] = []
    try:
        await asyncio.wait_for(_read_until(process, "Ctrl-C stops everything", output), READY_TIMEOUT)
        yield System(process, data_dir, output)
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as probe:
        return probe.connect_ex((host, int(port))) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_up_serves_views_joined_from_the_owners_and_stops_cleanly(tmp_path: Path) -> None:
    """Order 1's view carries exactly what customers, catalog and inventory hold; SIGTERM stops every server."""
    async with pullgate_up(tmp_path) as system:
        addresses = {name: system.address(name) for name in system.state["services"]}
        pids = [entry["pid"] for entries in system.state["services"].values() for entry in entries]
        async with (
            system.channel("gateway", customer="1") as gw,
            system.channel("customers") as cu,
            system.channel("catalog") as ca,
            system.channel("inventory") as inv,
        ):
            gateway = gateway_pb2_grpc.GatewayServiceStub(gw)
            view = (await gateway.GetOrderView(pb.GetOrderViewRequest(order_id="1"), timeout=10)).view
            skus = [line.sku for line in view.lines]
            assert len(skus) >= 3
            customer = (await customers_pb2_grpc.CustomerServiceStub(cu).GetCustomer(
                customers_pb2.GetCustomerRequest(customer_id=view.order.customer_id), timeout=5)).customer
            products = (await catalog_pb2_grpc.CatalogServiceStub(ca).BatchGetProducts(
                catalog_pb2.BatchGetProductsRequest(skus=skus), timeout=5)).products
            stock = (await inventory_pb2_grpc.InventoryServiceStub(inv).BatchGetStock(
                inventory_pb2.BatchGetStockRequest(skus=skus), timeout=5)).stocks
            assert view.customer == customer
            assert [line.product for line in view.lines] == list(products)
            assert [line.stock for line in view.lines] == list(stock)

            # The customer's name lives only in the customers database, never in the orders database.
            orders_db = sqlite3.connect(f"file:{tmp_path / 'orders.db'}?mode=ro", uri=True)
            dump = "\n".join(orders_db.iterdump())
            orders_db.close()
            assert customer.name not in dump and customer.email not in dump
            assert all(p.title not in dump for p in products)

            overview = await gateway.GetCustomerOverview(
                pb.GetCustomerOverviewRequest(customer_id=customer.customer_id, page_size=5), timeout=10)
            assert overview.overview.customer == customer
            assert "1" in [o.order.order_id for o in overview.overview.orders]
            # The customer was just read for the order view, so a bounded read may take it from the cache.
            assert all(part.source in (pb.SOURCE_LIVE, pb.SOURCE_CACHED) for part in overview.parts)
            assert not overview.degraded

            key = str(uuid.uuid4())
            place = pb.PlaceOrderRequest(idempotency_key=key, customer_id=customer.customer_id,
                                         lines=[orders_pb2.OrderLine(sku=skus[0], quantity=1)])
            placed = (await gateway.PlaceOrder(place, timeout=10)).order
            assert placed.status == orders_pb2.ORDER_STATUS_CONFIRMED
            assert (await gateway.PlaceOrder(place, timeout=10)).order.order_id == placed.order_id

            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await gateway.GetOrderView(pb.GetOrderViewRequest(order_id=""), timeout=5)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "order_id" in (bad.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await gateway.GetOrderView(pb.GetOrderViewRequest(order_id="999999"), timeout=5)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            assert "999999" in (missing.value.details() or "")

        system.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(system.process.wait(), 30) == 0
        assert not any(_listening(address) for address in addresses.values())
        assert not any(_pid_alive(pid) for pid in pids)
        assert not (tmp_path / "pullgate-up.json").exists()


async def test_up_restarts_a_killed_service(tmp_path: Path) -> None:
    """A service killed with SIGKILL comes back on the same address, and the gateway serves through it again."""
    async with pullgate_up(tmp_path) as system:
        customers = system.state["services"]["customers"][0]
        os.kill(customers["pid"], signal.SIGKILL)
        await asyncio.wait_for(_read_until(system.process, "customers is back", system.output), READY_TIMEOUT)
        restarted = system.state["services"]["customers"][0]
        assert restarted["address"] == customers["address"]
        assert restarted["pid"] != customers["pid"] and restarted["restarts"] == 1
        async with system.channel("gateway") as channel:
            view = await gateway_pb2_grpc.GatewayServiceStub(channel).GetOrderView(
                pb.GetOrderViewRequest(order_id="1", read=pb.ReadOptions(consistency=pb.CONSISTENCY_STRONG)),
                timeout=10)
        assert view.view.customer.customer_id == view.view.order.customer_id


async def test_up_refuses_a_bad_config_before_starting_anything(tmp_path: Path) -> None:
    """A wrong key in the config file is one line naming the key and the file, and nothing starts."""
    config = tmp_path / "pullgate.toml"
    config.write_text("[resilience.catalog.retry]\nmax_attempt = 3\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pullgate", "up", "--data-dir", str(tmp_path / "var"), "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    message = err.decode().strip()
    assert "resilience.catalog.retry.max_attempt" in message and str(config) in message
    assert len(message.splitlines()) == 1
    assert not (tmp_path / "var").exists()

"""`pullgate up --postgres`: the whole system on PostgreSQL, a database and a role per owner, made on first use."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.orders.v1 import orders_pb2
from pullgate.tools import audit, db
from pullgate.tools.cli import main
from pullgate.tools.launcher import STATE_FILE
from services import invariants
from services.invariants import check_placement
from tests.e2e.test_up import pullgate_up
from tests.postgres import throwaway_cluster
from tests.support import count_rows

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster() -> Iterator[str]:
    """A PostgreSQL cluster of this test's own (roles belong to a cluster, and `up` makes pullgate_* roles)."""
    with contextlib.ExitStack() as stack:
        try:
            admin_url = stack.enter_context(throwaway_cluster())
        except RuntimeError as error:
            pytest.skip(f"no throwaway PostgreSQL cluster: {error}")
        yield admin_url


async def test_up_on_postgres_places_orders_and_keeps_each_owner_to_its_database(
        cluster: str, tmp_path: Path) -> None:
    """Two replicas per owner on PostgreSQL: an order is placed once, nothing lands in a file, the grants hold."""
    assert main(["db", "init", "--admin-url", cluster, "--revoke-public"]) == 0
    async with pullgate_up(tmp_path, "--postgres", cluster, "--replicas", "2", "--insecure") as system:
        assert "pullgate_orders" in "".join(system.output)
        async with system.channel("gateway", customer="2") as channel:
            gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
            view = (await gateway.GetOrderView(pb.GetOrderViewRequest(order_id="1"), timeout=10)).view
            assert view.customer.customer_id == view.order.customer_id
            place = pb.PlaceOrderRequest(idempotency_key=str(uuid.uuid4()), customer_id="2",
                                         lines=[orders_pb2.OrderLine(sku="SKU-006", quantity=2)])
            placed = [(await gateway.PlaceOrder(place, timeout=10)).order for _ in range(3)]
        # The invariants' command finds the databases the running system recorded (there are no SQLite files).
        checked = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.invariants", str(tmp_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        said, _ = await asyncio.wait_for(checked.communicate(), 60)
        assert checked.returncode == 0, said.decode()
        assert invariants.STATE_FILE == STATE_FILE
    assert {o.order_id for o in placed} == {placed[0].order_id}
    assert placed[0].status == orders_pb2.ORDER_STATUS_CONFIRMED
    urls = db.urls(cluster)
    assert count_rows(urls["orders"], "orders", f"idempotency_key = '{place.idempotency_key}'") == 1
    assert check_placement(tmp_path, databases={"orders": urls["orders"], "inventory": urls["inventory"]}).settled
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".db")]
    assert db.check_grants(cluster) == []
    assert main(["audit", "--database-url", cluster]) == 0
    # A customer's name copied into orders' database (by hand, as the admin) is found by the value check.
    orders_as_admin = audit.admin_urls(cluster, db.DEFAULT_PREFIX)["orders"]
    with psycopg.connect(orders_as_admin, autocommit=True) as conn:
        conn.execute("UPDATE orders SET idempotency_key = 'Ada Lovelace' WHERE order_id = '1'")
    assert main(["audit", "--database-url", cluster]) == 1

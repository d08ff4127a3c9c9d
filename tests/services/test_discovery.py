"""An owner found by DNS: `--upstream catalog=dns://...` read by `pullgate serve`, and real catalog replicas."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pullgate import topology
from pullgate.catalog.v1 import catalog_pb2
from pullgate.methods import GET_PRODUCT, Upstreams
from pullgate.serving import ServeOptions, running
from pullgate.tools.apps import load_app
from pullgate.tools.cli import build_parser
from resilience import ResilienceConfig
from tests.resilience.dnsmasq import DOMAIN, dnsmasq
from tests.support import until

NAME = f"catalog.{DOMAIN}"


def test_serve_takes_a_dns_name_for_an_upstream() -> None:
    """`--upstream catalog=dns:///HOST:PORT` is one DNS name; a list of addresses stays a list."""
    args = build_parser().parse_args(["serve", "orders", "--upstream", "catalog=dns:///catalog.pullgate.svc:50052",
                                      "--upstream", "customers=127.0.0.1:1,127.0.0.1:2"])
    assert dict(args.upstream) == {"catalog": ("dns:///catalog.pullgate.svc:50052",),
                                   "customers": ("127.0.0.1:1", "127.0.0.1:2")}


def test_serve_refuses_a_dns_name_without_a_port(capsys: pytest.CaptureFixture[str]) -> None:
    """A DNS name the layer could not use is refused when the flags are read, saying what is wrong."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "orders", "--upstream", "catalog=dns:///catalog"])
    assert "expected HOST:PORT with a port in 1..65535" in capsys.readouterr().err


def unused_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@contextlib.asynccontextmanager
async def catalogs(data_dir: Path, ips: list[str]) -> AsyncIterator[int]:
    """pullgate's catalog service on each of `ips`, one port (the first one's free port); yields the port."""
    async with contextlib.AsyncExitStack() as stack:
        port = 0
        for k, ip in enumerate(ips):
            options = ServeOptions(name="catalog", data_dir=data_dir / f"replica-{k}")
            bindings = await stack.enter_async_context(load_app("catalog")(options))
            _, port, _ = await stack.enter_async_context(running(bindings, ip, port))
        yield port


async def test_orders_reaches_catalog_replicas_by_dns(tmp_path: Path) -> None:
    """The owners of orders, with catalog given as a DNS name, reach the catalog replicas the name resolves to."""
    async with (
        catalogs(tmp_path, ["127.0.0.2", "127.0.0.3"]) as port,
        dnsmasq(tmp_path, {NAME: ["127.0.0.2"]}) as dns,
    ):
        upstreams = {name: (unused_address(),) for name in topology.service("orders").upstreams}
        upstreams["catalog"] = (f"dns://{dns.server}/{NAME}:{port}",)
        config = ResilienceConfig.from_mapping({"catalog": {"discovery": {"refresh_interval": "100ms"}}})
        owners = Upstreams.connect("orders", upstreams, config)
        try:
            catalog = owners["catalog"]
            result = await catalog.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku="SKU-001"))
            assert (result.value.product.sku, result.provenance.replica) == ("SKU-001", f"127.0.0.2:{port}")
            dns.publish({NAME: ["127.0.0.3"]})
            await until(lambda: catalog.replicas.live == (f"127.0.0.3:{port}",))
            result = await catalog.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku="SKU-002"), max_staleness=0)
            assert (result.value.product.sku, result.provenance.replica) == ("SKU-002", f"127.0.0.3:{port}")
        finally:
            await owners.close()

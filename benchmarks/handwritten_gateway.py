"""The gateway a team would write by hand, for `./dev bench gateway` to hold pullgate's against: plain grpc.aio
stubs and asyncio.gather, no resilience, no cache, no tracing, no metrics, no admission, no token check.

It serves GetOrderView as pullgate's gateway does (the order; then its customer, its products and their stock
at once) and answers the same message, every part labelled live. Run as a process of its own:

    python -m benchmarks.handwritten_gateway --port 0 --port-file F --upstream orders=HOST:PORT ... \
        [--tls-cert gateway.pem --tls-key gateway.key --tls-ca ca.pem]

With the TLS files it is on the wire what pullgate's gateway is: it serves TLS with that certificate (asking its
callers for none) and calls the owners over mutual TLS presenting it, checking each owner's certificate names
the owner; given the gateway's certificate, the owners' policy lets it make the calls pullgate's gateway makes.
Without them, plaintext both ways (owners started `--insecure`).

It writes the port it bound to `--port-file` and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

import grpc

from pullgate import topology
from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from pullgate.customers.v1 import customers_pb2, customers_pb2_grpc
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from pullgate.orders.v1 import orders_pb2, orders_pb2_grpc

OWNERS = topology.service(topology.ENTRY).upstreams
"""The owners the gateway calls, as the topology says."""


class HandwrittenGateway(gateway_pb2_grpc.GatewayServiceServicer):
    """GetOrderView with four plain calls in two rounds; any owner's error is the view's."""

    def __init__(self, channels: dict[str, grpc.aio.Channel]) -> None:
        self.orders = orders_pb2_grpc.OrderServiceStub(channels["orders"])
        self.customers = customers_pb2_grpc.CustomerServiceStub(channels["customers"])
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(channels["catalog"])
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(channels["inventory"])

    async def GetOrderView(self, request: pb.GetOrderViewRequest, context: Any) -> pb.GetOrderViewResponse:
        timeout = context.time_remaining()
        order = (await self.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=request.order_id),
                                            timeout=timeout)).order
        skus = list(dict.fromkeys(line.sku for line in order.lines))
        timeout = context.time_remaining()
        customer, products, stock = await asyncio.gather(
            self.customers.GetCustomer(customers_pb2.GetCustomerRequest(customer_id=order.customer_id),
                                       timeout=timeout),
            self.catalog.BatchGetProducts(catalog_pb2.BatchGetProductsRequest(skus=skus), timeout=timeout),
            self.inventory.BatchGetStock(inventory_pb2.BatchGetStockRequest(skus=skus), timeout=timeout),
        )
        by_product = {p.sku: p for p in products.products}
        by_stock = {s.sku: s for s in stock.stocks}
        view = pb.OrderView(order=order, customer=customer.customer)
        for line in order.lines:
            view.lines.append(pb.LineView(sku=line.sku, quantity=line.quantity, product=by_product.get(line.sku),
                                          stock=by_stock.get(line.sku)))
        parts = [pb.PartStatus(part=f"order:{order.order_id}", source=pb.SOURCE_LIVE, attempts=1),
                 pb.PartStatus(part=f"customer:{order.customer_id}", source=pb.SOURCE_LIVE, attempts=1)]
        for sku in skus:
            parts.append(pb.PartStatus(part=f"product:{sku}", source=pb.SOURCE_LIVE, attempts=1))
            parts.append(pb.PartStatus(part=f"stock:{sku}", source=pb.SOURCE_LIVE, attempts=1))
        return pb.GetOrderViewResponse(view=view, parts=parts, degraded=False)


async def serve(port: int, port_file: Path, upstreams: dict[str, str], tls: tuple[Path, Path, Path] | None) -> None:
    """Serve on `port` until SIGTERM; `tls`: (certificate, key, CA) files, or None for plaintext."""
    server = grpc.aio.server()
    if tls is None:
        channels = {name: grpc.aio.insecure_channel(upstreams[name]) for name in OWNERS}
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
    else:
        cert, key, ca = (path.read_bytes() for path in tls)
        credentials = grpc.ssl_channel_credentials(ca, key, cert)
        channels = {name: grpc.aio.secure_channel(upstreams[name], credentials,
                                                  options=[("grpc.ssl_target_name_override", name)])
                    for name in OWNERS}
        bound = server.add_secure_port(f"127.0.0.1:{port}", grpc.ssl_server_credentials([(key, cert)]))
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(HandwrittenGateway(channels), server)
    await server.start()
    await asyncio.to_thread(port_file.write_text, str(bound))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await server.stop(1)
    for channel in channels.values():
        await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--upstream", action="append", default=[], metavar="NAME=HOST:PORT")
    parser.add_argument("--tls-cert", type=Path, help="its certificate (PEM): serve TLS and call the owners with it")
    parser.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    parser.add_argument("--tls-ca", type=Path, help="the CA the owners' certificates chain to (PEM)")
    args = parser.parse_args()
    upstreams = dict(item.split("=", 1) for item in args.upstream)
    missing = [name for name in OWNERS if name not in upstreams]
    if missing:
        parser.error(f"--upstream needed for {', '.join(missing)}")
    files = (args.tls_cert, args.tls_key, args.tls_ca)
    if any(files) and not all(files):
        parser.error("--tls-cert, --tls-key and --tls-ca go together")
    asyncio.run(serve(args.port, args.port_file, upstreams, files if all(files) else None))


if __name__ == "__main__":
    main()

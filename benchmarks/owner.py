"""A tiny catalog owner for benchmarks, in its own process: `python -m benchmarks.owner [--delay S --fraction F]`.

It answers GetProduct at once, except that a fraction of calls (chosen at random, seeded) first sleep `delay`
seconds. It prints its port on the first line of stdout. It does not depend on pullgate's fault injection.

With `--tls DIR` (a PKI made by pullgate.security.pki.ensure_dev_pki with a `catalog` identity) the same server
also listens on a second port with mutual TLS, as a pullgate owner does (pullgate.security.tls.ServerTls), and
prints that port on the second line; SIGUSR1 makes it print `handshakes N`, the TLS handshakes it has served.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
from pathlib import Path

import grpc

from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from pullgate.security.pki import Pki
from pullgate.security.tls import ServerTls, TlsFiles


class Owner(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, delay: float, fraction: float, seed: int) -> None:
        self.delay = delay
        self.fraction = fraction
        self.rng = random.Random(seed)

    async def GetProduct(
        self,
        request: catalog_pb2.GetProductRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> catalog_pb2.GetProductResponse:
        if self.fraction and self.rng.random() < self.fraction:
            await asyncio.sleep(self.delay)
        return catalog_pb2.GetProductResponse(
            product=catalog_pb2.Product(sku=request.sku, title="bench", price_cents=100, currency="EUR")
        )

    async def BatchGetProducts(
        self,
        request: catalog_pb2.BatchGetProductsRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> catalog_pb2.BatchGetProductsResponse:
        return catalog_pb2.BatchGetProductsResponse()


async def serve(delay: float, fraction: float, seed: int, tls: Path | None = None) -> None:
    server = grpc.aio.server()
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(Owner(delay, fraction, seed), server)
    port = server.add_insecure_port("127.0.0.1:0")
    secure: ServerTls | None = None
    if tls is not None:
        pki = Pki(tls)
        secure = ServerTls(TlsFiles(pki.cert("catalog"), pki.key("catalog"), pki.ca), require_client_cert=True)
        tls_port = server.add_secure_port("127.0.0.1:0", secure.credentials())
    await server.start()
    print(port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if secure is not None:
        loop.add_signal_handler(signal.SIGUSR1, _say_handshakes, secure)  # before the port: asked only after
        print(tls_port, flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(None)


def _say_handshakes(tls: ServerTls) -> None:
    print(f"handshakes {tls.handshakes}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.owner")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds a delayed call sleeps")
    parser.add_argument("--fraction", type=float, default=0.0, help="fraction of calls delayed, 0..1")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tls", type=Path, default=None,
                        help="a PKI directory with a catalog identity: also serve mutual TLS on a second port")
    args = parser.parse_args()
    asyncio.run(serve(args.delay, args.fraction, args.seed, args.tls))


if __name__ == "__main__":
    main()

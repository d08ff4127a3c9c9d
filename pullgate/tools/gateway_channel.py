"""How pullgate's own tools (chaos, the load workers, the CLI's callers) reach a gateway: channel options and
the consistency modes by name. Kept apart from the chaos package so a load worker imports only this."""

from __future__ import annotations

from pullgate.gateway.v1 import gateway_pb2 as pb

CHANNEL_OPTIONS = (
    # A restarted gateway is found again within a tenth of a second, not after grpc's default backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.enable_retries", 0),
)

MODES = {"strong": pb.CONSISTENCY_STRONG, "bounded": pb.CONSISTENCY_BOUNDED_STALENESS,
         "available": pb.CONSISTENCY_AVAILABLE}

Metadata = tuple[tuple[str, str], ...]
"""What a call carries besides its message: the caller's token (`Access.metadata`), or nothing."""

__all__ = ["CHANNEL_OPTIONS", "MODES", "Metadata"]

"""A typed handle on one unary gRPC method: its path, its message classes, and what its proto says about retries.

The proto option `idempotency_level` is the single source of truth for what the layer may do with a method:

    NO_SIDE_EFFECTS  a read: cacheable, retryable, hedgeable
    IDEMPOTENT       a keyed write (the owner deduplicates): retryable, never hedged, never cached
    unset            anything else: one attempt only, never cached
"""

from __future__ import annotations

import enum
from typing import Any, Generic, TypeVar

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


class Idempotency(enum.Enum):
    """The method's `idempotency_level` option, in the layer's words."""

    UNKNOWN = "unknown"
    NO_SIDE_EFFECTS = "no_side_effects"
    IDEMPOTENT = "idempotent"


_LEVELS = {
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS: Idempotency.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT: Idempotency.IDEMPOTENT,
}


class Method(Generic[Req, Resp]):
    """One unary-unary method; checks that the message classes are the ones its descriptor names.

    >>> GET_PRODUCT = Method(
    ...     catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].methods_by_name["GetProduct"],
    ...     catalog_pb2.GetProductRequest, catalog_pb2.GetProductResponse)
    """

    __slots__ = ("descriptor", "idempotency", "path", "request_type", "response_type")

    def __init__(self, descriptor: MethodDescriptor, request_type: type[Req], response_type: type[Resp]) -> None:
        if descriptor.client_streaming or descriptor.server_streaming:
            raise TypeError(f"{descriptor.full_name} is streaming; the layer handles unary calls only")
        for role, declared, given in (
            ("request", descriptor.input_type, request_type),
            ("response", descriptor.output_type, response_type),
        ):
            if declared.full_name != given.DESCRIPTOR.full_name:
                raise TypeError(
                    f"{descriptor.full_name} takes {role} {declared.full_name}, not {given.DESCRIPTOR.full_name}"
                )
        self.descriptor = descriptor
        self.request_type = request_type
        self.response_type = response_type
        self.path = f"/{descriptor.containing_service.full_name}/{descriptor.name}"
        level: Any = descriptor.GetOptions().idempotency_level
        self.idempotency = _LEVELS.get(level, Idempotency.UNKNOWN)

    @property
    def is_read(self) -> bool:
        """NO_SIDE_EFFECTS: may be cached and hedged."""
        return self.idempotency is Idempotency.NO_SIDE_EFFECTS

    @property
    def retryable(self) -> bool:
        """Reads and keyed writes may be sent again after a failure."""
        return self.idempotency is not Idempotency.UNKNOWN

    @property
    def hedgeable(self) -> bool:
        return self.is_read

    @property
    def cacheable(self) -> bool:
        return self.is_read

    def __repr__(self) -> str:
        return f"Method({self.path}, {self.idempotency.value})"

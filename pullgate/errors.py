"""Errors a servicer raises for bad requests; `pullgate.serving` turns them into status codes once.

ServiceError            code: grpc.StatusCode
 ├── InvalidArgument    a field breaks a rule:        "customer_id: must not be empty"
 ├── NotFound           an entity does not exist:     "customer '42' not found"
 ├── AlreadyExists      a key is taken by something else
 ├── FailedPrecondition the request is valid but the state forbids it
 └── PermissionDenied   the caller is known, and may not do this
"""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    """An answer to the caller that is not a success; the message is for a person."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def trailers(self) -> tuple[tuple[str, str], ...]:
        """Trailing metadata to answer with beside the code (none unless a subclass has something to say)."""
        return ()


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED

"""Who is calling, checked on every call: a service's certificate against the policy, a person's token at the gateway.

Two server interceptors, one per kind of caller:

- `PeerAuthorization` (the owners): the caller's identity is the SPIFFE id in the client certificate that mutual
  TLS already verified; the policy (pullgate.security.policy) must grant it the method, else PERMISSION_DENIED
  naming both. Nothing of the handler runs.
- `CallerAuthentication` (the gateway): the caller presents a bearer token (pullgate.security.tokens); without a
  valid one the call is UNAUTHENTICATED. The verified caller is then the current one (`current_caller()`) for the
  handler, which decides what of the data it may see (object-level checks in gateway.servicer).

Both put the caller on the server span (`pullgate.caller`, and `enduser.id` for a token) and count each refusal in
`pullgate.security.refused` by method and reason.
"""

from __future__ import annotations

import contextvars
from typing import Any

import grpc
from opentelemetry import metrics, trace

from pullgate.security.policy import FAULT_SERVICE, OPEN_SERVICES, Policy
from pullgate.security.tokens import OPERATOR_SCOPE, Caller, TokenVerifier, Unauthenticated
from resilience import Behavior, UnaryInterceptor

CALLER_ATTRIBUTE = "pullgate.caller"
"""The span attribute that names who called: a SPIFFE id, or a token's subject."""

REFUSED = metrics.get_meter("pullgate.security").create_counter(
    "pullgate.security.refused", unit="{call}",
    description="Calls refused for who the caller is, by method and reason: no_identity (no client certificate "
                "identity), not_permitted (the policy does not grant the method), unauthenticated (no valid token), "
                "forbidden (a valid token asking for what it may not do), not_found (another customer's data)",
)

_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("pullgate_caller", default=None)


def current_caller() -> Caller | None:
    """The token-authenticated caller of the request being handled; None where callers are not authenticated
    (an insecure server, a test's in-process gateway)."""
    return _CALLER.get()


def refused(method: str, reason: str) -> None:
    """Count one refusal (`method` is the full path, `/pkg.Service/Method`)."""
    REFUSED.add(1, {"rpc.method": method, "reason": reason})


def peer_identity(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The SPIFFE id of the verified client certificate; None over plaintext or without one. (grpc reports it only
    for a certificate with exactly one URI SAN, as SPIFFE requires.)"""
    for spiffe in context.auth_context().get("peer_spiffe_id", ()):
        return spiffe.decode(errors="replace")
    return None


def _is_open(path: str) -> bool:
    return path[1:].partition("/")[0] in OPEN_SERVICES


class PeerAuthorization(UnaryInterceptor):
    """Refuses a call whose certificate identity the policy does not grant the method: PERMISSION_DENIED."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def wrap(self, behavior: Behavior, details: grpc.HandlerCallDetails) -> Behavior:
        path = details.method
        policy = self.policy

        async def authorized(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            identity = peer_identity(context)
            span = trace.get_current_span()
            if span.is_recording():
                span.set_attribute(CALLER_ATTRIBUTE, identity or "(none)")
            if not policy.allows(identity, path):
                reason = "no_identity" if identity is None else "not_permitted"
                refused(path, reason)
                who = "a caller without a certificate identity" if identity is None else identity
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"{who} may not call {path[1:]} (policy {policy.source})")
            return await behavior(request, context)

        return authorized


class CallerAuthentication(UnaryInterceptor):
    """Requires a valid bearer token on every call but health and reflection: UNAUTHENTICATED otherwise. The
    admin service also needs the `operator` scope (PERMISSION_DENIED)."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    def wrap(self, behavior: Behavior, details: grpc.HandlerCallDetails) -> Behavior | None:
        path = details.method
        if _is_open(path):
            return None
        verifier = self.verifier
        admin = path[1:].partition("/")[0] == FAULT_SERVICE

        async def authenticated(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                caller = verifier.from_metadata(context.invocation_metadata())
            except Unauthenticated as error:
                refused(path, "unauthenticated")
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(error))
            span = trace.get_current_span()
            if span.is_recording():
                span.set_attribute(CALLER_ATTRIBUTE, caller.subject)
                span.set_attribute("enduser.id", caller.subject)
                span.set_attribute("enduser.scope", " ".join(sorted(caller.scopes)))
            if admin and OPERATOR_SCOPE not in caller.scopes:
                refused(path, "forbidden")
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"{caller.describe()} may not call {path[1:]}: it needs the "
                                    f"{OPERATOR_SCOPE!r} scope")
            token = _CALLER.set(caller)
            try:
                return await behavior(request, context)
            finally:
                _CALLER.reset(token)

        return authenticated


__all__ = ["CALLER_ATTRIBUTE", "OPERATOR_SCOPE", "REFUSED", "CallerAuthentication", "PeerAuthorization",
           "current_caller", "peer_identity", "refused"]

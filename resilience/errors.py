"""The layer's errors. grpc errors become these once, in the transport; servers turn them into status codes.

ResilienceError          code: grpc.StatusCode to answer with, downstream: which owner
"""

from __future__ import annotations

import grpc


class ResilienceError(Exception):
    """A call through the layer did not produce an answer."""

    def __init__(self, code: grpc.StatusCode, downstream: str, reason: str) -> None:
        super().__init__(f"{downstream}: {reason}")
        self.code = code
        self.downstream = downstream
        self.reason = reason

"""resilience: the client layer under every cross-service gRPC call (deadlines, retries, breakers, hedging, caches).

    customers = Downstream("customers", ["127.0.0.1:50051"], config.for_downstream("customers"))
    result = await customers.call(GET_CUSTOMER, GetCustomerRequest(customer_id="42"))
    result.value, result.provenance.source   # the response; LIVE, CACHED or STALE

See docs/resilience.md for the stack, each policy and its defaults, and the config keys.
"""

from resilience.clock import SYSTEM_CLOCK, Clock, SystemClock
from resilience.config import (
    BreakerConfig,
    BudgetConfig,
    BulkheadConfig,
    CacheConfig,
    ConfigError,
    DownstreamConfig,
    HedgingConfig,
    OutlierDetectionConfig,
    ResilienceConfig,
    RetryConfig,
    ThrottleConfig,
    TimeoutConfig,
)
from resilience.deadline import Deadline
from resilience.downstream import Downstream
from resilience.errors import (
    OVERLOADED_METADATA,
    BulkheadFull,
    CircuitOpen,
    DeadlineExceeded,
    LocalDeadline,
    Overloaded,
    ResilienceError,
    StatusError,
    Throttled,
)
from resilience.method import Idempotency, Method
from resilience.outcome import Outcome, classify
from resilience.result import Provenance, Result, Source
from resilience.server import DeadlineInterceptor

__all__ = [
    "OVERLOADED_METADATA",
    "SYSTEM_CLOCK",
    "BreakerConfig",
    "BudgetConfig",
    "BulkheadConfig",
    "BulkheadFull",
    "CacheConfig",
    "CircuitOpen",
    "Clock",
    "ConfigError",
    "Deadline",
    "DeadlineExceeded",
    "DeadlineInterceptor",
    "Downstream",
    "DownstreamConfig",
    "HedgingConfig",
    "Idempotency",
    "LocalDeadline",
    "Method",
    "Outcome",
    "OutlierDetectionConfig",
    "Overloaded",
    "Provenance",
    "ResilienceConfig",
    "ResilienceError",
    "Result",
    "RetryConfig",
    "Source",
    "StatusError",
    "SystemClock",
    "ThrottleConfig",
    "Throttled",
    "TimeoutConfig",
    "classify",
]

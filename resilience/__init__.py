"""resilience: the client layer under every cross-service gRPC call (deadlines, retries, breakers, hedging, caches).

    customers = Downstream("customers", ["127.0.0.1:50051"], config.for_downstream("customers"))
    result = await customers.call(GET_CUSTOMER, GetCustomerRequest(customer_id="42"))
    result.value, result.provenance.source   # the response; LIVE, CACHED or STALE

See docs/resilience.md for the stack, each policy and its defaults, and the config keys; docs/overload.md for the
server side under overload (admission control, criticality).
"""

from resilience import deadline
from resilience.admission import Admission, AdmissionConfig
from resilience.clock import SYSTEM_CLOCK, Clock, SystemClock
from resilience.config import (
    BalanceConfig,
    BreakerConfig,
    BudgetConfig,
    BulkheadConfig,
    CacheConfig,
    ConfigError,
    DiscoveryConfig,
    DownstreamConfig,
    HedgingConfig,
    OutlierDetectionConfig,
    ResilienceConfig,
    RetryConfig,
    ThrottleConfig,
    TimeoutConfig,
    read_toml,
)
from resilience.criticality import Criticality
from resilience.criticality import scope as criticality_scope
from resilience.deadline import Deadline
from resilience.discovery import DnsTarget, ResolutionError, Resolver
from resilience.downstream import Downstream
from resilience.durations import DurationError, Seconds, format_duration, parse_duration, parse_seconds
from resilience.errors import (
    OVERLOADED_METADATA,
    BulkheadFull,
    Cause,
    CircuitOpen,
    DeadlineExceeded,
    LocalDeadline,
    NoReplicas,
    Overloaded,
    ResilienceError,
    StatusError,
    Throttled,
)
from resilience.hedge import LOSER as HEDGE_LOSER
from resilience.hotpath import RPC_CLIENT_DURATION, Counter, Histogram, RpcDurations, Series
from resilience.method import Idempotency, Method
from resilience.outcome import Outcome, classify
from resilience.result import Provenance, Result, Source
from resilience.server import AdmissionInterceptor, Behavior, DeadlineInterceptor, HandlerMemo, UnaryInterceptor
from resilience.transport import INSECURE, ChannelFactory, InsecureChannels

__all__ = [
    "HEDGE_LOSER",
    "INSECURE",
    "OVERLOADED_METADATA",
    "RPC_CLIENT_DURATION",
    "SYSTEM_CLOCK",
    "Admission",
    "AdmissionConfig",
    "AdmissionInterceptor",
    "BalanceConfig",
    "Behavior",
    "BreakerConfig",
    "BudgetConfig",
    "BulkheadConfig",
    "BulkheadFull",
    "CacheConfig",
    "Cause",
    "ChannelFactory",
    "CircuitOpen",
    "Clock",
    "ConfigError",
    "Counter",
    "Criticality",
    "Deadline",
    "DeadlineExceeded",
    "DeadlineInterceptor",
    "DiscoveryConfig",
    "DnsTarget",
    "Downstream",
    "DownstreamConfig",
    "DurationError",
    "HandlerMemo",
    "HedgingConfig",
    "Histogram",
    "Idempotency",
    "InsecureChannels",
    "LocalDeadline",
    "Method",
    "NoReplicas",
    "Outcome",
    "OutlierDetectionConfig",
    "Overloaded",
    "Provenance",
    "ResilienceConfig",
    "ResilienceError",
    "ResolutionError",
    "Resolver",
    "Result",
    "RetryConfig",
    "RpcDurations",
    "Seconds",
    "Series",
    "Source",
    "StatusError",
    "SystemClock",
    "ThrottleConfig",
    "Throttled",
    "TimeoutConfig",
    "UnaryInterceptor",
    "classify",
    "criticality_scope",
    "deadline",
    "format_duration",
    "parse_duration",
    "parse_seconds",
    "read_toml",
]

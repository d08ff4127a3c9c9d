"""Fault injection for tests and chaos only: the `--faults` spec, its parser, the interceptor and the admin service.

Why here and not in a proxy: every pullgate server runs through `pullgate.serving`, so one interceptor gives
every owner and the gateway the same latency and errors on demand, with a seeded random source and an injected
clock so tests stay deterministic. The grammar is in `docs/faults.md`; in short:

    spec    := "" | clause (";" clause)*
    clause  := [target "="] fault ("," fault)*
    target  := service ["." Method]                 catalog, catalog.GetProduct; none means "this server"
    fault   := "delay:" duration ["@" percent]      500ms, 1.5s, 2s, 1m (1 ms resolution, at most 1 hour)
             | "error:" CODE ["@" percent]          a grpc.StatusCode name other than OK
             | "hang" ["@" percent]                 wait until the call is cancelled or its deadline passes
    percent := number "%"                           0% to 100%, up to 4 decimals; omitted means 100%

`duration` is the one duration grammar (`resilience.parse_duration`: a number with a unit ms, s, m or h, see
docs/resilience.md#durations); a delay is then whole milliseconds and at most an hour. Faults apply only to the
application services a server was given, never to health, reflection or the admin service. Every fault of
every clause that matches a call draws its own chance, in the order written: delays add up, a hang waits for
cancellation, the first error that fires aborts the call before the handler runs.

The modules: `spec` (the values), `grammar` (text to values), `injector` (chance, waiting, counts),
`interceptor` (where calls meet the injector), `admin` (the run-time FaultService). Import from here.
"""

from pullgate.faults.admin import FaultService
from pullgate.faults.grammar import parse_faults
from pullgate.faults.injector import FaultInjector, FaultStats
from pullgate.faults.interceptor import FaultInterceptor
from pullgate.faults.spec import Clause, Delay, Error, Fault, FaultSpec, FaultSpecError, Hang

__all__ = [
    "Clause",
    "Delay",
    "Error",
    "Fault",
    "FaultInjector",
    "FaultInterceptor",
    "FaultService",
    "FaultSpec",
    "FaultSpecError",
    "FaultStats",
    "Hang",
    "parse_faults",
]

"""The tools built on pullgate's runtime: the `pullgate` command, the launcher, the audit and the chaos runner.

Nothing below this package (serving, config, telemetry, faults, contracts, topology) imports from it.
"""

"""pullgate's runtime: the topology, the generated contracts, serving, config, errors, telemetry and faults.

Two floors. The runtime (this package's modules and `pullgate/<service>/v1`) is what every server runs on; the
tools (`pullgate.tools`: the CLI, the launcher, the audit, chaos) are built on it. No arrow points up: nothing in
the runtime imports a tool, `services/` or `gateway/`. Start reading at `pullgate/topology.py`.
"""

"""The edge: HAProxy in front of the gateway, refusing in C what the gateway's admission limit has no room for.

Why a proxy at all: a refusal made in Python waits for the event loop of the process it protects, and at 3x
capacity that loop is busy with every view in flight (docs/overload.md, "Why refusals need an edge"). HAProxy
answers the excess at once, from its own process, with the gateway's own trailers; the gateway keeps computing
the limit (resilience.admission) and pushes each change to HAProxy's runtime API (`pullgate.edge.control`).

    haproxy    the configuration `pullgate up` renders, and finding the binary
    control    the gateway's side: HAProxy's runtime API, and the task that keeps the edge's rooms current
"""

"""resilience: the client layer under every cross-service gRPC call (deadlines, retries, breakers, hedging, caches)."""

"""pullgate's benchmarks: `python -m benchmarks [resilience]` (or `./dev bench`). Not timed tests: figures to read."""

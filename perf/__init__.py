"""distrec's benchmarks (ships with the source tree, not the wheel): `python -m perf`."""

"""Benchmarks, run by hand: rl against podman and friends in one run (see README.md)."""

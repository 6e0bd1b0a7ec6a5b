"""Benchmarks: `make bench` runs every scenario, prints the figures and writes them to bench/results/."""

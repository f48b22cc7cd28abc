"""Benchmarks and the reliability soak: ``make bench`` runs them and writes ``bench/REPORT.md``."""

"""Benchmarks behind `pfadseg bench ...`: each prints its figure beside a comparison from the same run."""

"""Benchmark tooling: BFCL data loading and a faithful re-implementation of its AST scorer."""

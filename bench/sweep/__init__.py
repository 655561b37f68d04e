"""Sweeps: the grid of configurations, each run in a child process, and the max-batch search."""

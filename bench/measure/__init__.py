"""Measurement: step timing, statistics, memory (estimate and probes), energy, traces."""

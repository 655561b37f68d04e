"""Predictions of what a cluster would do, from measured rows: the scaling model (model), its
inputs found in rows (inputs), the command (cli: `cnnbench predict`), and the check of its
predictions against measured rows (validate)."""

"""cnnbench: the benchmark harness. Its layers, each a subpackage that imports only those below it:

    cli, bench/run.py, lab/     command lines and the experiments that are not the library
    sweep, report               grids of runs in child processes; tables, findings and pages from CSVs
    runner                      one run: `Session`, `execute`, cross-package validation
    backends                    the declared interface; tensorflow/ and jax/ implement it
    measure, data               timing, statistics, memory, traces; the input pipelines
    config, results             the option schema and parsing; the CSV schema, store and row builder
    data.sets                   the data sets: one module each, its declaration and numpy reader
    launch (top-level)          the strategies' framework-free specs
    models (top-level)          the Keras model zoo
    errors, procs               one-line errors and exit codes; child-process plumbing

tests/test_layers.py keeps the order, counting imports inside functions.
"""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

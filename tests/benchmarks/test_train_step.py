"""Step benchmarks (model x batch size x precision x mode), timed by pytest-benchmark: the
training step, or with --benchmark-modes inference the forward pass.

They run only under `pytest --benchmark`. Each one opens a harness session exactly as
bench/run.py does (same config, data path, model build and compiled step) and times
session.step, which fetches the loss, so each timed round is one synchronised step.
"""
from __future__ import annotations

import math
import time

import pytest


@pytest.fixture
def harness_session(request, model, batch_size, precision, backend, mode):
    import keras

    from bench.config.schema import RunConfig
    from bench.runner.session import open_session
    from bench.runner.validate import prepare

    opt = request.config.getoption
    cfg = RunConfig(model=model, batch_size=batch_size, precision=precision, backend=backend, mode=mode,
                    width=opt("--benchmark-width"), source="pytest", progress=False)
    session = open_session(prepare(cfg)).build()
    yield session
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()


def test_step(benchmark, request, harness_session, model, batch_size, precision, backend, mode):
    from bench.measure.timing import Timing

    s = harness_session
    opt = request.config.getoption
    losses: list[float] = []

    def step():
        loss, _ = s.step.run()
        losses.append(float(loss))  # the synchronisation point

    t0 = time.perf_counter()
    step()  # trace and compile: never timed by pytest-benchmark
    compile_s = time.perf_counter() - t0
    benchmark.group = model
    benchmark.extra_info.update(model=model, batch_size=batch_size, precision=precision, backend=backend, mode=mode,
                                width=s.cfg.width, global_batch=s.global_batch, params=s.desc.params,
                                gflops_per_image=s.desc.gflops, compile_s=compile_s)
    benchmark.pedantic(step, rounds=opt("--benchmark-rounds"), iterations=1,
                       warmup_rounds=opt("--benchmark-warmup-rounds"))

    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.data:  # absent under --benchmark-disable
        import dataclasses

        from bench.results.row import Outcome, build_row
        from bench.runner.aggregate import run_facts, session_measurements

        timing = Timing(compile_s=compile_s, step_times=list(stats.stats.data), losses=losses)
        cfg = dataclasses.replace(s.cfg, steps=len(stats.stats.data), warmup_steps=opt("--benchmark-warmup-rounds"))
        row = build_row(cfg, Outcome("ok"), facts=run_facts(s), measurements=session_measurements(s, timing))
        benchmark.extra_info.update(images_per_sec=row["images_per_sec_median"], tflops=row["tflops"],
                                    images_per_sec_mean=row["images_per_sec"])
        csv_path = opt("--benchmark-csv")
        if csv_path:
            from bench.results.store import append_row
            append_row(csv_path, row)

    # the result must be right, not only fast: finite; training lowers the loss on the one fixed
    # batch, and inference (BatchNorm frozen, weights untouched) gives the same outputs every time
    assert all(math.isfinite(x) for x in losses)
    assert len(losses) >= 4
    if mode == "train":
        assert min(losses[-3:]) < losses[0], f"loss did not fall: {losses[0]:.4f} -> {losses[-3:]}"
    else:
        assert max(losses) - min(losses) <= 1e-4 * max(1.0, abs(losses[0])), f"outputs changed: {losses}"

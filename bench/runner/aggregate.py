"""From each rank's own `Timing` to one plain `Measurements` value, through the distribution's
gather (a collective: every rank calls it, in step), and a session's plain facts for the row.
The row builder (bench.results.row) then only formats values."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from bench.measure.energy import combine, energy_columns, gather_values
from bench.measure.stats import (
    latency_columns,
    slowest_rank_per_step,
    step_stats,
    throughput,
)
from bench.measure.timing import Timing
from bench.results.row import Measurements, RunFacts

if TYPE_CHECKING:
    from bench.runner.session import Session

# FLOPs per image of a step, in forward passes: backward costs about two more (activations, weights);
# an input step runs no model
PASSES = {"train": 3.0, "inference": 1.0, "input": 0.0}
# bytes per gradient element: variables stay float32 under every --precision (Keras' mixed policies)
GRADIENT_BYTES = 4


def aggregate(timing: Timing, dist: Any, *, mode: str, global_batch: int, flops_per_image: float,
              accuracy_mode: bool = False) -> Measurements:
    """One value for every rank's timing: a synchronous step lasts as long as its slowest rank;
    compile time, data wait and peaks are the largest over ranks. Every rank must call this
    (`dist.gather` is a collective), each with its own timing."""
    per_rank = dist.gather(timing.step_times)
    slowest = slowest_rank_per_step(per_rank)
    stats = step_stats(slowest)
    # one gather for the scalars, NaN where a rank has none (then none has: the same code ran everywhere)
    mean_wait = sum(timing.data_waits) / len(timing.data_waits) if timing.data_waits else float("nan")
    scalars = [timing.compile_s, mean_wait, _or_nan(timing.peak_mem_bytes), _or_nan(timing.process_peak_mem_bytes),
               _or_nan(timing.net_tx_bytes), _or_nan(timing.net_rx_bytes)]
    # the energy readings ride in the same gather: each host's devices once, hosts summed
    gathered = dist.gather(scalars + gather_values(timing.energy))
    compile_s, wait_s, peak, process_peak, tx, rx = (float(v) for v in gathered[:, :len(scalars)].max(axis=0))
    energy = energy_columns(combine(gathered[:, len(scalars):]), timing.timed_run, global_batch)
    return Measurements(
        compile_s=compile_s,
        steps={**stats.as_dict(),
               **throughput(stats, global_batch=global_batch, replicas=dist.num_replicas,
                            flops_per_image=flops_per_image, passes=PASSES[mode]),
               **latency_columns(slowest, global_batch)},
        rank_step_time_means_s=tuple(float(m) for m in per_rank.mean(axis=1)),
        final_loss=timing.losses[-1] if timing.losses and mode == "train" else None,
        train_accuracy=timing.correct / timing.images if timing.images and accuracy_mode else None,
        data_wait_ms=1000.0 * wait_s if timing.data_waits else None,
        comm=dict(timing.comm),
        peak_mem_bytes=int(peak) if timing.peak_mem_bytes is not None else None,
        mem_source=timing.mem_source,
        process_peak_mem_bytes=int(process_peak) if timing.process_peak_mem_bytes is not None else None,
        net_tx_bytes=int(tx) if timing.net_tx_bytes is not None else None,
        net_rx_bytes=int(rx) if timing.net_rx_bytes is not None else None,
        warmup_dropped=timing.warmup_dropped, warmup_rule=timing.warmup_rule, target_met=timing.target_met,
        energy=energy)


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def session_measurements(session: "Session", timing: Timing) -> Measurements:
    """`aggregate` for a session's run (every rank calls it)."""
    cfg = session.cfg
    flops = session.desc.flops if session.desc is not None else math.nan  # --mode input: no model
    return aggregate(timing, session.dist, mode=cfg.mode, global_batch=session.global_batch,
                     flops_per_image=flops, accuracy_mode=cfg.accuracy_mode)


def run_facts(session: "Session") -> RunFacts:
    """What a started session knows about itself, for its row: no collective."""
    desc, est = session.desc, session.estimate
    return RunFacts(topology=session.topology, gpu_names=tuple(session.gpu_names),
                    backend_provenance=session.backend.provenance(session.gpu_names),
                    init_weights_sha256=session.init_weights_sha256,
                    params=desc.params if desc is not None else None,
                    gflops_per_image=desc.gflops if desc is not None else None,
                    gradient_bytes=GRADIENT_BYTES * desc.trainable_params
                    if desc is not None and session.cfg.mode == "train" else None,
                    mem_estimate_bytes=est.total_bytes if est is not None else None,
                    trace_dir=session.trace_dir,
                    placement=session.placement)

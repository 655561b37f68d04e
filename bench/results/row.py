"""The one row builder: a pure function from a configuration, an outcome and what was measured to a row."""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from bench.config.schema import RunConfig
from bench.measure.stats import (
    latency_columns,
    slowest_rank_per_step,
    step_stats,
    throughput,
)
from bench.results.columns import CONFIG, STATUSES
from bench.results.provenance import provenance

# ---- the one row builder ------------------------------------------------------------------------
# FLOPs per image of a step, in forward passes: backward costs about two more (activations, weights)
PASSES = {"train": 3.0, "inference": 1.0}


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a run ended: a status from STATUSES and, unless ok, what went wrong."""
    status: str
    error: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")


@dataclasses.dataclass(frozen=True)
class Topology:
    workers: int
    replicas: int
    per_replica_batch: int | None
    global_batch: int | None


@dataclasses.dataclass
class AccuracyResult:
    """What accuracy mode measured, epoch by epoch."""
    top1: float = math.nan
    top5: float = math.nan
    epochs_run: int = 0
    top1_by_epoch: list[float] = dataclasses.field(default_factory=list)
    epoch_end_s: list[float] = dataclasses.field(default_factory=list)
    target_reached: bool | None = None
    time_to_target_s: float | None = None

    def columns(self) -> dict[str, Any]:
        return {"top1": self.top1, "top5": self.top5, "epochs_run": self.epochs_run,
                "top1_by_epoch": ";".join(f"{x:.6g}" for x in self.top1_by_epoch),
                "epoch_end_s": ";".join(f"{x:.6g}" for x in self.epoch_end_s),
                "target_reached": self.target_reached, "time_to_target_s": self.time_to_target_s}


def build_row(cfg: "RunConfig", outcome: Outcome, *, session: Any = None, topology: Topology | None = None,
              timing: Any = None, accuracy: AccuracyResult | None = None, gpu_names: Iterable[str] = (),
              wall_s: float | None = None) -> dict[str, Any]:
    """The one way a result row is made: the CLI, the sweep's fallback row and the pytest
    benchmark all call this.

    `session` (bench.runner.session.Session) gives the topology, the model's size and the GPUs; without
    one (a run that never started), pass `topology` where it is known. `timing`
    (bench.measure.timing.Timing) is gathered over every rank through the session's distribution, so
    with a timing every rank must call this."""

    if session is not None:
        topology, gpu_names = session.topology, session.gpu_names
    row: dict[str, Any] = provenance(gpu_names, source=cfg.source, run_id=cfg.run_id, backend=cfg.backend)
    if session is not None:
        row.update(session.backend.provenance(session.gpu_names))
    if session is not None and session.init_weights_sha256:  # taken when the file was read, not now
        row["init_weights_sha256"] = session.init_weights_sha256
    row.update({k: getattr(cfg, k) for k in CONFIG})
    if topology is not None:
        row.update(dataclasses.asdict(topology))
    if session is not None and session.desc is not None:
        row.update(params=session.desc.params, gflops_per_image=session.desc.gflops)
    if session is not None and session.estimate is not None:
        row["mem_estimate_bytes"] = session.estimate.total_bytes
    if session is not None and session.trace_dir is not None:
        row["trace_dir"] = session.trace_dir
    if timing is not None and session is not None:
        dist = session.dist
        per_rank = dist.gather(timing.step_times)
        slowest = slowest_rank_per_step(per_rank)
        stats = step_stats(slowest)
        row.update(compile_s=float(dist.gather([timing.compile_s]).max()), **stats.as_dict(),
                   rank_step_time_means_s=";".join(f"{m:.6g}" for m in per_rank.mean(axis=1)),
                   **throughput(stats, global_batch=session.global_batch, replicas=dist.num_replicas,
                                flops_per_image=session.desc.flops, passes=PASSES[cfg.mode]),
                   **latency_columns(slowest, session.global_batch),
                   final_loss=timing.losses[-1] if timing.losses and cfg.mode == "train" else None,
                   train_accuracy=(timing.correct / timing.images
                                   if timing.images and accuracy is not None else None))
        if timing.data_waits:  # the rank that waited longest, on average per step
            row["data_wait_ms"] = 1000.0 * float(dist.gather([sum(timing.data_waits) / len(timing.data_waits)]).max())
        row.update(timing.comm)
        if timing.peak_mem_bytes is not None:  # the largest over ranks
            row.update(peak_mem_bytes=int(dist.gather([timing.peak_mem_bytes]).max()), mem_source=timing.mem_source)
        if timing.process_peak_mem_bytes is not None:
            row["process_peak_mem_bytes"] = int(dist.gather([timing.process_peak_mem_bytes]).max())
    if accuracy is not None:
        row.update(accuracy.columns())
    row.update(status=outcome.status, error=outcome.error, wall_s=wall_s)
    return row

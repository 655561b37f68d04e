"""The one row builder: a pure function from a configuration, an outcome and plain values (what
the run knew about itself, what it measured across its ranks) to a row. No collective and no
framework here: the run layer aggregates the ranks first (bench.runner.aggregate)."""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:
    from bench.config.schema import RunConfig
from bench.errors import Status
from bench.results.columns import CONFIG, REPEAT
from bench.results.provenance import provenance


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a run ended: a status and, unless ok, what went wrong."""
    status: Status
    error: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))  # ValueError for a status no run has


@dataclasses.dataclass(frozen=True)
class Topology:
    workers: int
    replicas: int
    per_replica_batch: int | None
    global_batch: int | None


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a run's replicas ran: how many hosts the job spans, the link between them (None:
    unshaped or unknown), and the CPU cores each replica had (None on GPUs), which says whether
    replicas shared cores: a scaling figure whose replicas shared them measures contention, not
    communication."""
    hosts: int = 1
    link_gbps: float | None = None
    cores_per_replica: float | None = None
    transport: str = ""  # Horovod's: mpi or gloo (the adapter's `transport`)


@dataclasses.dataclass(frozen=True)
class RunFacts:
    """What a started run knows about itself, beside its configuration (bench.runner.aggregate.run_facts)."""
    topology: Topology
    gpu_names: tuple[str, ...] = ()
    backend_provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # versions, device kind
    init_weights_sha256: str | None = None  # of --init-weights as it was read, not now
    params: int | None = None
    gflops_per_image: float | None = None
    gradient_bytes: int | None = None  # what one training step all-reduces (fp32 trainable weights)
    mem_estimate_bytes: int | None = None
    trace_dir: str | None = None
    placement: Placement | None = None


@dataclasses.dataclass(frozen=True)
class Measurements:
    """What the timed steps measured, one value across every rank (bench.runner.aggregate):
    the step-time columns are those of the slowest rank per step, the others the largest over
    ranks unless named otherwise."""
    compile_s: float
    steps: Mapping[str, float]                 # step-time statistics, throughput and latency columns
    rank_step_time_means_s: tuple[float, ...]  # each rank's own mean step time
    final_loss: float | None = None            # training: the last timed step's, on this rank
    train_accuracy: float | None = None        # accuracy mode: over the timed training steps, on this rank
    data_wait_ms: float | None = None          # mean wait for a batch per step, of the rank that waited longest
    comm: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the chief's timeline and autotuner columns
    peak_mem_bytes: int | None = None
    mem_source: str = ""
    process_peak_mem_bytes: int | None = None
    net_tx_bytes: int | None = None            # the host's interface bytes over the timed steps, the largest over ranks
    net_rx_bytes: int | None = None
    warmup_dropped: int | None = None          # steps after the compile step left out as warmup
    warmup_rule: str = ""                      # what set them: fixed, mser5, mser5-max
    target_met: bool | None = None             # with --target-ci: whether the median's CI got that tight
    energy: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the job's (bench.measure.energy)

    def columns(self) -> dict[str, Any]:
        out: dict[str, Any] = {"compile_s": self.compile_s, "warmup_dropped": self.warmup_dropped,
                               "warmup_rule": self.warmup_rule, "target_met": self.target_met, **self.steps,
                               "rank_step_time_means_s": ";".join(f"{m:.6g}" for m in self.rank_step_time_means_s),
                               "final_loss": self.final_loss, "train_accuracy": self.train_accuracy}
        if self.data_wait_ms is not None:
            out["data_wait_ms"] = self.data_wait_ms
        out.update(self.comm)
        if self.peak_mem_bytes is not None:
            out.update(peak_mem_bytes=self.peak_mem_bytes, mem_source=self.mem_source)
        if self.process_peak_mem_bytes is not None:
            out["process_peak_mem_bytes"] = self.process_peak_mem_bytes
        if self.net_tx_bytes is not None:
            out.update(net_tx_bytes=self.net_tx_bytes, net_rx_bytes=self.net_rx_bytes)
        out.update(self.energy)
        return out


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


def build_row(cfg: "RunConfig", outcome: Outcome, *, facts: RunFacts | None = None, topology: Topology | None = None,
              measurements: Measurements | None = None, accuracy: AccuracyResult | None = None,
              gpu_names: Iterable[str] = (), wall_s: float | None = None) -> dict[str, Any]:
    """The one way a result row is made: the CLI, the sweep's fallback row and the pytest
    benchmark all call this.

    `facts` (a started run's: bench.runner.aggregate.run_facts) give the topology, the GPUs,
    the backend's versions and the model's size; without them (a run that never started), pass
    the `topology` and `gpu_names` where they are known."""
    if facts is not None:
        topology, gpu_names = facts.topology, facts.gpu_names
    row: dict[str, Any] = provenance(gpu_names, source=cfg.source, run_id=cfg.run_id, backend=cfg.backend)
    if facts is not None:
        row.update(facts.backend_provenance)
        if facts.init_weights_sha256:
            row["init_weights_sha256"] = facts.init_weights_sha256
    row.update({k: getattr(cfg, k) for k in (*CONFIG, *REPEAT)})
    if topology is not None:
        row.update(dataclasses.asdict(topology))
    if facts is not None:
        if facts.params is not None:
            row.update(params=facts.params, gflops_per_image=facts.gflops_per_image)
        if facts.gradient_bytes is not None:
            row["gradient_bytes"] = facts.gradient_bytes
        if facts.mem_estimate_bytes is not None:
            row["mem_estimate_bytes"] = facts.mem_estimate_bytes
        if facts.trace_dir is not None:
            row["trace_dir"] = facts.trace_dir
        if facts.placement is not None:
            row.update(dataclasses.asdict(facts.placement))
    if measurements is not None:
        row.update(measurements.columns())
    if accuracy is not None:
        row.update(accuracy.columns())
    row.update(status=outcome.status.value, error=outcome.error, wall_s=wall_s)
    return row
